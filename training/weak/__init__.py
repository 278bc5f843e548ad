"""Weak supervision (docs/design.md §10): labeling functions, a closed-form triplet label model, and
the Epoxy extension of LF votes through the frozen backbone's embedding space.
"""

from training.weak.epoxy import extend_votes, tune_thresholds
from training.weak.label_model import TripletLabelModel
from training.weak.labeling import ABSTAIN, LFError, apply_lfs, labeling_function, lf_analysis

__all__ = [
    "ABSTAIN",
    "LFError",
    "TripletLabelModel",
    "apply_lfs",
    "extend_votes",
    "labeling_function",
    "lf_analysis",
    "tune_thresholds",
]
