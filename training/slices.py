"""Slicing functions (SFs): `text -> bool`, declarative (config) or Python (decorator).

Membership is decided by `slicewise.core.slice_rules` (keywords, regex, word-count range, Python
functions), the same evaluator the service runs on every request, so training and serving can
never disagree; this module adds what training needs around it (pandas input, the config's
plugins, empty-slice checks). A Python SF that raises is reported with its name and the text
index. `slice_membership` returns the `[N, k]` membership matrix in config order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from slicewise.core.slice_rules import (
    RuleEvaluator,
    SliceError,
    compile_rule,
    compile_rules,
    keyword_pattern,
    resolve_function,
    slicing_function,
)
from slicewise.core.slice_rules import import_plugins as _import_plugins
from training.config import ProjectConfig, SliceConfig

__all__ = [
    "SliceError",
    "SliceSummary",
    "import_plugins",
    "keyword_pattern",
    "require_members",
    "resolve_function",
    "rule_mask",
    "slice_counts",
    "slice_evaluator",
    "slice_membership",
    "slicing_function",
]


def import_plugins(cfg: ProjectConfig) -> None:
    """Import the config's `plugins` modules so their decorated functions register."""
    _import_plugins(cfg.plugins)


def rule_mask(
    texts: pd.Series,
    rule: SliceConfig | object,
    registry: dict[str, Callable] | None = None,
    kind: str = "slicing",
) -> np.ndarray:
    """Boolean mask of the texts a declarative or Python rule fires on (`slicewise.core.slice_rules`)."""
    name = getattr(rule, "name", "?")
    evaluator = RuleEvaluator([compile_rule(name, rule, registry, kind)], kind=kind)
    return evaluator.evaluate(texts.tolist())[:, 0]


def slice_evaluator(cfg: ProjectConfig) -> RuleEvaluator:
    """The config's slice rules compiled once (plugins imported first)."""
    import_plugins(cfg)
    return compile_rules(cfg.slices)


def slice_membership(texts: Sequence[str] | pd.Series, cfg: ProjectConfig) -> np.ndarray:
    """The `[N, k]` boolean membership matrix, columns in `cfg.slice_names` order."""
    evaluator = slice_evaluator(cfg)
    series = pd.Series(list(texts), dtype=object).astype(str)
    if not cfg.slices:
        return np.zeros((len(series), 0), dtype=bool)
    return evaluator.evaluate(series.tolist())


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
