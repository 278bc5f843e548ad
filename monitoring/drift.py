"""Per-slice drift between the reference profile and the current window (docs/design.md §9).

A slice's rows are its members as the service logged them in `slices` — exact membership for
rule-evaluated slices, the learned score at or above the threshold otherwise — in reference and
current data alike (`all` is every row; the reference profile holds the same membership). Per
slice, each monitored column — confidence, predicted label, per-class probabilities, the other
slices' membership, text length — is compared with Evidently's stat tests, picked by
Evidently's own default rules (K-S / chi-square / Z for up to 1000 reference rows, normed
Wasserstein / Jensen-Shannon above), so a column drifts exactly when Evidently's
`DataDriftPreset` would say so. A slice drifts when the share of drifted columns reaches
`drift_share`. Slices with fewer than `min_rows` rows in either window report insufficient data
and never drift.

Traffic shift is the other signal: a slice whose share of the window moved by more than the
`SliceTrafficShift` alert's threshold (read from monitoring/prometheus/rules.yml, so the monitor
and the alert agree) has `share_moved`. Shares move together: a window drawn mostly from
`negation` also holds more airline complaints and fewer links, because that is what negated texts
are. Traffic shift is therefore attributed too (`traffic_attribution`): slices whose share moved
are taken largest move first; a slice is `traffic_explained_by` a cause kept so far when its
share inside the cause and inside the cause's complement (a stratified share; jointly over the
causes when no single one explains it) moved by no more than the threshold, and the share
expected from the causes' new mix with the reference's conditional shares is within the
threshold of the share seen. Otherwise it is a cause itself and `traffic_shifted`. The largest
move is always a cause (a mix effect never moves a share more than the mix itself moved).

Slices overlap (a negated question is in `negation` and in `question`), so a change in one
slice also moves its neighbours: drift in `negation` moves the rows it shares with `question`,
and a window drawn mostly from `negation` fills `question` with negated questions, so
`question`'s columns drift although no question changed. Drift is therefore **attributed**. The
causes are first the traffic-shifted slices (largest move first; a slice whose share move is
explained by another's is not one), then the drifted user slices, strongest first (share of
drifted columns, then the smaller slice): a drifted slice is kept as a cause unless its rows
outside the overlapping causes kept so far no longer drift (or are too few to tell) — then it
is reported as `explained_by` those causes and does not count as drifted.
Attribution never hides a change: an explained slice's cause is itself flagged (drifted or
traffic-shifted), and a slice whose own rows drift too stays flagged. `all` is not attributed.

Calling the stat tests directly, rather than building one Evidently `Report` per slice, is what
keeps a 100k-row, 7-slice pass within seconds (bench/bench_drift.py compares both).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from evidently.legacy.calculations import stattests
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.calculations.stattests.z_stattest import proportions_diff_z_test
from evidently.legacy.core import ColumnType
from scipy.spatial import distance
from scipy.stats import chisquare

from slicewise.core import contracts as c

ALL = "all"
RULES_FILE = Path(__file__).parent / "prometheus" / "rules.yml"
TRAFFIC_ALERT = "SliceTrafficShift"


@functools.lru_cache(maxsize=4)
def traffic_shift_threshold(rules_file: Path = RULES_FILE) -> float:
    """The share change the `SliceTrafficShift` alert fires above, read from its rule (the
    first `) > <number>` of its expression: `abs(current - reference) > 0.10 unless ...`).

    Raises:
        ValueError: when the rules file has no such rule with `) > <number>`.
    """
    for group in yaml.safe_load(Path(rules_file).read_text()).get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("alert") == TRAFFIC_ALERT:
                found = re.search(r"\)\s*>\s*([0-9]*\.?[0-9]+)", str(rule.get("expr", "")))
                if found:
                    return float(found.group(1))
    raise ValueError(
        f"{rules_file} has no {TRAFFIC_ALERT} alert whose expression compares `abs(...) > "
        "<share>`; the monitor reads its traffic-shift threshold from there"
    )


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
    share_moved: bool = False
    traffic_explained_by: list[str] = field(default_factory=list)

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

    @property
    def traffic_shifted(self) -> bool:
        """Whether the slice's share moved beyond the threshold, unless another slice's move
        explains it (`traffic_explained_by`).
        """
        return self.share_moved and not self.traffic_explained_by

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
            "traffic_shifted": self.traffic_shifted,
            "share_moved": self.share_moved,
            "traffic_explained_by": self.traffic_explained_by,
            "columns": [vars(col) for col in self.columns],
        }


def slice_masks(frame: pd.DataFrame, manifest: c.Manifest) -> dict[str, np.ndarray]:
    """Boolean row mask per slice (`all` first): exact membership of rule slices, learned score
    at or above the threshold for the others (`Manifest.membership_cuts`).
    """
    masks = {ALL: np.ones(len(frame), dtype=bool)}
    cuts = manifest.membership_cuts
    for s in manifest.slices:
        masks[s.name] = frame[c.slice_score_column(s.name)].to_numpy() >= cuts[s.name]
    return masks


@dataclass
class MembershipBasis:
    """What each slice was judged on in one pass (`membership_basis`)."""

    reference: pd.DataFrame
    current: pd.DataFrame
    judged: dict[str, str]  # slice -> "rule" (exact membership) | "learned" (indicator scores)
    fallback_share: dict[str, float]  # share of window rows served on the learned score
    # although the manifest declares `rule` (the prediction log's `learned_slices`)


def membership_basis(
    reference: pd.DataFrame, current: pd.DataFrame, manifest: c.Manifest
) -> MembershipBasis:
    """Make each slice's membership comparable between reference and window when the service
    fell back to the learned score for a `rule` slice (its module not importable there, rules
    switched off, or the function raised on some texts).

    The window's fallback rows (their `learned_slices`) are cut at the slice's threshold into
    0/1, like the exact rows around them. When they are at least half of the window, the slice
    is judged on learned scores on both sides: the reference's membership column becomes its
    learned score (`score_<name>`) cut at the same threshold, so a learned window is not
    compared with exact reference membership. Slices the manifest calls `learned` are judged
    on learned scores as they always were. Frames are copied only when something changes.
    """
    judged = {s.name: "rule" if s.membership == "rule" else "learned" for s in manifest.slices}
    share = dict.fromkeys(manifest.slice_names, 0.0)
    flags = current.get(c.LEARNED_SLICES_FIELD)
    if flags is None or current.empty:
        return MembershipBasis(reference, current, judged, share)
    flags = flags.fillna("").astype(str)
    if not flags.str.len().any():
        return MembershipBasis(reference, current, judged, share)
    listed = flags.str.split(",")
    ref, cur = reference, current.copy()
    for s in manifest.slices:
        if s.membership != "rule":
            continue
        fell_back = listed.map(lambda names, name=s.name: name in names).to_numpy(bool)
        share[s.name] = float(fell_back.mean())
        if not fell_back.any():
            continue
        col = c.slice_score_column(s.name)
        cur.loc[fell_back, col] = (cur.loc[fell_back, col] >= s.threshold).astype(float)
        if share[s.name] >= 0.5:
            judged[s.name] = "learned"
            learned = c.learned_score_column(s.name)
            if learned in ref.columns:
                if ref is reference:
                    ref = reference.copy()
                ref[col] = (ref[learned] >= s.threshold).astype(float)
    return MembershipBasis(ref, cur, judged, share)


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


def default_stattest(reference: pd.Series, current: pd.Series, kind: ColumnType) -> Any:
    """The test Evidently's `get_stattest(reference, current, kind, None)` picks, without its
    `pd.concat([reference, current]).nunique()` on every call: the rules only ask whether the
    column has more than 5 (or 2) distinct values, which the small reference answers alone
    when it has 6 or more (the union has at least as many). On a 1M-row window that count
    was a third of the drift time (bench/bench_monitor_scale.py); tests/unit/test_drift.py
    checks the choice equals Evidently's.
    """
    if kind not in (ColumnType.Numerical, ColumnType.Categorical):
        return get_stattest(reference, current, kind, None)
    n_values = reference.nunique()
    if n_values <= 5:
        n_values = pd.concat([reference, current]).nunique()
    if reference.shape[0] <= 1000:
        if kind == ColumnType.Numerical and n_values > 5:
            return stattests.ks_stat_test
        return stattests.chi_stat_test if n_values > 2 else stattests.z_stat_test
    if kind == ColumnType.Numerical and n_values > 5:
        return stattests.wasserstein_stat_test
    return stattests.jensenshannon_stat_test


def column_drift(
    reference: pd.Series, current: pd.Series, kind: ColumnType, column: str
) -> ColumnDrift:
    """Evidently's default stat test for this column and sample size."""
    test = default_stattest(reference, current, kind)
    result = test(reference, current, kind, None)
    return ColumnDrift(
        column,
        test.name,
        float(result.drift_score),
        float(result.actual_threshold),
        bool(result.drifted),
    )


class _Columns:
    """The compared columns of both windows as arrays, with what the slices' tests share
    computed once per pass: each current column sorted (Wasserstein on `all`) and, for
    columns with few distinct values, one mask per value (counts per slice).

    The tests are Evidently's own rules and formulas, computed on these arrays, and
    `tests/unit/test_drift.py` checks every column's result against `column_drift`. A column
    holding NaN is tested by `column_drift` itself.
    """

    def __init__(self, reference: pd.DataFrame, current: pd.DataFrame, names: list[str]) -> None:
        self.ref = {n: reference[n].to_numpy() for n in names}
        self.cur = {n: current[n].to_numpy() for n in names}
        self._sorted: dict[str, np.ndarray] = {}
        self._codes: dict[str, tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]] = {}
        self.has_nan = {
            n: bool(pd.isna(self.ref[n]).any() or pd.isna(self.cur[n]).any()) for n in names
        }

    def sorted_current(self, name: str, cm: np.ndarray | None) -> np.ndarray:
        """The current values of the rows in `cm` (None: all), ascending (a sort of the
        slice's values costs less than gathering them from one sort order of the window).
        """
        if cm is not None:
            return np.sort(self.cur[name][cm].astype(np.float64))
        if name not in self._sorted:
            self._sorted[name] = np.sort(self.cur[name].astype(np.float64))
        return self._sorted[name]

    def current_counts(self, name: str, cm: np.ndarray | None) -> dict[Any, int]:
        """Value → count among the current rows in `cm` (None: all)."""
        if name not in self._codes:
            codes, uniques = pd.factorize(self.cur[name])
            few = [codes == i for i in range(len(uniques))] if len(uniques) <= 8 else None
            self._codes[name] = (codes, uniques, few)
        codes, uniques, few = self._codes[name]
        if cm is None:
            counts = np.bincount(codes, minlength=len(uniques))
        elif few is not None:  # a few values (0/1 membership, labels): count them in the mask
            counts = np.array([np.count_nonzero(eq & cm) for eq in few])
        else:
            counts = np.bincount(codes[cm], minlength=len(uniques))
        return {uniques[i]: int(counts[i]) for i in np.flatnonzero(counts)}


def _counts(values: np.ndarray) -> dict[Any, int]:
    uniques, counts = np.unique(values, return_counts=True)
    return dict(zip(uniques.tolist(), counts.tolist(), strict=True))


def _wasserstein(reference: np.ndarray, current_sorted: np.ndarray) -> float:
    """Scipy's `wasserstein_distance(reference, current)` from the current values sorted: the
    integral of |F_ref - F_cur| over the merged sample, in one pass.
    """
    ref = np.sort(reference.astype(np.float64))
    n, m = len(current_sorted), len(ref)
    pos = np.searchsorted(current_sorted, ref, side="right")
    merged = np.insert(current_sorted, pos, ref)
    is_ref = np.zeros(n + m, dtype=np.int64)
    is_ref[pos + np.arange(m)] = 1
    below_ref = np.cumsum(is_ref)[:-1]
    below_cur = np.arange(1, n + m) - below_ref
    return float(np.abs(below_ref / m - below_cur / n) @ np.diff(merged))


def _fast_column_drift(
    cols: _Columns, name: str, kind: ColumnType, rm: np.ndarray, cm: np.ndarray | None
) -> ColumnDrift:
    """`column_drift` of the rows `rm` (reference) and `cm` (current; None: all) of a column."""
    ref_s = cols.ref[name][rm]
    if cols.has_nan[name]:
        cur_s = cols.cur[name] if cm is None else cols.cur[name][cm]
        return column_drift(pd.Series(ref_s), pd.Series(cur_s), kind, name)
    n_cur = len(cols.cur[name]) if cm is None else int(cm.sum())
    ref_counts = cur_counts = None
    n_values = len(pd.unique(ref_s))
    if n_values <= 5:  # the union's distinct values decide (default_stattest)
        ref_counts = _counts(ref_s.astype(np.float64) if kind == ColumnType.Numerical else ref_s)
        cur_counts = cols.current_counts(name, cm)
        n_values = len(ref_counts.keys() | cur_counts.keys())
    numeric_test = kind == ColumnType.Numerical and n_values > 5
    if len(ref_s) > 1000 and numeric_test:
        test = stattests.wasserstein_stat_test
        norm = max(float(np.std(pd.Series(ref_s))), 0.001)
        score = _wasserstein(ref_s, cols.sorted_current(name, cm)) / norm
        drifted = score >= test.default_threshold
    elif numeric_test:  # K-S on up to 1000 reference rows: Evidently's own call
        cur_s = cols.cur[name] if cm is None else cols.cur[name][cm]
        return column_drift(pd.Series(ref_s), pd.Series(cur_s), kind, name)
    else:
        if ref_counts is None or cur_counts is None:
            ref_counts = _counts(ref_s)
            cur_counts = cols.current_counts(name, cm)
        keys = list(ref_counts.keys() | cur_counts.keys())
        ref_n = np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64)
        cur_n = np.array([cur_counts.get(k, 0) for k in keys], dtype=np.float64)
        if len(ref_s) > 1000:
            test = stattests.jensenshannon_stat_test
            score = float(distance.jensenshannon(ref_n / len(ref_s), cur_n / n_cur))
            drifted = score >= test.default_threshold
        elif n_values > 2:
            test = stattests.chi_stat_test
            score = float(chisquare(cur_n, ref_n * (n_cur / len(ref_s)))[1])
            drifted = score < test.default_threshold
        else:
            test = stattests.z_stat_test
            score = _z_p_value(ref_counts, cur_counts, len(ref_s), n_cur)
            drifted = score < test.default_threshold
    return ColumnDrift(name, test.name, float(score), float(test.default_threshold), bool(drifted))


def _z_p_value(ref_counts: dict, cur_counts: dict, n_ref: int, n_cur: int) -> float:
    """Evidently's two-proportion Z test (`z_stattest._z_stat_test`) from value counts."""
    if len(ref_counts) == 1 and len(cur_counts) == 1 and ref_counts.keys() == cur_counts.keys():
        return 1.0
    first = sorted(ref_counts.keys() | cur_counts.keys())[0]
    p1 = float(n_ref - ref_counts.get(first, 0)) / n_ref
    p2 = float(n_cur - cur_counts.get(first, 0)) / n_cur
    pooled = float(p1 * n_ref + p2 * n_cur) / (n_ref + n_cur)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    return float(proportions_diff_z_test(z))


def slice_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    manifest: c.Manifest,
    min_rows: int = 50,
    drift_share: float = 0.5,
    traffic_threshold: float | None = None,
) -> dict[str, SliceDrift]:
    """Drift per slice (and `all`) between two frames with the reference-profile columns.

    `traffic_threshold`: share change that marks a slice traffic-shifted (default: the
    `SliceTrafficShift` alert's); judged when both windows have at least `min_rows` rows.

    Raises:
        ValueError: when a frame lacks a column the manifest implies.
    """
    for name, frame in (("reference", reference), ("current", current)):
        needed = [col for col, _ in drift_columns(manifest, "")]
        missing = [col for col in needed if col not in frame.columns]
        if missing:
            raise ValueError(f"{name} data lacks columns {missing}")
    ref_masks, cur_masks = slice_masks(reference, manifest), slice_masks(current, manifest)
    cols = _Columns(reference, current, [col for col, _ in drift_columns(manifest, "")])

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
            every = cm if result.current_rows < len(cm) else None  # `all`: no selection
            result.columns = [
                _fast_column_drift(cols, col, kind, rm, every)
                for col, kind in drift_columns(manifest, name)
            ]
        return result

    out = {name: judge(name, ref_masks[name], cur_masks[name]) for name in ref_masks}
    threshold = traffic_shift_threshold() if traffic_threshold is None else traffic_threshold
    if len(reference) >= min_rows and len(current) >= min_rows:
        for name, r in out.items():
            r.share_moved = name != ALL and (abs(r.current_share - r.reference_share) > threshold)
    causes = traffic_attribution(out, ref_masks, cur_masks, threshold, min_rows)
    drifted = sorted(
        (n for n, r in out.items() if n != ALL and r.drifted_columns),
        key=lambda n: (-out[n].drifted_share, out[n].current_rows),
    )
    for name in drifted:
        overlapping = [a for a in causes if a != name and (cur_masks[name] & cur_masks[a]).any()]
        if overlapping:
            ref_out = np.logical_or.reduce([ref_masks[a] for a in overlapping])
            cur_out = np.logical_or.reduce([cur_masks[a] for a in overlapping])
            rest = judge(name, ref_masks[name] & ~ref_out, cur_masks[name] & ~cur_out)
            if not rest.drifted_columns:
                out[name].explained_by = overlapping
                continue
        if name not in causes:
            causes.append(name)
    return out


def traffic_attribution(
    out: dict[str, SliceDrift],
    ref_masks: dict[str, np.ndarray],
    cur_masks: dict[str, np.ndarray],
    threshold: float,
    min_rows: int,
) -> list[str]:
    """Set `traffic_explained_by` on the slices whose share move another slice's explains.

    Slices with `share_moved` are taken largest move first. Each is tested against the causes
    kept so far: one at a time, then all of them together (`share_explained`). Explained, it
    records the cause(s); otherwise it becomes a cause.

    Returns:
        The causes (traffic-shifted slices), largest move first.
    """
    moved = sorted(
        (n for n, r in out.items() if r.share_moved),
        key=lambda n: -abs(out[n].current_share - out[n].reference_share),
    )
    causes: list[str] = []
    for name in moved:
        tries = [[a] for a in causes] + ([causes] if len(causes) > 1 else [])
        for given in tries:
            if share_explained(name, given, ref_masks, cur_masks, threshold, min_rows):
                out[name].traffic_explained_by = list(given)
                break
        else:
            causes.append(name)
    return causes


def share_explained(
    name: str,
    given: list[str],
    ref_masks: dict[str, np.ndarray],
    cur_masks: dict[str, np.ndarray],
    threshold: float,
    min_rows: int,
) -> bool:
    """Whether slice `name`'s share move is the mix of the `given` slices moving.

    Rows are stratified by their membership in the `given` slices (2^len(given) cells). The
    move is explained when, in every cell with at least `min_rows` rows in both windows, the
    share of `name` moved by at most `threshold`, and the share expected from the current mix of
    cells at the reference's share per cell is within `threshold` of the current share (cells
    without reference rows are expected at the reference's overall share).
    """
    ref_cells = _cells([ref_masks[g] for g in given])
    cur_cells = _cells([cur_masks[g] for g in given])
    k = 1 << len(given)
    ref_n = np.bincount(ref_cells, minlength=k)
    cur_n = np.bincount(cur_cells, minlength=k)
    ref_in = np.bincount(ref_cells, weights=ref_masks[name], minlength=k)
    cur_in = np.bincount(cur_cells, weights=cur_masks[name], minlength=k)
    if not cur_n.sum() or not ref_n.sum():
        return False
    ref_rate = np.where(ref_n > 0, ref_in / np.maximum(ref_n, 1), ref_in.sum() / ref_n.sum())
    cur_rate = cur_in / np.maximum(cur_n, 1)
    judged = (ref_n >= min_rows) & (cur_n >= min_rows)
    if np.any(np.abs(cur_rate - ref_rate)[judged] > threshold):
        return False
    expected = float((cur_n * ref_rate).sum() / cur_n.sum())
    return abs(cur_in.sum() / cur_n.sum() - expected) <= threshold


def _cells(masks: list[np.ndarray]) -> np.ndarray:
    """Each row's cell: the bit pattern of its membership in `masks`."""
    code = np.zeros(len(masks[0]), dtype=np.int64)
    for bit, mask in enumerate(masks):
        code |= mask.astype(np.int64) << bit
    return code


def evidently_report(
    reference: pd.DataFrame, current: pd.DataFrame, manifest: c.Manifest, slice_name: str = ""
) -> Any:
    """An Evidently `DataDriftPreset` report over the columns `slice_drift` compares for
    `slice_name` (default: every column, as for `all`; kept as HTML per run).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = drift_columns(manifest, slice_name)
    numerical = [col for col, kind in cols if kind == ColumnType.Numerical]
    categorical = [col for col, kind in cols if kind == ColumnType.Categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    names = numerical + categorical
    ref = Dataset.from_pandas(reference[names], data_definition=definition)
    cur = Dataset.from_pandas(current[names], data_definition=definition)
    return Report([DataDriftPreset()]).run(cur, ref)
