"""Exact slice membership in the service: the bundle's slice rules, evaluated on every request.

At load, the manifest's `plugins` are imported and every slice with `membership: rule` is
compiled by `slicewise.core.slice_rules` — the evaluator training used to label the slices, so
the two cannot disagree. A slice whose rule cannot be compiled here (its Python function's
module is not importable in the service, say) keeps the model's learned score: one log line
names the slice and the reason, and serving goes on. `SLICEWISE_SLICE_RULES=0` turns rule
evaluation off (every slice learned), for comparison.

`slices` (membership) = exact 0/1 for rule-evaluated slices, the learned score otherwise;
`slice_scores` = the learned indicator the model routes on.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from slicewise.core.contracts import Manifest
from slicewise.core.slice_rules import RuleEvaluator, SliceError, compile_rule

log = logging.getLogger("slicewise.service")
Mode = Literal["rule", "learned"]


@dataclass
class SliceMembership:
    """Which slices the service evaluates exactly, and the compiled rules for them."""

    names: list[str]
    modes: dict[str, Mode]
    evaluator: RuleEvaluator
    columns: np.ndarray  # the model-output column of each compiled rule
    cuts: np.ndarray  # per slice: 0.5 on exact membership, the threshold on learned scores
    declared: list[str] = field(default_factory=list)  # slices the manifest calls `rule`
    _reported: set[str] = field(default_factory=set)

    @property
    def fallback(self) -> list[str]:
        """Slices the manifest calls `rule` that are served on the learned score here."""
        return [n for n in self.declared if self.modes[n] == "learned"]

    def learned_slices(self, failed: np.ndarray) -> list[list[str]]:
        """Per text: the slices whose membership is the learned score although the manifest
        declares `rule` (`fallback`, and the cells where a slicing function raised); the
        prediction log carries it so the monitor knows what it judges.
        """
        always = self.fallback
        if not failed.any():
            return [list(always) for _ in range(len(failed))]
        names = [self.names[j] for j in self.columns]
        return [always + [names[j] for j in np.flatnonzero(row)] for row in failed]

    @classmethod
    def from_manifest(cls, manifest: Manifest, evaluate_rules: bool = True) -> SliceMembership:
        """Import the plugins and compile the rule slices; the others stay learned (logged)."""
        plugin_errors: dict[str, str] = {}
        if evaluate_rules:
            for module in manifest.plugins:
                try:
                    importlib.import_module(module)
                except Exception as exc:  # any failure: the slices that need it stay learned
                    plugin_errors[module] = f"{type(exc).__name__}: {exc}"
        rules, columns, modes = [], [], {}
        for j, s in enumerate(manifest.slices):
            modes[s.name] = "learned"
            if not evaluate_rules or s.membership != "rule" or s.rule is None:
                continue
            try:
                rules.append(compile_rule(s.name, s.rule))
            except SliceError as exc:
                why = str(exc)
                if plugin_errors:
                    why += "; plugin import failed: " + "; ".join(
                        f"{m} ({e})" for m, e in plugin_errors.items()
                    )
                log.warning(
                    "slice %r: membership is learned, its rule is not usable: %s", s.name, why
                )
                continue
            columns.append(j)
            modes[s.name] = "rule"
        cuts = np.array(
            [0.5 if modes[s.name] == "rule" else s.threshold for s in manifest.slices],
            dtype=np.float32,
        )
        declared = [s.name for s in manifest.slices if s.membership == "rule" and s.rule]
        return cls(
            manifest.slice_names,
            modes,
            RuleEvaluator(rules),
            np.array(columns, dtype=int),
            cuts,
            declared,
        )

    def evaluate(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Exact membership `[B, r]` of the rule slices (columns `self.columns`), and the cells
        where a slicing function raised (logged once per slice).
        """
        exact, failed, error = self.evaluator.evaluate_with_errors(texts)
        if error is not None:
            bad = {self.evaluator.rules[j].name for j in np.flatnonzero(failed.any(axis=0))}
            if not bad <= self._reported:
                self._reported |= bad
                log.warning("slice function raised, learned score used for that text: %s", error)
        return exact, failed

    def combine(self, scores: np.ndarray, exact: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """Membership `[B, k]`: the learned `scores` with rule slices replaced by exact 0/1
        (except the cells whose function raised).
        """
        member = np.array(scores, dtype=np.float32, copy=True)
        if len(self.columns):
            cols = member[:, self.columns]
            member[:, self.columns] = np.where(failed, cols, exact.astype(np.float32))
        return member

    def model_input(self, exact: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """The `slice_rules` model input `[B, k]` (float32) of a model that routes on rules:
        exact 0/1 for the rule slices, NaN (the model uses its learned indicator) elsewhere and
        where a slicing function raised.
        """
        rules = np.full((len(exact), len(self.names)), np.nan, dtype=np.float32)
        if len(self.columns):
            rules[:, self.columns] = np.where(failed, np.nan, exact.astype(np.float32))
        return rules

    def apply(self, texts: list[str], scores: np.ndarray) -> np.ndarray:
        """`combine(scores, *evaluate(texts))`."""
        return self.combine(scores, *self.evaluate(texts))

    def active(self, membership: np.ndarray) -> np.ndarray:
        """Boolean `[B, k]`: in the slice (exact membership, or learned score ≥ threshold)."""
        return membership >= self.cuts[None, :]
