"""The data stage.

Ingest (folders, BUSI, CSV manifests, DICOM) into Parquet, the phantom simulator, bounded image
decoding, the pixel convention (`imageio`), datasets read back, combined sites and dataset reports.
"""
