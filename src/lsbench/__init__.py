"""lsbench: what label smoothing does to a classifier's accuracy and overconfidence."""

__version__ = "0.1.0"
