"""abflow: turn a night of DFOS Association Blocks into a Snakemake calibration cascade."""

__version__ = "0.1.0"
