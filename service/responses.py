"""Plain functions that turn model outputs into the API's response (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from slicewise.core.contracts import Manifest
from slicewise.core.errors import SlicewiseError


class RequestError(SlicewiseError, ValueError):
    """A request the service refuses; the message names the problem (sent as a 4xx)."""


def validate_texts(texts: Any, max_texts: int, max_chars: int) -> list[str]:
    """Check the `texts` field of a predict request.

    Raises:
        RequestError: for an empty list, too many texts, a non-string, an empty or too long text.
    """
    if not isinstance(texts, list):
        raise RequestError("`texts` must be a list of strings")
    if not texts:
        raise RequestError("`texts` is empty; send at least one text")
    if len(texts) > max_texts:
        raise RequestError(f"too many texts: {len(texts)} > {max_texts} per request")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(f"texts[{i}] is {type(t).__name__}, not a string")
        if not t.strip():
            raise RequestError(f"texts[{i}] is empty")
        if len(t) > max_chars:
            raise RequestError(f"texts[{i}] is too long: {len(t)} > {max_chars} characters")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f"texts[{i}] is not valid Unicode text (it holds a lone surrogate)"
            ) from None
    return texts


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


def check_feedback_label(label: Any, labels: list[str]) -> str:
    """The feedback label, if it is one of the model's labels."""
    if not isinstance(label, str) or label not in labels:
        raise RequestError(f"unknown label {label!r}; expected one of {labels}")
    return label
