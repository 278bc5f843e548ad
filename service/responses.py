"""Plain functions that turn model outputs into the API's response (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from slicewise.core.contracts import Manifest


class RequestError(ValueError):
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


def check_feedback_label(label: Any, labels: list[str]) -> str:
    """The feedback label, if it is one of the model's labels."""
    if not isinstance(label, str) or label not in labels:
        raise RequestError(f"unknown label {label!r}; expected one of {labels}")
    return label
