"""Plain functions that turn model outputs into the API's response (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from slicewise.core.contracts import Manifest


def build_predictions(outputs: dict[str, np.ndarray], manifest: Manifest) -> list[dict[str, Any]]:
    """Label, confidence, probabilities, slice scores and active slices per text (no ids)."""
    probs = outputs["probabilities"]
    member = outputs["slice_membership"]
    thresholds = manifest.thresholds
    names = manifest.slice_names
    out = []
    for i in range(len(probs)):
        best = int(np.argmax(probs[i]))
        slices = {n: round(float(member[i, j]), 6) for j, n in enumerate(names)}
        out.append(
            {
                "label": manifest.labels[best],
                "confidence": round(float(probs[i, best]), 6),
                "probabilities": {
                    lab: round(float(probs[i, k]), 6) for k, lab in enumerate(manifest.labels)
                },
                "slices": slices,
                "active_slices": [n for n in names if slices[n] >= thresholds[n]],
            }
        )
    return out
