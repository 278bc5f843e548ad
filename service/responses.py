"""Plain functions that turn model outputs into the API's response (docs/design.md §6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from slicewise.core.contracts import Manifest


def build_predictions(
    outputs: dict[str, np.ndarray], manifest: Manifest, cuts: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Label, confidence, probabilities, slice membership, learned slice scores and active
    slices per text (no ids).

    `outputs["slices"]` is the membership (exact 0/1 for rule slices, learned otherwise; when
    absent, the learned `slice_membership`); a slice is active when its membership is at or
    above its cut (`cuts`, default: the manifest's thresholds).
    """
    probs = outputs["probabilities"]
    scores = outputs["slice_membership"]
    member = outputs.get("slices", scores)
    names = manifest.slice_names
    if cuts is None:
        cuts = np.array([manifest.thresholds[n] for n in names], dtype=np.float32)
    active = member >= cuts[None, :]
    best = probs.argmax(axis=1)
    out = []
    for i in range(len(probs)):
        out.append(
            {
                "label": manifest.labels[int(best[i])],
                "confidence": round(float(probs[i, best[i]]), 6),
                "probabilities": {
                    lab: round(float(probs[i, k]), 6) for k, lab in enumerate(manifest.labels)
                },
                "slices": {n: round(float(member[i, j]), 6) for j, n in enumerate(names)},
                "slice_scores": {n: round(float(scores[i, j]), 6) for j, n in enumerate(names)},
                "active_slices": [n for j, n in enumerate(names) if active[i, j]],
            }
        )
    return out
