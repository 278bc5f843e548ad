"""Fixtures shared by every test folder.

- `tiny_backbone_dir`: a randomly initialised 2-layer BERT (hidden 32) saved with the real
  all-MiniLM-L6-v2 tokenizer, so tests exercise real tokenisation on a model that runs in ms.
- `redis_server`: a real `redis-server` process on a free port (function-scoped: tests may stop
  and restart it); `redis_url` for a session-wide one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from slicewise.core.redis_server import LocalRedis


def legacy_fields(rec) -> dict[str, str]:
    """A `PredictionRecord` as services before the one-field entry logged it: one stream field
    per record field (the reader must still take these, e.g. during an upgrade).
    """
    out = {
        "id": rec.id,
        "ts": repr(rec.ts),
        "model_version": rec.model_version,
        "label": rec.label,
        "confidence": repr(float(rec.confidence)),
        "probabilities": json.dumps(rec.probabilities, separators=(",", ":")),
        "slices": json.dumps(rec.slices, separators=(",", ":")),
        "text_length": str(int(rec.text_length)),
    }
    if rec.text is not None:
        out["text"] = rec.text
    if rec.learned_slices:
        out["learned_slices"] = ",".join(rec.learned_slices)
    return out


TINY_BERT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from training.backbone import default_backbone_path

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(default_backbone_path()))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_redis() -> Iterator[LocalRedis]:
    """A Redis server of the test module's own (the outage tests stop and restart it)."""
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = LocalRedis().start()
    yield server.url
    server.stop()


# A tiny synthetic 3-class project: sentiment words decide the label, except inside the
# `negation` slice, where "not" flips positive and negative (a planted slice-specific rule).
WORDS = {
    "negative": ["bad", "awful", "hate", "terrible"],
    "neutral": ["table", "chair", "paper", "window"],
    "positive": ["good", "great", "love", "nice"],
}
FLIP = {"negative": "positive", "positive": "negative", "neutral": "neutral"}
# Three keyword labeling functions per class over the tiny vocabulary (the demo has 3-4 a class).
TINY_LFS = [
    {"name": f"lf_{label}_{word}", "keywords": [word], "label": label}
    for label, words in WORDS.items()
    for word in words[:3]
]


def true_label(text: str) -> str:
    """The tiny project's rule: the sentiment words' class, flipped after a leading "not"."""
    words = text.removeprefix("not ").split()
    base = next(label for label, ws in WORDS.items() if words[0] in ws)
    return FLIP[base] if text.startswith("not ") else base


def make_tiny_dataset(n: int = 600, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        base = str(rng.choice(list(WORDS)))
        text = " ".join(rng.choice(WORDS[base], 3))
        label = base
        if i % 4 == 0:
            text, label = "not " + text, FLIP[base]
        if i % 5 == 0:
            text += " ?"
        rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


def tiny_config_dict(backbone: Path, data: Path, work: Path) -> dict:
    return {
        "name": "tiny",
        "labels": ["negative", "neutral", "positive"],
        "dataset": {"source": "file", "path": str(data)},
        "backbone": {"name": "tiny-bert", "path": str(backbone), "max_length": 16},
        "slices": [
            {"name": "negation", "keywords": ["not"], "monitored": True},
            {"name": "question", "regex": r"\?", "monitored": True},
            {"name": "short", "word_count": {"max": 3}},
        ],
        "train": {
            "epochs": 60,
            "lr": 1e-2,
            "patience": 60,
            "seeds": [0],
            "cache_dir": str(work / "cache"),
            "checkpoint_dir": str(work / "checkpoints"),
        },
        "export": {"output_dir": str(work / "bundle")},
    }


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bentoml-home")
    os.environ["BENTOML_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_config(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from training.config import parse_config

    work = tmp_path_factory.mktemp("tiny-project")
    data = work / "data.csv"
    make_tiny_dataset().to_csv(data, index=False)
    return parse_config(tiny_config_dict(tiny_backbone_dir, data, work), "tiny")


@pytest.fixture(scope="session")
def tiny_prepared(tiny_config):
    from training.train import prepare_data

    return prepare_data(tiny_config, progress=False)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_config, tiny_prepared, bentoml_home: Path) -> Path:
    """A real exported bundle (MoA on the tiny BERT), registered in a temp BentoML store."""
    from training.export import export_bundle
    from training.train import train_model

    trained = train_model(tiny_config, "moa", seed=0, prepared=tiny_prepared, progress=False)
    return export_bundle(tiny_config, trained, tiny_prepared, register=True, progress=False).path
