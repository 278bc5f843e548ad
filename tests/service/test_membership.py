"""Exact slice membership in the service (service/membership.py, service/responses.py): rule
slices are evaluated exactly, everything else keeps the learned score, and a rule the service
cannot use is named in one log line while serving goes on."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from service.membership import SliceMembership
from service.responses import decide, predictions
from slicewise.core import contracts as c

TEXTS = ["I do not like it", "is it ok?", "WOW what a day", "a boom", "plain words here ok"]
LABELS = ["negative", "neutral", "positive"]


def manifest(slices: list[dict], plugins: list[str] | None = None) -> c.Manifest:
    return c.Manifest(
        version="v1",
        created_at="now",
        labels=LABELS,
        slices=[c.SliceInfo(**s) for s in slices],
        max_length=16,
        backbone="tiny",
        plugins=plugins or [],
    )


RULE_SLICES = [
    {"name": "negation", "rule": {"keywords": ["not"]}, "membership": "rule", "threshold": 0.3},
    {"name": "question", "rule": {"regex": r"\?"}, "membership": "rule", "threshold": 0.3},
    {"name": "short", "rule": {"word_count": {"max": 3}}, "membership": "rule"},
    {
        "name": "shouting",
        "rule": {"function": "shouting"},
        "membership": "rule",
    },  # registered by the plugin
    {"name": "old", "threshold": 0.6},  # no definition: learned
]
# text:            0  1  2  3  4
EXACT = {
    "negation": [1, 0, 0, 0, 0],
    "question": [0, 1, 0, 0, 0],
    "short": [0, 1, 0, 1, 0],
    "shouting": [0, 0, 1, 0, 0],
}
SCORES = np.full((len(TEXTS), len(RULE_SLICES)), 0.45, dtype=np.float32)
SCORES[:, 4] = [0.7, 0.1, 0.6, 0.59, 0.2]


def test_rule_slices_are_exact_and_the_others_keep_the_learned_score() -> None:
    m = SliceMembership.from_manifest(manifest(RULE_SLICES, ["tests.service.slice_plugin"]))
    assert m.modes == {
        "negation": "rule",
        "question": "rule",
        "short": "rule",
        "shouting": "rule",
        "old": "learned",
    }
    member = m.apply(TEXTS, SCORES)
    for j, name in enumerate(EXACT):
        assert member[:, j].tolist() == EXACT[name], name
    np.testing.assert_array_equal(member[:, 4], SCORES[:, 4])
    active = m.active(member)
    # exact slices: 1 is in, 0 is out, whatever the threshold; learned: score >= threshold
    assert active[:, 0].tolist() == [True, False, False, False, False]
    assert active[:, 4].tolist() == [True, False, True, False, False]


def test_unimportable_plugin_leaves_the_slice_learned_with_one_log_line(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="slicewise.service")
    slices = [
        *RULE_SLICES[:3],
        {"name": "custom", "rule": {"function": "only_in_the_plugin"}, "membership": "rule"},
    ]
    m = SliceMembership.from_manifest(manifest(slices, ["no_such_plugin_xyz"]))
    assert m.modes == {"negation": "rule", "question": "rule", "short": "rule", "custom": "learned"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "'custom'" in lines[0] and "learned" in lines[0] and "no_such_plugin_xyz" in lines[0]
    member = m.apply(TEXTS, SCORES[:, :4])
    np.testing.assert_array_equal(member[:, 3], SCORES[:, 3])  # the learned score stands
    # the prediction log names it on every record, so the monitor knows
    assert m.fallback == ["custom"]
    _, failed = m.evaluate(TEXTS)
    assert m.learned_slices(failed) == [["custom"]] * len(TEXTS)


def test_a_rule_that_does_not_compile_in_the_service_stays_learned(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="slicewise.service")
    bad = [{"name": "broken", "rule": {"regex": "(unclosed"}, "membership": "rule"}]
    m = SliceMembership.from_manifest(manifest(bad))
    assert m.modes == {"broken": "learned"}
    assert "'broken'" in caplog.text and "invalid regular expression" in caplog.text


def test_rules_off_gives_every_slice_learned() -> None:
    m = SliceMembership.from_manifest(manifest(RULE_SLICES), evaluate_rules=False)
    assert set(m.modes.values()) == {"learned"}
    np.testing.assert_array_equal(m.apply(TEXTS, SCORES), SCORES)
    # every declared rule slice is a fallback; `old` never had a rule
    assert m.fallback == ["negation", "question", "short", "shouting"]


def test_a_raising_function_falls_back_per_text_and_logs_once(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="slicewise.service")
    rule = {"function": "tests.service.slice_plugin:explodes_on_boom"}
    m = SliceMembership.from_manifest(
        manifest([{"name": "starts_a", "rule": rule, "membership": "rule"}])
    )
    scores = np.full((len(TEXTS), 1), 0.3, dtype=np.float32)
    for _ in range(3):
        member = m.apply(TEXTS, scores)
    assert member[:, 0].tolist() == pytest.approx([0, 0, 0, 0.3, 0])  # text 3 raised
    assert len(caplog.records) == 1 and "'starts_a'" in caplog.text
    assert m.fallback == [] and m.learned_slices(m.evaluate(TEXTS)[1]) == [
        [],
        [],
        [],
        ["starts_a"],
        [],
    ]


def test_old_manifest_without_definitions_loads_learned() -> None:
    raw = {
        "version": "v0",
        "created_at": "then",
        "labels": LABELS,
        "slices": [{"name": "negation", "threshold": 0.4, "monitored": True}],
        "max_length": 16,
        "backbone": "tiny",
    }
    old = c.Manifest.model_validate(raw)
    assert old.slices[0].membership == "learned" and old.plugins == []
    assert SliceMembership.from_manifest(old).modes == {"negation": "learned"}


def test_rule_membership_without_a_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="'negation' has membership 'rule' but no rule"):
        c.SliceInfo(name="negation", membership="rule")


def test_predictions_carry_membership_scores_and_active_slices() -> None:
    man = manifest(RULE_SLICES, ["tests.service.slice_plugin"])
    m = SliceMembership.from_manifest(man)
    probs = np.tile(np.array([[0.2, 0.3, 0.5]], dtype=np.float32), (len(TEXTS), 1))
    outputs = {"probabilities": probs, "slice_membership": SCORES}
    outputs["slices"] = m.apply(TEXTS, SCORES)
    preds = predictions(decide(outputs, man, m.cuts))
    first = preds[0]
    assert first["slices"] == {
        "negation": 1.0,
        "question": 0.0,
        "short": 0.0,
        "shouting": 0.0,
        "old": pytest.approx(0.7),
    }
    assert first["slice_scores"]["negation"] == pytest.approx(0.45)
    assert first["active_slices"] == ["negation", "old"]
    assert preds[2]["active_slices"] == ["shouting", "old"]
    assert preds[3]["active_slices"] == ["short"]  # old: 0.59 < 0.6
