"""The per-slice promotion gate (docs/design.md §9): a candidate replaces production only if overall
macro-F1 drops by at most ε and no monitored slice drops by more than δ, on the same held-out
data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GateDecision:
    """Whether to promote, why, and every compared number."""

    promote: bool
    reasons: list[str]
    deltas: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"promote": self.promote, "reasons": self.reasons, "deltas": self.deltas}


def promotion_gate(
    candidate: dict[str, dict[str, float]],
    production: dict[str, dict[str, float]],
    monitored: list[str],
    max_overall_drop: float,
    max_slice_drop: float,
) -> GateDecision:
    """Compare per-slice macro-F1 tables (`training.evaluate.slice_metrics` output).

    A monitored slice missing from either table, or empty in the held-out data, blocks
    promotion: the gate cannot vouch for what it cannot measure.
    """
    reasons: list[str] = []
    deltas: dict[str, float] = {}
    for name in ["overall", *monitored]:
        cand, prod = candidate.get(name, {}), production.get(name, {})
        c_f1, p_f1 = cand.get("macro_f1", math.nan), prod.get("macro_f1", math.nan)
        if math.isnan(c_f1) or math.isnan(p_f1):
            reasons.append(f"{name}: no held-out rows to compare; not promoting")
            continue
        delta = c_f1 - p_f1
        deltas[name] = delta
        limit = max_overall_drop if name == "overall" else max_slice_drop
        if delta < -limit:
            reasons.append(
                f"{name}: macro-F1 {p_f1:.4f} -> {c_f1:.4f} drops {-delta:.4f} > {limit:.4f}"
            )
    return GateDecision(not reasons, reasons or ["every watched slice within its limit"], deltas)
