"""Labeling functions (LFs): `text -> label name | None` (None = abstain).

Declarative LFs come from the project config (keywords / regex / word_count → one class) and
are applied with the same vectorised code as slicing functions; Python LFs are registered with
`@labeling_function`. The label matrix `L [N, m]` holds class indices, `ABSTAIN = -1`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from slicewise.core.errors import SlicewiseError
from training.config import LabelingFunctionConfig, ProjectConfig
from training.slices import SliceError, import_plugins, resolve_function, rule_mask

ABSTAIN = -1
LabelFn = Callable[[str], "str | None"]
_REGISTRY: dict[str, LabelFn] = {}


class LFError(SlicewiseError, ValueError):
    """A labeling function is unknown, raises, or votes a label outside the label set."""


def labeling_function(name: str | None = None) -> Callable[[LabelFn], LabelFn]:
    """Register a Python LF (returns a label name, or None to abstain).

    Example:
        >>> @labeling_function(name="lf_thanks")
        ... def lf_thanks(text: str) -> str | None:
        ...     return "positive" if "thank" in text.lower() else None
        >>> lf_thanks("Thanks a lot")
        'positive'
    """

    def register(fn: LabelFn) -> LabelFn:
        _REGISTRY[name or fn.__name__] = fn
        return fn

    return register


def _apply_one(lf: LabelingFunctionConfig, texts: pd.Series, labels: list[str]) -> np.ndarray:
    if lf.function is None:
        assert lf.label is not None
        fired = rule_mask(texts, lf, kind="labeling")
        return np.where(fired, labels.index(lf.label), ABSTAIN)
    try:
        fn = resolve_function(lf.function, _REGISTRY, kind="labeling")
    except SliceError as exc:
        raise LFError(str(exc)) from None
    out = np.full(len(texts), ABSTAIN)
    for i, text in enumerate(texts):
        try:
            vote = fn(text)
        except Exception as exc:
            raise LFError(
                f"labeling function {lf.name!r} raised on text {i} ({text[:40]!r}): {exc!r}"
            ) from exc
        if vote is None:
            continue
        if vote not in labels:
            raise LFError(
                f"labeling function {lf.name!r} returned {vote!r} on text {i}, not one of {labels}"
            )
        out[i] = labels.index(vote)
    return out


def apply_lfs(texts: Sequence[str], cfg: ProjectConfig, warn_silent: bool = True) -> np.ndarray:
    """The label matrix `[N, m]` of the config's LFs (class index or `ABSTAIN`).

    Raises:
        LFError: an LF raises or returns an unknown label (named, with the text index).
    """
    import_plugins(cfg)
    series = pd.Series(list(texts), dtype=object).astype(str)
    lfs = cfg.labeling_functions
    L = (
        np.stack([_apply_one(lf, series, cfg.labels) for lf in lfs], axis=1)
        if lfs
        else np.zeros((len(series), 0), int)
    )
    if warn_silent:
        for j, lf in enumerate(lfs):
            if len(series) and (L[:, j] == ABSTAIN).all():
                warnings.warn(
                    f"labeling function {lf.name!r} never votes on these {len(series)} texts",
                    stacklevel=2,
                )
    return L


def lf_analysis(
    L: np.ndarray, names: Sequence[str], labels: Sequence[str], gold: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-LF table like Snorkel's `LFAnalysis`: polarity, coverage, overlaps, conflicts, accuracy."""
    votes = L != ABSTAIN
    rows = []
    for j, name in enumerate(names):
        v = votes[:, j]
        others = np.delete(votes, j, axis=1)
        other_labels = np.delete(L, j, axis=1)
        overlap = v & others.any(axis=1)
        conflict = v & ((other_labels != L[:, [j]]) & others).any(axis=1)
        row = {
            "lf": name,
            "polarity": sorted({labels[k] for k in np.unique(L[v, j])}),
            "coverage": float(v.mean()),
            "overlaps": float(overlap.mean()),
            "conflicts": float(conflict.mean()),
        }
        if gold is not None:
            row["accuracy"] = float((L[v, j] == gold[v]).mean()) if v.any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("lf")
