"""Per-slice drift between the reference profile and the current window (DESIGN §9).

A slice's rows are those whose predicted membership score is at or above the slice threshold,
in reference and current data alike (`all` is every row). Per slice, each monitored column —
confidence, predicted label, per-class probabilities, the other slices' scores, text length —
is compared with Evidently's stat tests, picked by Evidently's own default rules (K-S /
chi-square / Z for up to 1000 reference rows, normed Wasserstein / Jensen-Shannon above), so a
column drifts exactly when Evidently's `DataDriftPreset` would say so. A slice drifts when the
share of drifted columns reaches `drift_share`. Slices with fewer than `min_rows` rows in
either window report insufficient data and never drift.

Slices overlap (a negated question is in `negation` and in `question`), so drift in one slice
also moves the rows it shares with its neighbours. Drift is therefore **attributed**: drifted
user slices are taken strongest first (share of drifted columns, then the smaller slice); a
slice is kept as a cause unless its rows outside the causes kept so far no longer drift (or are
too few to tell) — then it is reported as `explained_by` those causes and does not count as
drifted. The strongest drifted slice is always kept, so attribution never hides drift, and a
slice whose own rows drift too stays flagged. `all` is not attributed.

Calling the stat tests directly, rather than building one Evidently `Report` per slice, is what
keeps a 100k-row, 7-slice pass within seconds (bench/bench_drift.py compares both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.core import ColumnType

from slicewise.core import contracts as c

ALL = "all"


@dataclass
class ColumnDrift:
    """One column's test in one slice."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class SliceDrift:
    """Drift verdict and traffic numbers for one slice."""

    slice: str
    reference_rows: int
    current_rows: int
    reference_share: float
    current_share: float
    insufficient_data: bool
    columns: list[ColumnDrift] = field(default_factory=list)
    drift_share: float = 0.5
    explained_by: list[str] = field(default_factory=list)

    @property
    def drifted_share(self) -> float:
        """Share of the slice's columns that drifted."""
        return sum(col.drifted for col in self.columns) / len(self.columns) if self.columns else 0.0

    @property
    def drifted_columns(self) -> bool:
        """Whether enough of the slice's own columns drifted, before attribution."""
        return (
            not self.insufficient_data
            and bool(self.columns)
            and self.drifted_share >= self.drift_share
        )

    @property
    def drift_detected(self) -> bool:
        """Whether the slice drifted: never on too little data, nor when explained by another."""
        return self.drifted_columns and not self.explained_by

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "slice": self.slice,
            "drift_detected": self.drift_detected,
            "explained_by": self.explained_by,
            "drifted_columns_share": self.drifted_share,
            "insufficient_data": self.insufficient_data,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "reference_share": self.reference_share,
            "current_share": self.current_share,
            "columns": [vars(col) for col in self.columns],
        }


def slice_masks(frame: pd.DataFrame, manifest: c.Manifest) -> dict[str, np.ndarray]:
    """Boolean row mask per slice (`all` first): predicted membership ≥ threshold."""
    masks = {ALL: np.ones(len(frame), dtype=bool)}
    for s in manifest.slices:
        masks[s.name] = frame[c.slice_score_column(s.name)].to_numpy() >= s.threshold
    return masks


def drift_columns(manifest: c.Manifest, slice_name: str) -> list[tuple[str, ColumnType]]:
    """The columns compared for a slice: its own score is left out (it defines the slice)."""
    cols: list[tuple[str, ColumnType]] = [
        (c.CONFIDENCE_COLUMN, ColumnType.Numerical),
        (c.PREDICTED_LABEL_COLUMN, ColumnType.Categorical),
    ]
    cols += [(c.prob_column(lab), ColumnType.Numerical) for lab in manifest.labels]
    cols += [
        (c.slice_score_column(s), ColumnType.Numerical)
        for s in manifest.slice_names
        if s != slice_name
    ]
    cols.append((c.TEXT_LENGTH_COLUMN, ColumnType.Numerical))
    return cols


def column_drift(
    reference: pd.Series, current: pd.Series, kind: ColumnType, column: str
) -> ColumnDrift:
    """Evidently's default stat test for this column and sample size."""
    test = get_stattest(reference, current, kind, None)
    result = test(reference, current, kind, None)
    return ColumnDrift(
        column,
        test.name,
        float(result.drift_score),
        float(result.actual_threshold),
        bool(result.drifted),
    )


def slice_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    manifest: c.Manifest,
    min_rows: int = 50,
    drift_share: float = 0.5,
) -> dict[str, SliceDrift]:
    """Drift per slice (and `all`) between two frames with the reference-profile columns.

    Raises:
        ValueError: when a frame lacks a column the manifest implies.
    """
    for name, frame in (("reference", reference), ("current", current)):
        needed = [col for col, _ in drift_columns(manifest, "")]
        missing = [col for col in needed if col not in frame.columns]
        if missing:
            raise ValueError(f"{name} data lacks columns {missing}")
    ref_masks, cur_masks = slice_masks(reference, manifest), slice_masks(current, manifest)

    def judge(name: str, rm: np.ndarray, cm: np.ndarray) -> SliceDrift:
        result = SliceDrift(
            name,
            int(rm.sum()),
            int(cm.sum()),
            float(rm.mean()) if len(rm) else 0.0,
            float(cm.mean()) if len(cm) else 0.0,
            insufficient_data=bool(rm.sum() < min_rows or cm.sum() < min_rows),
            drift_share=drift_share,
        )
        if not result.insufficient_data:
            ref_s, cur_s = reference.loc[rm], current.loc[cm]
            result.columns = [
                column_drift(ref_s[col], cur_s[col], kind, col)
                for col, kind in drift_columns(manifest, name)
            ]
        return result

    out = {name: judge(name, ref_masks[name], cur_masks[name]) for name in ref_masks}
    drifted = sorted(
        (n for n, r in out.items() if n != ALL and r.drifted_columns),
        key=lambda n: (-out[n].drifted_share, out[n].current_rows),
    )
    causes: list[str] = []
    for name in drifted:
        overlapping = [a for a in causes if (cur_masks[name] & cur_masks[a]).any()]
        if overlapping:
            ref_out = np.logical_or.reduce([ref_masks[a] for a in overlapping])
            cur_out = np.logical_or.reduce([cur_masks[a] for a in overlapping])
            rest = judge(name, ref_masks[name] & ~ref_out, cur_masks[name] & ~cur_out)
            if not rest.drifted_columns:
                out[name].explained_by = overlapping
                continue
        causes.append(name)
    return out


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, manifest: c.Manifest) -> Any:
    """An Evidently `DataDriftPreset` report over the same columns (kept as HTML per run)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = drift_columns(manifest, "")
    numerical = [col for col, kind in cols if kind == ColumnType.Numerical]
    categorical = [col for col, kind in cols if kind == ColumnType.Categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    names = numerical + categorical
    ref = Dataset.from_pandas(reference[names], data_definition=definition)
    cur = Dataset.from_pandas(current[names], data_definition=definition)
    return Report([DataDriftPreset()]).run(cur, ref)
