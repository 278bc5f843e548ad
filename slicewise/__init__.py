"""slicewise: slice-aware text classification, served and monitored per slice.

The `slicewise` package holds what every part shares: the contracts (artifact bundle,
prediction log, metric names) and the `slicewise` command line.
"""

__version__ = "0.1.0"
