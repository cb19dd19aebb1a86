"""lsbench: what label smoothing does to a classifier's accuracy and overconfidence."""

# The one place the version is written: pyproject.toml reads it, the CHANGELOG's newest release and
# provenance.parquet match it (tests/test_version.py).
__version__ = "0.4.0"
