"""Training side of slicewise: data, slices, the slice-aware model, evaluation and export.

Heavy dependencies (torch, transformers) are imported inside the modules that need them, so
`training.config` and the CLI's `--help` stay fast.
"""
