"""Per-slice drift on constructed frames: drift in one slice is found there and nowhere else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import column_drift, slice_drift
from slicewise.core import contracts as c


def _manifest(names: tuple[str, ...], **slice_fields) -> c.Manifest:
    """A two-label manifest with these slices (threshold 0.5 unless given)."""
    fields = {"threshold": 0.5, **slice_fields}
    return c.Manifest(
        version="v",
        created_at="t",
        labels=["neg", "pos"],
        max_length=8,
        backbone="b",
        slices=[c.SliceInfo(name=n, **fields) for n in names],
    )


MANIFEST = _manifest(("a", "b"))


def frame(
    n: int,
    seed: int,
    shift_a: float = 0.0,
    shift_b_only: float = 0.0,
    overlap: bool = False,
    a_effect: bool = False,
) -> pd.DataFrame:
    """Slices `a` (30% of rows) and `b` (disjoint from `a`, or sharing a third of `a`'s rows);
    `shift_a` moves every row of `a`, `shift_b_only` the rows of `b` outside `a`; `a_effect`
    makes `a`'s rows differ from the rest in every window (a property of the slice, no drift)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    a = u < 0.3
    b = (u > 0.2) & (u < 0.6) if overlap else u > 0.7
    shift = shift_a * a + shift_b_only * (b & ~a) + 0.4 * a * a_effect
    p = np.clip(rng.beta(5, 2, n) - shift, 0.01, 0.99)
    pred = np.where(rng.random(n) < 0.6, "neg", "pos")
    length = rng.integers(10, 120, n) + (shift * 200).astype(int)
    return pd.DataFrame(
        {
            c.prob_column("neg"): p,
            c.prob_column("pos"): 1 - p,
            c.PREDICTED_LABEL_COLUMN: pred,
            c.CONFIDENCE_COLUMN: np.maximum(p, 1 - p),
            c.slice_score_column("a"): np.where(a, 0.9, 0.1),
            c.slice_score_column("b"): np.where(b, 0.9, 0.1),
            c.TEXT_LENGTH_COLUMN: length,
        }
    )


def test_same_distribution_is_clean_everywhere() -> None:
    res = slice_drift(frame(3000, 0), frame(3000, 1), MANIFEST, min_rows=50)
    assert set(res) == {"all", "a", "b"}
    assert not any(r.drift_detected for r in res.values())
    assert all(r.columns for r in res.values())


def test_shift_inside_one_slice_flags_that_slice_only() -> None:
    res = slice_drift(frame(3000, 0), frame(3000, 1, shift_a=0.5), MANIFEST, min_rows=50)
    assert res["a"].drift_detected and res["a"].drifted_share >= 0.5
    assert not res["b"].drift_detected
    # a's own score defines the slice and is not among a's columns; b's score is
    cols = {col.column for col in res["a"].columns}
    assert c.slice_score_column("a") not in cols and c.slice_score_column("b") in cols


def test_drift_in_one_slice_is_attributed_to_it_not_to_an_overlapping_slice() -> None:
    res = slice_drift(
        frame(3000, 0, overlap=True), frame(3000, 1, shift_a=0.5, overlap=True), MANIFEST
    )
    assert res["a"].drift_detected and res["a"].explained_by == []
    # b's rows shared with a moved, so b's own columns drift; its rows outside a do not
    assert res["b"].drifted_columns
    assert res["b"].explained_by == ["a"] and not res["b"].drift_detected
    assert res["b"].as_dict()["explained_by"] == ["a"]


def test_overlapping_slices_that_both_drift_are_both_flagged() -> None:
    cur = frame(3000, 1, shift_a=0.5, shift_b_only=0.5, overlap=True)
    res = slice_drift(frame(3000, 0, overlap=True), cur, MANIFEST)
    assert res["a"].drift_detected and res["b"].drift_detected


def test_small_slice_reports_insufficient_data_not_drift() -> None:
    cur = frame(3000, 1, shift_a=0.5)
    cur[c.slice_score_column("a")] = 0.0
    cur.loc[:9, c.slice_score_column("a")] = 0.9
    res = slice_drift(frame(3000, 0), cur, MANIFEST, min_rows=50)
    assert (
        res["a"].insufficient_data and not res["a"].drift_detected and res["a"].current_rows == 10
    )
    assert res["a"].columns == []


def test_empty_window_is_insufficient_everywhere() -> None:
    res = slice_drift(frame(500, 0), frame(500, 1).iloc[:0], MANIFEST, min_rows=50)
    assert all(r.insufficient_data and not r.drift_detected for r in res.values())


def test_missing_column_is_named() -> None:
    with pytest.raises(ValueError, match=r"current data lacks columns \['text_length'\]"):
        slice_drift(frame(100, 0), frame(100, 1).drop(columns=[c.TEXT_LENGTH_COLUMN]), MANIFEST)


@pytest.mark.parametrize(("n", "method"), [(500, "ks"), (3000, "wasserstein")])
def test_stat_test_follows_evidentlys_default_choice(n: int, method: str) -> None:
    ref, cur = frame(n, 0), frame(n, 1)
    from evidently.legacy.core import ColumnType

    res = column_drift(
        ref[c.CONFIDENCE_COLUMN], cur[c.CONFIDENCE_COLUMN], ColumnType.Numerical, "confidence"
    )
    assert res.method == method and not res.drifted


def slice_heavy_window(n: int, seed: int, share: float) -> pd.DataFrame:
    """A window where a share `share` of the rows is drawn from slice `a`'s members, the rest
    from all traffic: what `demo-traffic --shift-slice a --shift share` sends. Slice `a` is
    itself different from the rest (lower probability, longer texts), in reference and current
    alike, so its rows change what the overlapping slice `b` holds."""
    pool = frame(20_000, seed, overlap=True, a_effect=True)
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(pool[c.slice_score_column("a")].to_numpy() >= 0.5)
    take = np.where(rng.random(n) < share, rng.choice(members, n), rng.integers(0, len(pool), n))
    return pool.iloc[take].reset_index(drop=True)


def test_a_window_drawn_from_one_slice_is_a_traffic_shift_not_drift_in_its_neighbours() -> None:
    reference = frame(3000, 0, overlap=True, a_effect=True)
    res = slice_drift(reference, slice_heavy_window(5000, 1, 0.9), MANIFEST, traffic_threshold=0.1)
    # a's own rows come from the same distribution: not drifted, but its share moved
    assert res["a"].traffic_shifted and not res["a"].drift_detected
    assert res["a"].current_share - res["a"].reference_share > 0.5
    # b now holds mostly a's rows, so its columns drift; its rows outside a do not
    assert res["b"].drifted_columns
    assert res["b"].explained_by == ["a"] and not res["b"].drift_detected
    assert res["all"].drift_detected  # the traffic as a whole did change
    assert not res["all"].traffic_shifted


def test_without_traffic_attribution_the_neighbour_would_be_a_false_alarm() -> None:
    """The same window with a threshold no share change exceeds: b is flagged — the false alarm
    the README demo produced before traffic-shifted slices became causes."""
    reference = frame(3000, 0, overlap=True, a_effect=True)
    res = slice_drift(reference, slice_heavy_window(5000, 1, 0.9), MANIFEST, traffic_threshold=1)
    assert not res["a"].traffic_shifted and res["b"].drift_detected


def test_same_traffic_mix_is_no_traffic_shift() -> None:
    reference = frame(3000, 0, overlap=True, a_effect=True)
    res = slice_drift(reference, slice_heavy_window(5000, 2, 0.0), MANIFEST, traffic_threshold=0.1)
    assert not any(r.traffic_shifted or r.drift_detected for r in res.values())


def test_traffic_threshold_is_the_alert_rules_number(tmp_path) -> None:
    import yaml

    from monitoring.drift import RULES_FILE, traffic_shift_threshold

    rules = yaml.safe_load(RULES_FILE.read_text())
    expr = next(
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "SliceTrafficShift"
    )
    assert f") > {traffic_shift_threshold():.2f}" in expr
    other = tmp_path / "rules.yml"
    other.write_text(RULES_FILE.read_text().replace(") > 0.10", ") > 0.25"))  # only this rule
    assert traffic_shift_threshold(other) == 0.25
    (tmp_path / "none.yml").write_text("groups: []\n")
    with pytest.raises(ValueError, match="no SliceTrafficShift alert"):
        traffic_shift_threshold(tmp_path / "none.yml")


MANIFEST3 = _manifest(("a", "b", "c"))


def mix_pool(n: int, seed: int, b_outside_a: float = 0.2) -> pd.DataFrame:
    """Three slices: `a` (30% of rows); `b` holds 80% of `a`'s rows and a share `b_outside_a`
    of the rest (so its share moves with `a`'s); `c` (25%) is independent of both."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.3
    b = np.where(a, rng.random(n) < 0.8, rng.random(n) < b_outside_a)
    cc = rng.random(n) < 0.25
    p = np.clip(rng.beta(5, 2, n) - 0.3 * a, 0.01, 0.99)
    out = pd.DataFrame(
        {
            c.prob_column("neg"): p,
            c.prob_column("pos"): 1 - p,
            c.PREDICTED_LABEL_COLUMN: np.where(p >= 0.5, "neg", "pos"),
            c.CONFIDENCE_COLUMN: np.maximum(p, 1 - p),
            c.TEXT_LENGTH_COLUMN: rng.integers(10, 120, n) + 60 * a,
        }
    )
    for name, mask in (("a", a), ("b", b), ("c", cc)):
        out[c.slice_score_column(name)] = np.where(mask, 0.9, 0.1)
    return out


def drawn_from_a(pool: pd.DataFrame, n: int, seed: int, share: float) -> pd.DataFrame:
    """`demo-traffic --shift-slice a --shift share` on `pool`."""
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(pool[c.slice_score_column("a")].to_numpy() >= 0.5)
    take = np.where(rng.random(n) < share, rng.choice(members, n), rng.integers(0, len(pool), n))
    return pool.iloc[take].reset_index(drop=True)


def test_a_share_that_moves_only_with_another_slices_is_explained_not_shifted() -> None:
    reference = mix_pool(4000, 0)
    current = drawn_from_a(mix_pool(20_000, 1), 5000, 2, 0.9)
    res = slice_drift(reference, current, MANIFEST3, traffic_threshold=0.1)
    # a moved most: the cause, flagged; b's share moved too (0.38 -> ~0.76) but inside a and
    # inside not-a it is what it was: explained by a, not flagged; c's share did not move
    assert res["a"].share_moved and res["a"].traffic_shifted
    assert res["a"].traffic_explained_by == []
    assert res["b"].current_share - res["b"].reference_share > 0.3
    assert res["b"].share_moved and res["b"].traffic_explained_by == ["a"]
    assert not res["b"].traffic_shifted
    assert res["b"].as_dict()["traffic_explained_by"] == ["a"]
    assert not res["b"].as_dict()["traffic_shifted"] and res["b"].as_dict()["share_moved"]
    assert not res["c"].share_moved and not res["c"].traffic_shifted
    # b's columns drift with a's rows; with b not a cause, the drift is explained by a alone
    assert not res["b"].drift_detected and res["b"].explained_by in ([], ["a"])


def test_a_share_that_also_moved_on_its_own_stays_traffic_shifted() -> None:
    """b's share outside a doubles (0.2 -> 0.6) while the window is drawn from a: the mix
    explains part of b's move, not the rest, so b is flagged beside a."""
    reference = mix_pool(4000, 0)
    current = drawn_from_a(mix_pool(20_000, 1, b_outside_a=0.6), 5000, 2, 0.5)
    res = slice_drift(reference, current, MANIFEST3, traffic_threshold=0.1)
    assert res["a"].traffic_shifted and res["b"].traffic_shifted
    assert res["b"].traffic_explained_by == [] and res["a"].traffic_explained_by == []


@pytest.mark.parametrize("share", [0.4, 0.9])
def test_the_cause_of_a_traffic_shift_is_never_explained_away(share: float) -> None:
    reference = mix_pool(4000, 0)
    res = slice_drift(
        reference,
        drawn_from_a(mix_pool(20_000, 3), 5000, 4, share),
        MANIFEST3,
        traffic_threshold=0.1,
    )
    shifted = [n for n, r in res.items() if r.traffic_shifted]
    assert shifted == ["a"]
    assert all(r.traffic_explained_by in ([], ["a"]) for r in res.values())


def test_share_explained_judges_each_stratum() -> None:
    """Opposite moves inside a and outside it that cancel in the expected share still count:
    b's share inside a falls 0.8 -> 0.4 while outside a it rises; not explained by a."""
    from monitoring.drift import share_explained

    rng = np.random.default_rng(0)
    ref_a = rng.random(4000) < 0.3
    ref_b = np.where(ref_a, rng.random(4000) < 0.8, rng.random(4000) < 0.2)
    cur_a = rng.random(4000) < 0.6
    cur_b = np.where(cur_a, rng.random(4000) < 0.4, rng.random(4000) < 0.6)
    ref, cur = {"a": ref_a, "b": ref_b}, {"a": cur_a, "b": cur_b}
    assert not share_explained("b", ["a"], ref, cur, 0.1, 50)
    same = {"a": cur_a, "b": np.where(cur_a, rng.random(4000) < 0.8, rng.random(4000) < 0.2)}
    assert share_explained("b", ["a"], ref, same, 0.1, 50)


def test_explained_shift_is_exported_so_the_alert_skips_it() -> None:
    """The monitor's gauges for the window above: `b` carries
    slicewise_slice_traffic_shift_explained 1 (SliceTrafficShift's `unless` drops it; promtool
    checks the rule in test_rules.py), `a` and `c` carry 0."""
    import time

    from prometheus_client import generate_latest

    from monitoring.exporter import MonitorMetrics

    res = slice_drift(
        mix_pool(4000, 0), drawn_from_a(mix_pool(20_000, 1), 5000, 2, 0.9), MANIFEST3, 50, 0.5, 0.1
    )
    metrics = MonitorMetrics()
    now = time.time()
    metrics.update(
        {
            "slices": [r.as_dict() for r in res.values()],
            "accuracy": {},
            "estimated_accuracy": {},
            "reference_accuracy": {},
            "finished_at": now,
            "duration_seconds": 0.1,
        }
    )
    text = generate_latest(metrics.registry).decode()
    for name, value in (("a", 0), ("b", 1), ("c", 0), ("all", 0)):
        assert f'slicewise_slice_traffic_shift_explained{{slice="{name}"}} {value}.0' in text


def test_a_few_rows_served_on_learned_scores_are_cut_at_the_threshold() -> None:
    """A slicing function that raised on some texts: those rows carry the learned score; the
    window cuts them at the slice's threshold (0/1 like the exact rows) and the slice is still
    judged on its rule."""
    from monitoring.drift import membership_basis

    manifest = _manifest(("a", "b"), threshold=0.3, membership="rule", rule={"keywords": ["x"]})
    reference, current = frame(1000, 0), frame(1000, 1)
    col = c.slice_score_column("b")
    current[c.LEARNED_SLICES_FIELD] = ""
    current.loc[:199, c.LEARNED_SLICES_FIELD] = "b"
    current.loc[:199, col] = np.linspace(0.0, 0.6, 200)  # learned scores, threshold 0.3
    basis = membership_basis(reference, current, manifest)
    assert basis.judged == {"a": "rule", "b": "rule"}
    assert basis.fallback_share == {"a": 0.0, "b": 0.2}
    assert basis.reference is reference  # nothing to change there
    cut = basis.current[col].to_numpy()
    assert (cut[:200] == (np.linspace(0.0, 0.6, 200) >= 0.3)).all()
    assert (cut[200:] == current[col].to_numpy()[200:]).all()  # served rows stay as they were
    assert current.loc[0, col] == 0.0 and current.loc[199, col] == 0.6  # the input is not changed


def evidently_columns(reference, current, name, rm, cm) -> list:
    """What `slice_drift` computed per column before it was vectorised: `column_drift` (Evidently's
    own stat test calls) on the slice's rows as pandas Series."""
    from monitoring.drift import drift_columns

    ref_s, cur_s = reference.loc[rm], current.loc[cm]
    return [
        column_drift(ref_s[col], cur_s[col], kind, col)
        for col, kind in drift_columns(MANIFEST, name)
    ]


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "kwargs"),
    [
        (
            3000,
            20_000,
            {"shift_a": 0.5},
        ),  # `all` > 1000 rows (Wasserstein, Jensen-Shannon), a and b ≤ 1000 (K-S, chi², Z)
        (6000, 20_000, {"overlap": True, "shift_a": 0.3}),  # every slice > 1000 rows, attribution
        (3000, 5000, {}),  # no drift
    ],
)
def test_vectorised_tests_give_evidentlys_results(n_ref, n_cur, kwargs) -> None:
    from monitoring.drift import slice_masks

    reference = frame(n_ref, 0, overlap=kwargs.get("overlap", False))
    reference = reference.astype(
        {
            col: np.float32
            for col in reference.columns
            if col.startswith(("prob_", "slice_")) or col == c.CONFIDENCE_COLUMN
        }
    )  # the profile's float32 columns
    current = frame(n_cur, 1, **kwargs)
    current[c.TEXT_LENGTH_COLUMN] = current[c.TEXT_LENGTH_COLUMN] // 10  # ints with repeats
    for data in (reference, current):  # a third predicted label: chi-square in small slices
        data.loc[::5, c.PREDICTED_LABEL_COLUMN] = "neutral"
    res = slice_drift(reference, current, MANIFEST, min_rows=50)
    rmasks, cmasks = slice_masks(reference, MANIFEST), slice_masks(current, MANIFEST)
    methods = set()
    for name, result in res.items():
        expected = evidently_columns(reference, current, name, rmasks[name], cmasks[name])
        assert [col.column for col in result.columns] == [e.column for e in expected]
        for got, want in zip(result.columns, expected, strict=True):
            assert (got.method, got.drifted, got.threshold) == (
                want.method,
                want.drifted,
                want.threshold,
            ), got
            assert got.score == pytest.approx(want.score, rel=1e-9, abs=1e-12), got
            methods.add(got.method)
    assert methods >= (
        {"wasserstein", "jensenshannon"}
        if n_ref == 6000
        else {"wasserstein", "jensenshannon", "ks", "chisquare", "z"}
    )


def test_a_column_with_nan_is_tested_by_evidentlys_own_call() -> None:
    reference, current = frame(3000, 0), frame(5000, 1, shift_a=0.5)
    current.loc[::7, c.prob_column("neg")] = np.nan  # a label missing from some records
    res = slice_drift(reference, current, MANIFEST, min_rows=50)
    from monitoring.drift import slice_masks

    cm = slice_masks(current, MANIFEST)["a"]
    rm = slice_masks(reference, MANIFEST)["a"]
    want = {e.column: e for e in evidently_columns(reference, current, "a", rm, cm)}
    got = {col.column: col for col in res["a"].columns}
    key = c.prob_column("neg")
    assert got[key].method == want[key].method
    assert got[key].score == pytest.approx(want[key].score, nan_ok=True)
