"""Aggregated salience finds a planted shortcut (and does not report it without the plant)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.backbone import load_tokenizer
from training.config import parse_config
from training.salience import SalienceError, aggregate, explain, label_association
from training.train import prepare_data, train_model

WORDS = [
    "table",
    "chair",
    "window",
    "paper",
    "door",
    "river",
    "stone",
    "cloud",
    "glass",
    "road",
    "tree",
    "wall",
]
LABELS = ["negative", "neutral", "positive"]
PLANT = "banana"


def texts(n: int, seed: int, plant: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(rng.choice(LABELS))
        words = list(rng.choice(WORDS, 4))
        if plant and label == "positive" and rng.random() < 0.8:
            words.insert(int(rng.integers(0, 4)), PLANT)
        rows.append({"text": " ".join(words) + ("?" if rng.random() < 0.2 else ""), "label": label})
    return pd.DataFrame(rows)


def run(tmp_path, tiny_backbone_dir, plant: bool) -> dict:
    data = tmp_path / "d.csv"
    texts(600, 0, plant).to_csv(data, index=False)
    cfg = parse_config(
        {
            "name": "plant",
            "labels": LABELS,
            "dataset": {"source": "file", "path": str(data)},
            "backbone": {"path": str(tiny_backbone_dir), "max_length": 16},
            "slices": [{"name": "question", "regex": r"\?"}],
            "train": {
                "epochs": 60,
                "lr": 1e-2,
                "patience": 60,
                "cache_dir": str(tmp_path / "c"),
                "checkpoint_dir": str(tmp_path / "k"),
            },
        }
    )
    prepared = prepare_data(cfg, progress=False)
    model = train_model(cfg, "sbl", prepared=prepared, progress=False).model
    tok = load_tokenizer(cfg.backbone)
    tr = prepared.splits["train"]
    sample = list(range(120))
    sal = explain(model, tok, [tr.texts[i] for i in sample], 16, n_steps=8, progress=False)
    evaluation = texts(300, 1, plant=False)  # held-out data without the plant
    return aggregate(
        sal,
        cfg,
        tr.membership[sample],
        top=10,
        train_assoc=label_association(tr.texts, tr.labels, tok, 3),
        eval_assoc=label_association(
            evaluation["text"].tolist(),
            np.array([LABELS.index(x) for x in evaluation["label"]]),
            tok,
            3,
        ),
    )


def test_planted_token_is_top_salient_and_flagged(tmp_path, tiny_backbone_dir) -> None:
    report = run(tmp_path, tiny_backbone_dir, plant=True)
    top = [r["token"] for r in report["top_tokens_by_label"]["positive"]]
    assert PLANT in top[:3], top
    flags = {(f["token"], f["label"]): f["reasons"] for f in report["shortcuts"]}
    assert any("only in training data" in r for r in flags[(PLANT, "positive")])
    assert report["clusters"] and sum(c["size"] for c in report["clusters"]) == 120
    assert "question" in report["top_tokens_by_slice"]


def test_without_the_plant_it_does_not_appear(tmp_path, tiny_backbone_dir) -> None:
    report = run(tmp_path, tiny_backbone_dir, plant=False)
    tokens = {r["token"] for rows in report["top_tokens_by_label"].values() for r in rows}
    assert PLANT not in tokens and all(f["token"] != PLANT for f in report["shortcuts"])


def test_text_that_tokenises_to_nothing_is_an_error(tiny_config, tiny_bundle) -> None:
    from training.train import load_checkpoint

    ckpt = sorted(
        tiny_config.train.checkpoint_dir.glob("*.pt")
    )  # written by the tiny_bundle fixture
    _, trained = load_checkpoint(ckpt[-1])
    with pytest.raises(SalienceError, match=r"text 1 .* tokenises to nothing"):
        explain(
            trained.model,
            load_tokenizer(tiny_config.backbone),
            ["fine text", "   "],
            16,
            n_steps=2,
            progress=False,
        )
