"""The drift monitor picks exactly the stat test Evidently's default rules pick."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.core import ColumnType

from monitoring.drift import default_stattest


def series(kind: str, n: int, rng: np.random.Generator, values: int) -> pd.Series:
    if kind == "continuous":
        return pd.Series(rng.normal(size=n))
    pool = [f"v{i}" for i in range(values)] if kind == "categorical" else list(range(values))
    return pd.Series(rng.choice(pool, n))


@pytest.mark.parametrize("ref_rows", [300, 1000, 1001, 4000])
@pytest.mark.parametrize(
    ("kind", "ref_values", "cur_values"),
    [
        ("continuous", 0, 0),
        ("few", 1, 1),
        ("few", 2, 2),
        ("few", 2, 3),  # the current window brings a third value: the union decides
        ("few", 5, 6),
        ("few", 6, 2),
        ("categorical", 2, 2),
        ("categorical", 2, 4),
        ("categorical", 7, 7),
    ],
)
def test_same_test_as_evidently(ref_rows, kind, ref_values, cur_values) -> None:
    rng = np.random.default_rng(ref_rows + ref_values)
    ref = series(kind, ref_rows, rng, ref_values)
    cur = series(kind, 5000, rng, cur_values)
    col = ColumnType.Categorical if kind == "categorical" else ColumnType.Numerical
    assert default_stattest(ref, cur, col) is get_stattest(ref, cur, col, None)
