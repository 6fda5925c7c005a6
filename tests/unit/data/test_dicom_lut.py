"""DICOM grayscale values go through pydicom's Modality and VOI LUT functions.

``busgen.data.dicom`` applies ``apply_modality_lut`` (rescale slope/intercept) and
``apply_voi_lut`` (window centre/width) to a table of stored values instead of its own
rescale code. On files without a window the output must equal the previous decoder
(min-max of the stored frame, inverted for MONOCHROME1 or a negative slope), except 8-bit frames whose
values stay in 0..255: those are kept as stored (the same pixels as a PNG); with a
window it must equal pydicom applied to the whole frame; the bounds and the quarantine
of unusable values stay.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from helpers.data import dicom_bytes
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from busgen.data.dicom import decode_dicom
from busgen.data.imageio import ImageDecodeError, scale_to_uint8

RNG = np.random.default_rng(7)
FRAMES = {
    "uint8 ramp": np.tile(np.arange(40, 200, 2, dtype=np.uint8), (24, 1)),
    "uint16 12-bit": RNG.integers(0, 4096, (48, 64)).astype(np.uint16),
    "uint16 narrow": RNG.integers(1000, 1300, (32, 32)).astype(np.uint16),
}


def dicom_with(arr: np.ndarray, signed: bool = False, **tags) -> bytes:
    """``dicom_bytes(arr)`` (the ingest tests' builder) with extra header tags set; signed pixels if asked."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(arr.view(f"u{arr.dtype.itemsize}"))))
    if signed:
        ds.PixelRepresentation = 1
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def previous_decoder(data: bytes) -> np.ndarray:
    """The decoder before pydicom's LUTs, restated: min-max of the stored frame, inverted by
    MONOCHROME1 xor a negative slope (the intercept is moot under min-max)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    out = scale_to_uint8(pixel_array(ds, index=0))
    invert = (ds.PhotometricInterpretation == "MONOCHROME1") ^ (float(ds.get("RescaleSlope", 1)) < 0)
    return 255 - out if invert else out


def pydicom_whole_frame(data: bytes) -> np.ndarray:
    """pydicom's transforms on the whole frame in float64, then min-max to uint8 (the reference for windows)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values = apply_voi_lut(apply_modality_lut(pixel_array(ds, index=0), ds), ds).astype(np.float64)
    lo, hi = values.min(), values.max()
    out = np.floor((values - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


HEADERS = {
    "no rescale": {},
    "slope 2 (no intercept)": {"RescaleSlope": "2"},
    "slope 0.5 intercept -1024": {"RescaleSlope": "0.5", "RescaleIntercept": "-1024"},
    "intercept only": {"RescaleIntercept": "100"},
    "MONOCHROME1": {"PhotometricInterpretation": "MONOCHROME1"},
    "MONOCHROME1 slope 4": {"PhotometricInterpretation": "MONOCHROME1", "RescaleSlope": "4", "RescaleIntercept": "7"},
}


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("frame", FRAMES)
def test_without_a_window_the_output_equals_the_previous_decoder(frame, header):
    data = dicom_with(FRAMES[frame], **HEADERS[header])
    if FRAMES[frame].dtype == np.uint8 and header in ("no rescale", "MONOCHROME1"):
        pytest.skip("8-bit values already in 0..255 are kept, not stretched: see the test below")
    np.testing.assert_array_equal(decode_dicom(data), previous_decoder(data))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_an_8_bit_frame_is_not_stretched_the_same_pixels_as_a_png(photometric):
    """Issue 31: the same pixels scored 0.832 as PNG and 0.800 as DICOM, because 8-bit frames were min-max stretched."""
    from PIL import Image

    from busgen.data.imageio import decode_image

    frame = FRAMES["uint8 ramp"]  # 40..198: a stretch would move every value
    png = io.BytesIO()
    Image.fromarray(frame).save(png, format="PNG")
    decoded = decode_dicom(dicom_with(frame, PhotometricInterpretation=photometric))
    expected = decode_image(png.getvalue()) if photometric == "MONOCHROME2" else 255 - frame
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("frame", FRAMES)
def test_a_negative_slope_inverts_as_before_up_to_rounding_at_exact_halves(frame):
    data = dicom_with(FRAMES[frame], RescaleSlope="-1", RescaleIntercept="0")
    diff = np.abs(decode_dicom(data).astype(int) - previous_decoder(data).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.4  # 255 - round(x) vs round(255 - x) differ only at .5


def test_signed_frames_are_read_as_twos_complement():
    frame = RNG.integers(-2000, 2000, (40, 40)).astype(np.int16)
    data = dicom_with(frame, signed=True, RescaleSlope="1", RescaleIntercept="-1024")
    out = decode_dicom(data)
    np.testing.assert_array_equal(out, previous_decoder(data))
    assert out[frame == frame.min()].max() == 0 and out[frame == frame.max()].min() == 255


@pytest.mark.parametrize(
    "tags",
    [
        {"WindowCenter": "2048", "WindowWidth": "1024"},  # a window inside the data: both ends saturate
        {"WindowCenter": "1500", "WindowWidth": "4000", "RescaleSlope": "2", "RescaleIntercept": "-500"},
        {"WindowCenter": ["2000", "1000"], "WindowWidth": ["800", "300"]},  # several windows: the first one
        {"WindowCenter": "2048", "WindowWidth": "1000", "VOILUTFunction": "SIGMOID"},
        {"WindowCenter": "2048", "WindowWidth": "1000", "PhotometricInterpretation": "MONOCHROME1"},
    ],
)
def test_a_window_is_applied_as_pydicom_applies_it_to_the_whole_frame(tags):
    data = dicom_with(FRAMES["uint16 12-bit"], **tags)
    out, reference = decode_dicom(data), pydicom_whole_frame(data)
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1  # float32 table vs float64 frame
    assert (out != previous_decoder(data)).any(), "the window must change the picture"


def test_a_narrow_window_saturates_values_outside_it():
    frame = FRAMES["uint16 12-bit"]
    out = decode_dicom(dicom_with(frame, WindowCenter="2048", WindowWidth="512"))
    assert (out[frame <= 1700] == 0).all() and (out[frame >= 2400] == 255).all()


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"RescaleSlope": "0"}, "RescaleSlope is 0"),
        ({"WindowCenter": "100", "WindowWidth": "0"}, "value transform failed.*Window Width"),
        ({"WindowCenter": "100", "WindowWidth": "50", "VOILUTFunction": "CUBIC"}, "VOI LUT Function"),
    ],
)
def test_unusable_value_transforms_are_decode_errors_naming_the_tag(tags, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_dicom(dicom_with(FRAMES["uint8 ramp"], **tags))


def test_bad_slopes_are_still_refused_before_pydicom_sees_them():
    ramp = FRAMES["uint8 ramp"]
    with pytest.raises(ImageDecodeError, match="RescaleSlope .* not a number"):
        decode_dicom(dicom_bytes(ramp, slope="abc"))
    with pytest.raises(ImageDecodeError, match="RescaleSlope has 2 values"):
        decode_dicom(dicom_bytes(ramp, slope="1\\2"))


def test_windowed_16_bit_frames_still_decode_without_float_frame_copies():
    import tracemalloc

    frame = RNG.integers(0, 4096, (2048, 2048)).astype(np.uint16)  # 8 MiB; a float64 copy would be 32 MiB
    data = dicom_with(frame, RescaleSlope="2", RescaleIntercept="-10", WindowCenter="4000", WindowWidth="6000")
    tracemalloc.start()
    try:
        out = decode_dicom(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * frame.nbytes
    assert out.dtype == np.uint8 and out.shape == frame.shape
