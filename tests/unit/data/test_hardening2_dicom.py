"""Deflated DICOM uploads: inflated streamed, under a hard cap, with bounded memory, before anything else.

A Deflated DICOM body can inflate a thousand-fold. The serving pre-check used to hand the
raw upload to pydicom, which inflates the whole body before reading a single header
field: a 1 MiB upload took a classifier replica up by 2 GiB and still answered 413, so
it looked handled. These tests measure Python's peak allocations (tracemalloc sees
zlib's and pydicom's buffers and numpy arrays) in-process, where the replica's code runs.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers.data import dicom_bytes
from helpers.hostile import DEFLATED, MIB, deflated_bomb

from busgen.data.dicom import decode_dicom
from busgen.data.imageio import ImageDecodeError
from busgen.serve.config import LimitArgs
from busgen.serve.errors import RequestError
from busgen.serve.guards import decode_upload


def peak_bytes(fn) -> tuple[int, BaseException | None]:
    """Peak traced allocation while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as exc:  # noqa: BLE001 -- returned to the test, which checks it
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_a_deflate_bomb_upload_is_refused_with_413_in_a_few_mib(tmp_path):
    bomb = deflated_bomb(128)
    assert len(bomb) < MIB // 2, "128 MiB of zeros deflate to a few hundred KiB: well under the body limit"
    limits = LimitArgs()
    peak, raised = peak_bytes(lambda: decode_upload(bomb, "scan.dcm", limits))
    assert isinstance(raised, RequestError) and raised.status_code == 413, raised
    assert "inflates beyond 64.0 MiB" in raised.detail
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB while refusing a {len(bomb) / MIB:.2f} MiB upload"


def test_the_ingest_decoder_refuses_a_bomb_without_holding_its_output():
    bomb = deflated_bomb(96)
    peak, raised = peak_bytes(lambda: decode_dicom(bomb, max_decoded_bytes=32 * MIB))
    assert isinstance(raised, ImageDecodeError) and "inflates beyond 32.0 MiB" in str(raised)
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_body_just_under_the_cap_costs_at_most_twice_its_inflated_size():
    """The documented bound (docs/security.md): the inflated body once, plus pydicom's copy of PixelData."""
    bomb = deflated_bomb(48)
    peak, raised = peak_bytes(lambda: decode_dicom(bomb, max_decoded_bytes=64 * MIB))
    assert raised is None
    assert peak < 2 * 48 * MIB + 8 * MIB, f"peak {peak / MIB:.1f} MiB for a body inflating to 48 MiB"


@pytest.mark.parametrize("cap_mib", [1, 4])
def test_serving_limits_set_the_dicom_cap(cap_mib):
    data = dicom_bytes(np.zeros((1024, 1024), np.uint16), transfer_syntax=DEFLATED)  # inflates to 2 MiB
    limits = LimitArgs(max_decoded_mb=cap_mib)
    if cap_mib < 2:
        with pytest.raises(RequestError, match="inflates beyond 1.0 MiB") as err:
            decode_upload(data, "a.dcm", limits)
        assert err.value.status_code == 413
    else:
        assert decode_upload(data, "a.dcm", limits).shape == (1024, 1024)
