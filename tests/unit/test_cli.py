"""The command line (slicewise/cli/): option types reject typos before any work, config
overrides are validated, and one handler turns every `SlicewiseError` into exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from slicewise.cli import app
from slicewise.core.errors import SlicewiseError
from slicewise.core.settings import ConfigError, MonitorConfig, override


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def no_data_prep(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any data preparation: a rejected option must stop before it."""
    import training.prepared

    calls: list[str] = []
    monkeypatch.setattr(training.prepared, "load_dataset", lambda cfg: calls.append("load"))
    return calls


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (["train", "--mode", "frozn"], ["frozen", "finetune"]),
        (["train", "--kind", "mao"], ["baseline", "sbl", "moa"]),
        (["commentary", "learn", "--kind", "lstm"], ["baseline", "sbl", "moa"]),
        (["salience", "--split", "dev"], ["train", "validation", "test"]),
    ],
)
def test_a_bad_choice_exits_2_naming_the_choices(args, choices, no_data_prep) -> None:
    res = _run(*args)
    assert res.exit_code == 2, res.output
    for choice in choices:
        assert choice in res.output
    assert no_data_prep == []


def test_evaluate_rejects_an_unknown_kind_before_data_prep(no_data_prep) -> None:
    res = _run("evaluate", "--kinds", "baseline,lstm")
    assert res.exit_code == 2
    assert res.output.startswith("error: command line: compare.1='lstm'")
    assert "'baseline', 'sbl' or 'moa'" in res.output
    assert no_data_prep == []


def test_monitor_option_is_validated_by_the_config_rules(tmp_path: Path) -> None:
    res = _run("monitor", "--window-size", "0", "--bundle", str(tmp_path), "--once")
    assert res.exit_code == 2
    assert "window_size=0" in res.output and "greater than 0" in res.output


def test_monitor_reads_the_config_section_and_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitoring.monitor

    seen: list[MonitorConfig] = []

    def start(settings, redis_url, bundle_dir, tag):
        seen.append(settings)
        raise SlicewiseError("stop here")  # the rest needs Redis and a bundle

    monkeypatch.setattr(monitoring.monitor, "start_monitor", start)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"labels": ["a", "b"], "monitor": {"min_rows": 7, "drift_share": 0.25, "port": 0}}
        )
    )
    res = _run("monitor", "--config", str(cfg), "--drift-share", "0.75", "--once")
    assert res.exit_code == 2 and "error: stop here" in res.output
    assert seen[0].min_rows == 7  # from the config
    assert seen[0].drift_share == 0.75  # the option wins
    assert seen[0].window_size == MonitorConfig().window_size  # the section's default


def test_one_handler_covers_nested_commands(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [a]\n")
    for args in (["commentary", "learn"], ["train"], ["monitor", "--once"], ["label"]):
        res = _run(*args, "--config", str(bad))
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: ") and "labels" in res.output, args


def test_override_validates_and_leaves_the_section_alone() -> None:
    base = MonitorConfig()
    new = override(base, "test", window_size=10, window_minutes=None)
    assert (new.window_size, base.window_size) == (10, 5000)
    assert new.window_minutes is None
    with pytest.raises(ConfigError, match=r"test: drift_share=2\.0: .*less than or equal to 1"):
        override(base, "test", drift_share=2.0)
    with pytest.raises(ConfigError, match="window_sise"):
        override(base, "test", window_sise=10)
