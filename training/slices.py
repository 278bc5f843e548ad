"""Slicing functions (SFs): `text -> bool`, declarative (config) or Python (decorator).

Declarative SFs (keywords, regex, word-count range) are applied with vectorised pandas string
operations; Python SFs run per text, and one that raises is reported with its name and the
text index. `slice_membership` returns the `[N, k]` membership matrix in config order.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from slicewise.core.errors import SlicewiseError
from training.config import ProjectConfig, SliceConfig

SliceFn = Callable[[str], bool]
_REGISTRY: dict[str, SliceFn] = {}


class SliceError(SlicewiseError, ValueError):
    """A slicing function is unknown, raises, or defines an empty slice."""


def slicing_function(
    name: str | None = None, description: str = ""
) -> Callable[[SliceFn], SliceFn]:
    """Register a Python slicing function under `name` (default: the function's name).

    Example:
        >>> @slicing_function(name="mentions_refund")
        ... def mentions_refund(text: str) -> bool:
        ...     return "refund" in text.lower()
        >>> mentions_refund("I want a REFUND")
        True
    """
    if callable(name):  # used as @slicing_function without parentheses
        raise SliceError(
            "use @slicing_function() with parentheses, e.g. @slicing_function(name='x')"
        )

    def register(fn: SliceFn) -> SliceFn:
        key = name or fn.__name__
        fn.__doc__ = fn.__doc__ or description
        _REGISTRY[key] = fn
        return fn

    return register


def resolve_function(
    ref: str, registry: dict[str, Callable] | None = None, kind: str = "slicing"
) -> Callable:
    """A registered function by name, or `package.module:function` imported on demand."""
    reg = _REGISTRY if registry is None else registry
    if ref in reg:
        return reg[ref]
    if ":" not in ref:
        known = ", ".join(sorted(reg)) or "none"
        raise SliceError(
            f"{kind} function {ref!r} is not registered (registered: {known}); use a registered "
            "name or `package.module:function`"
        )
    module, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SliceError(f"cannot import {kind} function {ref!r}: {exc}") from exc
    if not callable(fn):
        raise SliceError(f"{ref!r} is not callable")
    return fn


def import_plugins(cfg: ProjectConfig) -> None:
    """Import the config's `plugins` modules so their decorated functions register."""
    for module in cfg.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SliceError(f"cannot import plugin module {module!r}: {exc}") from exc


# English clitics that tokenisers split off the word they end ("do|n't", "it|'s"): as keywords
# they match at the end of a word, so they get no left word boundary.
_CLITIC = re.compile(r"^(n't|'(s|d|m|ll|re|ve))$", re.IGNORECASE)


def keyword_pattern(keywords: Sequence[str]) -> str:
    """Case-insensitive whole-word regex for a keyword list.

    Clitics such as "n't" match inside "don't" / "can't" (they end a word rather than start
    one), and an apostrophe also matches the typographic one ("don’t").
    """
    parts = []
    for kw in sorted(keywords, key=len, reverse=True):
        left = r"\b" if re.match(r"\w", kw) and not _CLITIC.match(kw) else ""
        right = r"\b" if re.search(r"\w$", kw) else ""
        body = "['’]".join(re.escape(piece) for piece in kw.split("'"))
        parts.append(f"{left}{body}{right}")
    return "(?i)(?:" + "|".join(parts) + ")"


def rule_mask(
    texts: pd.Series,
    rule: SliceConfig | object,
    registry: dict[str, Callable] | None = None,
    kind: str = "slicing",
) -> np.ndarray:
    """Boolean mask of the texts a declarative or Python rule fires on (vectorised when declarative)."""
    keywords = getattr(rule, "keywords", None)
    regex = getattr(rule, "regex", None)
    word_count = getattr(rule, "word_count", None)
    name = getattr(rule, "name", "?")
    if keywords:
        return texts.str.contains(keyword_pattern(keywords), regex=True).to_numpy(bool)
    if regex:
        with (
            warnings.catch_warnings()
        ):  # groups in a user's regex are fine: we only test for a match
            warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression")
            return texts.str.contains(regex, regex=True).to_numpy(bool)
    if word_count:
        n = texts.str.split().str.len().fillna(0)
        return ((n >= word_count.get("min", 0)) & (n <= word_count.get("max", 10**9))).to_numpy(
            bool
        )
    fn = resolve_function(getattr(rule, "function"), registry, kind)  # noqa: B009
    out = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        try:
            out[i] = bool(fn(text))
        except Exception as exc:
            raise SliceError(
                f"{kind} function {name!r} raised on text {i} ({text[:40]!r}): {exc!r}"
            ) from exc
    return out


def slice_membership(texts: Sequence[str] | pd.Series, cfg: ProjectConfig) -> np.ndarray:
    """The `[N, k]` boolean membership matrix, columns in `cfg.slice_names` order."""
    import_plugins(cfg)
    series = pd.Series(list(texts), dtype=object).astype(str)
    if not cfg.slices:
        return np.zeros((len(series), 0), dtype=bool)
    return np.stack([rule_mask(series, s) for s in cfg.slices], axis=1)


def slice_counts(membership: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """Members per slice."""
    return {n: int(c) for n, c in zip(names, membership.sum(axis=0), strict=True)}


def require_members(membership: np.ndarray, names: Sequence[str], where: str) -> None:
    """Raise `SliceError` for a slice with no members in `where` (e.g. the training data)."""
    empty = [n for n, c in slice_counts(membership, names).items() if c == 0]
    if empty:
        raise SliceError(
            f"slice(s) {empty} have no members in {where}; fix the slicing function or remove "
            "the slice from the config"
        )


@dataclass(frozen=True)
class SliceSummary:
    """Per-slice size and share, for reports."""

    name: str
    count: int
    share: float
