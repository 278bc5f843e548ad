"""Per-slice accuracy: measured from feedback labels, and estimated without labels.

The estimate follows the idea of NannyML's CBPE: calibrate the model's confidence on the
reference profile (where true labels are known) with isotonic regression, then the expected
accuracy of a slice in production is the mean calibrated confidence of its rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from monitoring.drift import slice_masks
from slicewise.core import contracts as c


class ConfidenceCalibrator:
    """Isotonic map from confidence to P(prediction is correct), fitted on the reference."""

    def __init__(self, reference: pd.DataFrame) -> None:
        correct = (reference[c.PREDICTED_LABEL_COLUMN] == reference[c.TRUE_LABEL_COLUMN]).to_numpy(
            float
        )
        self.iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        self.iso.fit(reference[c.CONFIDENCE_COLUMN].to_numpy(float), correct)

    def expected_correct(self, confidence: np.ndarray) -> np.ndarray:
        """Calibrated probability that each prediction is right."""
        return self.iso.predict(np.asarray(confidence, dtype=float))


def reference_accuracy(reference: pd.DataFrame, manifest: c.Manifest) -> dict[str, float]:
    """Accuracy per slice on the reference profile (slices by predicted membership)."""
    correct = (reference[c.PREDICTED_LABEL_COLUMN] == reference[c.TRUE_LABEL_COLUMN]).to_numpy()
    return {
        name: float(correct[m].mean())
        for name, m in slice_masks(reference, manifest).items()
        if m.any()
    }


def estimated_accuracy(
    current: pd.DataFrame, manifest: c.Manifest, calibrator: ConfidenceCalibrator, min_rows: int = 1
) -> dict[str, float]:
    """Label-free accuracy estimate per slice of the current window."""
    if current.empty:
        return {}
    expected = calibrator.expected_correct(current[c.CONFIDENCE_COLUMN].to_numpy())
    return {
        name: float(expected[m].mean())
        for name, m in slice_masks(current, manifest).items()
        if m.sum() >= min_rows
    }


def feedback_accuracy(
    current: pd.DataFrame, feedback: pd.DataFrame, manifest: c.Manifest, min_rows: int = 1
) -> dict[str, float]:
    """Accuracy per slice over the window's predictions that received a feedback label."""
    if current.empty or feedback.empty:
        return {}
    labelled = current[current["id"].isin(feedback["id"])]  # a hash probe, not a 1M-row join
    joined = labelled.merge(feedback.rename(columns={"label": "true"}), on="id", how="inner")
    if joined.empty:
        return {}
    correct = (joined[c.PREDICTED_LABEL_COLUMN] == joined["true"]).to_numpy()
    return {
        name: float(correct[m].mean())
        for name, m in slice_masks(joined, manifest).items()
        if m.sum() >= min_rows
    }
