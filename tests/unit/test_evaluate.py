"""Per-slice metrics, aggregation over seeds, reports and the `evaluate` command (training/evaluate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training.config import ConfigError
from training.evaluate import (
    aggregate,
    evaluate_project,
    markdown_table,
    monitored_mean,
    slice_metrics,
    write_report,
)

LABELS = ["negative", "neutral", "positive"]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 0, 1])
Y_PRED = np.array([0, 1, 1, 1, 2, 0, 0, 2])
# columns: "first4" = rows 0-3, "empty" = no rows, "all" = every row
MEMBERSHIP = np.array([[i < 4, False, True] for i in range(8)])
NAMES = ["first4", "empty", "all"]

# Hand-computed. Overall: per-class F1 = 2/3, 2/3, 1/2.  first4: y=[0,0,1,1], p=[0,1,1,1]:
# F1 = 2/3 (negative), 4/5 (neutral), 0 (positive: absent; macro-F1 keeps every class of the
# label set so that slice numbers compare with overall ones).
EXPECTED = {
    "overall": {"accuracy": 5 / 8, "macro_f1": (2 / 3 + 2 / 3 + 1 / 2) / 3, "size": 8},
    "first4": {"accuracy": 3 / 4, "macro_f1": (2 / 3 + 4 / 5 + 0) / 3, "size": 4},
    "all": {"accuracy": 5 / 8, "macro_f1": (2 / 3 + 2 / 3 + 1 / 2) / 3, "size": 8},
}


def test_slice_metrics_match_hand_computed_values() -> None:
    got = slice_metrics(Y_TRUE, Y_PRED, MEMBERSHIP, NAMES, LABELS)
    assert list(got) == ["overall", *NAMES]
    for name, row in EXPECTED.items():
        assert got[name]["size"] == row["size"], name
        assert got[name]["accuracy"] == pytest.approx(row["accuracy"]), name
        assert got[name]["macro_f1"] == pytest.approx(row["macro_f1"]), name
    assert got["empty"]["size"] == 0 and np.isnan(got["empty"]["macro_f1"])


def run(f1: float, acc: float = 0.5) -> dict:
    return {
        "overall": {"accuracy": acc, "macro_f1": f1, "size": 10},
        "a": {"accuracy": acc, "macro_f1": f1 - 0.1, "size": 4},
        "b": {"accuracy": acc, "macro_f1": f1 - 0.3, "size": 3},
    }


def test_aggregate_gives_mean_and_population_std_over_seeds() -> None:
    agg = aggregate([run(0.8), run(0.6), run(0.7)])
    assert agg["overall"]["macro_f1"] == pytest.approx(0.7)
    assert agg["overall"]["macro_f1_std"] == pytest.approx(np.std([0.8, 0.6, 0.7]))
    assert agg["b"]["macro_f1"] == pytest.approx(0.4)
    assert agg["a"]["size"] == 4 and agg["a"]["accuracy_std"] == 0.0


def test_monitored_mean_averages_only_the_monitored_slices() -> None:
    assert monitored_mean(run(0.8), ["a", "b"]) == pytest.approx((0.7 + 0.5) / 2)
    assert monitored_mean(run(0.8), ["a", "missing"]) == pytest.approx(0.7)
    assert np.isnan(monitored_mean(run(0.8), []))


def result_for(kinds: dict[str, list[float]]) -> dict:
    out: dict = {"project": "p", "monitored": ["a"], "seeds": [0, 1], "kinds": {}, "summary": {}}
    for kind, f1s in kinds.items():
        runs = [run(f) for f in f1s]
        out["kinds"][kind] = {"seeds": runs, "mean": aggregate(runs)}
        mon = [monitored_mean(r, ["a"]) for r in runs]
        out["summary"][kind] = {
            "overall_macro_f1": float(np.mean(f1s)),
            "overall_macro_f1_std": float(np.std(f1s)),
            "monitored_macro_f1": float(np.mean(mon)),
            "monitored_macro_f1_std": float(np.std(mon)),
        }
    return out


def test_markdown_table_has_a_row_per_slice_and_marks_monitored() -> None:
    md = markdown_table(result_for({"baseline": [0.7, 0.7], "moa": [0.8, 0.6]}))
    lines = md.strip().splitlines()
    assert lines[0] == "| slice | size | baseline macro-F1 | moa macro-F1 |"
    assert "| a (monitored) | 4 | 0.6000 ± 0.0000 | 0.6000 ± 0.1000 |" in lines
    assert "| b | 3 | 0.4000 ± 0.0000 | 0.4000 ± 0.1000 |" in lines
    assert lines[-1].startswith("| **mean over monitored slices** |")


def test_write_report_writes_strict_json_markdown_and_png(tmp_path: Path) -> None:
    result = result_for({"baseline": [0.7, 0.72], "sbl": [0.75, 0.74]})
    result["kinds"]["sbl"]["mean"]["b"]["macro_f1"] = float("nan")  # a slice without rows
    write_report(result, tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["evaluation.json", "evaluation.md", "evaluation.png"]  # no temp folder left
    data = json.loads(
        (tmp_path / "out" / "evaluation.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"),
    )
    assert data["kinds"]["sbl"]["mean"]["b"]["macro_f1"] is None
    assert (tmp_path / "out" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kinds", "seeds", "match"),
    [(["baseline", "lstm"], [0], r"unknown kind\(s\) \['lstm'\]"), (["sbl"], [], "no seeds")],
)
def test_evaluate_project_rejects_bad_kinds_and_seeds(tiny_config, kinds, seeds, match) -> None:
    with pytest.raises(ConfigError, match=match):
        evaluate_project(tiny_config, kinds, seeds, "unused", prepared=object())


@pytest.mark.slow
def test_evaluate_project_trains_each_kind_per_seed_on_the_tiny_project(
    tiny_config, tiny_prepared, tmp_path: Path
) -> None:
    cfg = tiny_config.model_copy(deep=True)
    cfg.train.epochs = 8  # bookkeeping test; learning is tested in tests/model
    result = evaluate_project(
        cfg, ["baseline", "sbl"], [0, 1], tmp_path, prepared=tiny_prepared, progress=False
    )
    n_test = len(tiny_prepared.splits["test"])
    assert set(result["kinds"]) == {"baseline", "sbl"}
    for kind in ("baseline", "sbl"):
        runs = result["kinds"][kind]["seeds"]
        assert len(runs) == 2
        assert runs[0]["overall"]["size"] == n_test
        mean = result["kinds"][kind]["mean"]["overall"]["macro_f1"]
        assert mean == pytest.approx(np.mean([r["overall"]["macro_f1"] for r in runs]))
        assert result["summary"][kind]["monitored_macro_f1"] == pytest.approx(
            np.mean([monitored_mean(r, ["negation", "question"]) for r in runs])
        )
        neg = [r["negation"] for r in runs]
        assert all(
            r["size"] == int(tiny_prepared.splits["test"].membership[:, 0].sum()) for r in neg
        )
        assert 0.0 <= min(r["macro_f1"] for r in neg) <= max(r["macro_f1"] for r in neg) <= 1.0
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    for kind in ("baseline", "sbl"):
        assert saved["summary"][kind] == pytest.approx(result["summary"][kind])
    assert "negation (monitored)" in (tmp_path / "evaluation.md").read_text()


def test_evaluate_command_exits_2_with_a_one_line_message(tmp_path: Path) -> None:
    from slicewise.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [a, b]\ndataset: {source: file, path: missing.csv}\n")
    res = CliRunner().invoke(app, ["evaluate", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "missing.csv" in res.output and "does not exist" in res.output
    assert not (tmp_path / "o").exists()
