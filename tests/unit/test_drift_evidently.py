"""Our per-column drift verdicts against Evidently's own `DataDriftPreset` on random windows:
the claim "a column drifts exactly when DataDriftPreset would say so" (monitoring/drift.py)."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.drift import evidently_report, slice_drift
from tests.unit.test_drift import MANIFEST, frame

WINDOWS = 50


def evidently_verdicts(snapshot) -> tuple[dict[str, bool], float]:
    """Per column: drifted by the preset's own test and threshold; and the drifted share."""
    columns, share = {}, float("nan")
    for m in snapshot.dict()["metrics"]:
        cfg, value = m["config"], m["value"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            share = float(value["share"])
        elif cfg["type"].endswith("ValueDrift"):
            p_value = "p_value" in cfg["method"]
            columns[cfg["column"]] = (
                value < cfg["threshold"] if p_value else value >= cfg["threshold"]
            )
    return columns, share


@pytest.mark.slow
def test_column_verdicts_agree_with_data_drift_preset() -> None:
    rng = np.random.default_rng(0)
    agree = total = 0
    methods = set()
    for w in range(WINDOWS):  # sizes on both sides of Evidently's 1000-row switch of tests
        ref = frame(int(rng.integers(150, 1800)), seed=2 * w)
        cur = frame(
            int(rng.integers(150, 1800)),
            seed=2 * w + 1,
            shift_a=float(rng.choice([0.0, 0.0, 0.05, 0.15, 0.3])),
            shift_b_only=float(rng.choice([0.0, 0.1])),
        )
        ours = slice_drift(ref, cur, MANIFEST, min_rows=1)["all"]
        theirs, share = evidently_verdicts(evidently_report(ref, cur, MANIFEST))
        assert set(theirs) == {col.column for col in ours.columns}
        for col in ours.columns:
            methods.add(col.method)
            agree += col.drifted == theirs[col.column]
            total += 1
        assert (
            ours.drifted_share == pytest.approx(share) or abs(ours.drifted_share - share) <= 1 / 7
        )
    assert total >= WINDOWS * 7
    assert len(methods) >= 3  # K-S, Wasserstein and a categorical test were all exercised
    assert agree / total >= 0.99, f"{agree}/{total} column verdicts agree"
