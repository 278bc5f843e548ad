"""Checks of request fields that the schema cannot express; each error names the problem and
never echoes more than a few characters of the input.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from service.http_guard import clip
from slicewise.core.contracts import PREDICTION_ID_PATTERN
from slicewise.core.errors import SlicewiseError

# Characters that draw nothing although their Unicode category is a letter or a symbol.
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_PREDICTION_ID = re.compile(PREDICTION_ID_PATTERN)


class RequestError(SlicewiseError, ValueError):
    """A request the service refuses; the message names the problem (sent as a 4xx)."""


class Unavailable(SlicewiseError, RuntimeError):
    """The service cannot answer now (model not loaded, feedback store down, shutting down);
    sent as a 503 whose message names the cause.
    """


def is_visible(ch: str) -> bool:
    """Whether a character draws something: not whitespace, control, format (zero-width),
    separator, surrogate, private-use or unassigned, nor one of the blank-looking letters.
    """
    return unicodedata.category(ch)[0] not in "CZ" and ch not in BLANK_LOOKING


def has_visible_text(text: str) -> bool:
    """Whether `text` has at least one visible character."""
    return any(is_visible(ch) for ch in text)


def validate_texts(texts: Any, max_texts: int, max_chars: int) -> list[str]:
    """Check the `texts` field of a predict request.

    Raises:
        RequestError: for an empty list, too many texts, a non-string, a text without visible
            characters (empty, whitespace, zero-width or control characters only), a too long
            text, or one that is not valid Unicode.
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
        if len(t) > max_chars:
            raise RequestError(f"texts[{i}] is too long: {len(t)} > {max_chars} characters")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f"texts[{i}] is not valid Unicode text (it holds a lone surrogate)"
            ) from None
        if not has_visible_text(t):
            raise RequestError(f"texts[{i}] is empty (it has no visible characters)")
    return texts


def check_prediction_id(prediction_id: Any) -> str:
    """The id of a feedback request, if it has the form of a prediction id (checked before any
    lookup).
    """
    if not isinstance(prediction_id, str) or not _PREDICTION_ID.fullmatch(prediction_id):
        shown = clip(prediction_id, 40) if isinstance(prediction_id, str) else "not a string"
        raise RequestError(
            f"id {shown!r} is not a prediction id (32 lowercase hex characters, as /predict "
            "returns them)"
        )
    return prediction_id


def check_feedback_label(label: Any, labels: list[str]) -> str:
    """The feedback label, if it is one of the model's labels."""
    if not isinstance(label, str) or label not in labels:
        shown = clip(label, 40) if isinstance(label, str) else type(label).__name__
        raise RequestError(f"unknown label {shown!r}; expected one of {labels}")
    return label
