"""The per-slice promotion gate."""

from __future__ import annotations

import math

import pytest

from training.promotion import promotion_gate

PROD = {
    "overall": {"macro_f1": 0.80},
    "negation": {"macro_f1": 0.70},
    "question": {"macro_f1": 0.72},
}

CASES = [
    ({"overall": 0.801, "negation": 0.71, "question": 0.72}, True, []),
    (
        {"overall": 0.796, "negation": 0.70, "question": 0.72},
        True,
        [],
    ),  # overall -0.4 pt <= eps 0.5
    (
        {"overall": 0.790, "negation": 0.75, "question": 0.75},
        False,
        ["overall"],
    ),  # slices better, overall not
    (
        {"overall": 0.820, "negation": 0.68, "question": 0.72},
        False,
        ["negation"],
    ),  # one slice -2 pt > delta 1
    ({"overall": 0.820, "negation": 0.60, "question": 0.60}, False, ["negation", "question"]),
]


@pytest.mark.parametrize(("cand", "promote", "blocked"), CASES)
def test_gate(cand, promote, blocked) -> None:
    decision = promotion_gate(
        {k: {"macro_f1": v} for k, v in cand.items()},
        PROD,
        ["negation", "question"],
        max_overall_drop=0.005,
        max_slice_drop=0.01,
    )
    assert decision.promote is promote
    assert [r.split(":")[0] for r in decision.reasons if "drops" in r] == blocked
    assert decision.deltas["negation"] == pytest.approx(cand["negation"] - 0.70)


def test_unmeasurable_monitored_slice_blocks_promotion() -> None:
    cand = {
        "overall": {"macro_f1": 0.9},
        "negation": {"macro_f1": math.nan},
        "question": {"macro_f1": 0.9},
    }
    decision = promotion_gate(
        cand, PROD, ["negation", "question"], max_overall_drop=0.005, max_slice_drop=0.01
    )
    assert not decision.promote and "negation: no held-out rows" in decision.reasons[0]
