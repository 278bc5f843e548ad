"""Plain functions that turn model outputs into the API's response (docs/design.md §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slicewise.core.contracts import Manifest


@dataclass(frozen=True)
class Batch:
    """One model call's outputs with its decisions: the label per text and the active slices."""

    labels: list[str]
    slice_names: list[str]
    probabilities: np.ndarray  # (texts, labels)
    scores: np.ndarray  # learned slice scores (texts, slices)
    membership: np.ndarray  # exact 0/1 for rule slices, the learned score otherwise
    active: np.ndarray  # membership at or above the slice's cut
    best: np.ndarray  # label index per text

    @property
    def confidence(self) -> np.ndarray:
        """The probability of each text's label, as the response gives it."""
        return self.rounded(self.probabilities[np.arange(len(self.best)), self.best])

    @staticmethod
    def rounded(values: np.ndarray) -> np.ndarray:
        """`values` as the response gives them: float64, 6 decimals."""
        return np.round(values.astype(np.float64), 6)


def decide(
    outputs: dict[str, np.ndarray], manifest: Manifest, cuts: np.ndarray | None = None
) -> Batch:
    """The `Batch` of `outputs`: `outputs["slices"]` is the membership (when absent, the learned
    `slice_membership`); a slice is active when its membership is at or above its cut (`cuts`,
    default: the manifest's thresholds).
    """
    probs = outputs["probabilities"]
    scores = outputs["slice_membership"]
    member = outputs.get("slices", scores)
    names = manifest.slice_names
    if cuts is None:
        cuts = np.array([manifest.thresholds[n] for n in names], dtype=np.float32)
    return Batch(
        manifest.labels, names, probs, scores, member, member >= cuts[None, :], probs.argmax(axis=1)
    )


def predictions(batch: Batch) -> list[dict[str, Any]]:
    """Label, confidence, probabilities, slice membership, learned slice scores and active
    slices per text (no ids), rounded as `Batch.rounded` rounds them.
    """
    labels, names = batch.labels, batch.slice_names
    probs = batch.rounded(batch.probabilities).tolist()
    member = batch.rounded(batch.membership).tolist()
    scores = batch.rounded(batch.scores).tolist()
    out = []
    for i, best in enumerate(batch.best.tolist()):
        out.append(
            {
                "label": labels[best],
                "confidence": probs[i][best],
                "probabilities": dict(zip(labels, probs[i], strict=True)),
                "slices": dict(zip(names, member[i], strict=True)),
                "slice_scores": dict(zip(names, scores[i], strict=True)),
                "active_slices": [n for j, n in enumerate(names) if batch.active[i, j]],
            }
        )
    return out
