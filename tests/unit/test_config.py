"""Project config: the demo loads, and every bad field gets an error naming it and the fix."""

from __future__ import annotations

import pytest

from training.config import ConfigError, load_config, parse_config

BASE = {"labels": ["neg", "pos"]}

BAD = [
    ({"labels": ["a"]}, "labels: List should have at least 2 items"),
    ({"labels": ["a", "a"]}, "labels must be unique"),
    ({**BASE, "trian": {}}, "trian: unknown key; did you mean 'train'?"),
    ({**BASE, "train": {"epoch": 3}}, "train.epoch: unknown key; did you mean 'epochs'?"),
    ({**BASE, "train": {"mode": "fast"}}, "train.mode: Input should be 'frozen' or 'finetune'"),
    (
        {**BASE, "slices": [{"name": "x", "regex": "("}]},
        "slices.0: slicing rule 'x': invalid regular expression",
    ),
    ({**BASE, "slices": [{"name": "x"}]}, "must define exactly one of keywords, regex"),
    ({**BASE, "slices": [{"name": "x", "keywords": ["a"], "regex": "b"}]}, "(got keywords, regex)"),
    (
        {**BASE, "slices": [{"name": "Bad Name", "keywords": ["a"]}]},
        "slices.0.name: String should match",
    ),
    ({**BASE, "slices": [{"name": "base", "keywords": ["a"]}]}, "`base` is the always-on slice"),
    (
        {**BASE, "slices": [{"name": "x", "word_count": {"min": 5, "max": 2}}]},
        "range min=5 max=2 is empty",
    ),
    ({**BASE, "dataset": {"source": "file"}}, "set dataset.path"),
    ({**BASE, "dataset": {"split": {"train": 0.9}}}, "split fractions add up to 1.200"),
    (
        {**BASE, "labeling_functions": [{"name": "lf", "keywords": ["a"], "label": "meh"}]},
        "votes 'meh', which is not in labels",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD)
def test_bad_config_names_field_and_fix(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "p.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("p.yaml: ")


def test_demo_config_loads() -> None:
    cfg = load_config()
    assert cfg.labels == ["negative", "neutral", "positive"]
    assert set(cfg.monitored_slices) <= set(cfg.slice_names)
    assert cfg.slices[0].keywords is not None and "no" in cfg.slices[0].keywords  # not YAML `false`


def test_missing_and_invalid_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [a, b\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_relative_dataset_path_resolves_against_config_folder(tmp_path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("labels: [a, b]\ndataset: {source: file, path: data.csv}\n")
    assert load_config(f).dataset.path == tmp_path / "data.csv"
