"""Aggregated salience finds a planted shortcut (and does not flag the same word when it is
spread over every label); words are judged whole (tokenizer offsets), not as WordPieces."""

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
PLANT = "#banana"  # a hashtag: two WordPieces ('#', 'banana'), one word


def texts(n: int, seed: int, plant: str | None) -> pd.DataFrame:
    """`plant="positive"`: the plant in 80% of positive texts; `"everywhere"`: in 80% of all."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(rng.choice(LABELS))
        words = list(rng.choice(WORDS, 4))
        if plant in (label, "everywhere") and rng.random() < 0.8:
            words.insert(int(rng.integers(0, 4)), PLANT)
        rows.append({"text": " ".join(words) + ("?" if rng.random() < 0.2 else ""), "label": label})
    return pd.DataFrame(rows)


def run(tmp_path, tiny_backbone_dir, plant: str | None) -> dict:
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
    assert all(t in WORDS or t == PLANT for toks in sal.tokens for t in toks)  # whole words
    # held-out data: the plant spread over every label (when planted in training at all)
    evaluation = texts(300, 1, plant=None if plant is None else "everywhere")
    return aggregate(
        sal,
        cfg,
        tr.membership[sample],
        top=10,
        gold=tr.labels[sample],
        train_assoc=label_association(tr.texts, tr.labels, tok, 3),
        eval_assoc=label_association(
            evaluation["text"].tolist(),
            np.array([LABELS.index(x) for x in evaluation["label"]]),
            tok,
            3,
        ),
    )


def test_planted_token_is_top_salient_and_flagged(tmp_path, tiny_backbone_dir) -> None:
    report = run(tmp_path, tiny_backbone_dir, plant="positive")
    top = [r["token"] for r in report["top_tokens_by_label"]["positive"]]
    assert PLANT in top[:3], top
    assert PLANT in [r["token"] for r in report["top_tokens_by_gold_label"]["positive"]][:3]
    flags = {(f["token"], f["label"]): f["reasons"] for f in report["shortcuts"]}
    assert "hashtag" in flags[(PLANT, "positive")]
    assert any("only in training data" in r for r in flags[(PLANT, "positive")])
    assert not any(t in WORDS for t, _ in flags)  # plain words are no hashtag, handle or URL
    clusters = report["clusters"]
    assert clusters and sum(c["size"] for c in clusters) == 120
    assert all(0 <= c["accuracy"] <= 1 and set(c["slices"]) == {"question"} for c in clusters)
    sizes = np.array([c["size"] for c in clusters])
    accuracy = np.array([c["accuracy"] for c in clusters])
    assert np.isclose((sizes * accuracy).sum() / 120, report["accuracy"])
    assert set(report["top_tokens_by_outcome"]) == {"correct", "misclassified"}
    assert "question" in report["top_tokens_by_slice"]
    assert report["ig_completeness"]["mean_relative_error"] <= 0.05 or report["ig_completeness"][
        "steps"
    ] == {128: 120}


def test_a_word_on_every_label_is_not_flagged(tmp_path, tiny_backbone_dir) -> None:
    """The same word, planted in 80% of texts of every label: present and frequent, but no
    label association in either split, so it must not be flagged for any label."""
    report = run(tmp_path, tiny_backbone_dir, plant="everywhere")
    counts = [r["count"] for r in report["top_tokens_by_outcome"]["correct"] if r["token"] == PLANT]
    assert not counts or counts[0] >= 10  # present in the explained texts
    flagged = {(f["token"], f["label"]): f["reasons"] for f in report["shortcuts"]}
    for lab in LABELS:  # a hashtag it is; a label shortcut it is not
        assert all("only in training data" not in r for r in flagged.get((PLANT, lab), []))


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


def test_more_ig_steps_run_in_chunks_of_the_first_pass(tiny_config, tiny_bundle) -> None:
    """Doubling IG's steps (tolerance 0 forces it up to max_steps) must not grow the rows one
    forward pass takes: they stay at batch_size × n_steps. Before the fix a batch's texts ×
    steps ran at once, and make bench's salience run was OOM-killed at 23.7 GB."""
    from training.train import load_checkpoint

    _, trained = load_checkpoint(sorted(tiny_config.train.checkpoint_dir.glob("*.pt"))[-1])
    model = trained.model
    rows: list[int] = []
    hook = model.encoder.register_forward_pre_hook(
        lambda _m, args, kwargs: rows.append(
            int((args[0] if args else kwargs["input_ids"]).shape[0])
        ),
        with_kwargs=True,
    )
    try:
        sal = explain(
            model,
            load_tokenizer(tiny_config.backbone),
            ["a fine text", "not good at all", "what is this?"],
            16,
            n_steps=4,
            batch_size=3,
            max_steps=32,
            tolerance=0.0,
            progress=False,
        )
    finally:
        hook.remove()
    assert sal.steps == [32, 32, 32]  # the steps did double, up to max_steps
    assert max(rows) <= 3 * 4, rows
