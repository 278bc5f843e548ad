"""Commentaries: learned weights in (0, 1), down-weighting planted label noise; file checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.commentary import Commentary, CommentaryError, commentary_report, learn_commentary
from training.model import HeadOutput, head_loss
from training.train import EncodedSplit, PreparedData


def noisy_prepared(cfg, n: int = 1200, seed: int = 0) -> tuple[PreparedData, np.ndarray]:
    """Separable data; 30% of training labels flipped (the noise a commentary should learn to ignore)."""
    rng = np.random.default_rng(seed)

    def split(n: int, flip: float) -> tuple[EncodedSplit, np.ndarray]:
        x = rng.normal(size=(n, 16)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        noisy = rng.random(n) < flip
        y[noisy] = 1 - y[noisy]
        return EncodedSplit(x, y, x[:, 1:2] > 0.5), noisy

    tr, noisy = split(n, 0.3)
    va, _ = split(400, 0.0)
    return PreparedData(cfg, {"train": tr, "validation": va}, None, "fp-test"), noisy  # type: ignore[arg-type]


def test_learned_weights_downweight_noisy_labels(tiny_config, tmp_path) -> None:
    cfg = tiny_config.model_copy(deep=True)
    cfg.labels, cfg.slices = ["a", "b"], cfg.slices[:1]
    cfg.commentary.outer_steps, cfg.commentary.inner_steps = 25, 8
    cfg.commentary.spread_penalty = 0.02  # weaker than the default: a short run shows the signal
    prepared, noisy = noisy_prepared(cfg, n=800)
    com = learn_commentary(cfg, prepared, "sbl", seed=0, batch_size=128, progress=False)
    w = com.weights
    assert w.shape == (800,) and ((w > 0) & (w < 1)).all()
    assert w[noisy].mean() < w[~noisy].mean() - 0.05
    assert len(com.meta["val_loss_history"]) == cfg.commentary.outer_steps
    md = commentary_report(com, cfg, prepared, tmp_path)
    assert "| label a |" in md and (tmp_path / "commentary.png").exists()


def test_no_monitored_slice_and_the_stored_network_weighs_new_rows(tiny_config, tmp_path) -> None:
    """No monitored slice used to crash (TypeError on a float validation weight); the saved
    network gives weights to rows the commentary never saw (rows added at retrain time)."""
    cfg = tiny_config.model_copy(deep=True)
    cfg.labels, cfg.slices = ["a", "b"], cfg.slices[2:3]  # 'short': not monitored
    assert cfg.monitored_slices == []
    cfg.commentary.outer_steps, cfg.commentary.inner_steps = 25, 8
    cfg.commentary.spread_penalty = 0.02
    prepared, _ = noisy_prepared(cfg, n=800)
    com = learn_commentary(cfg, prepared, "sbl", seed=0, batch_size=128, progress=False)
    again = Commentary.load(com.save(tmp_path / "c.npz"), "fp-test", 800)
    tr = prepared.splits["train"]
    np.testing.assert_allclose(
        again.weights_for(tr.embeddings, tr.labels, tr.membership), com.weights, atol=1e-6
    )
    new, noisy = noisy_prepared(cfg, n=400, seed=5)
    added = new.splits["train"]
    w = again.weights_for(added.embeddings, added.labels, added.membership)
    assert w.shape == (400,) and ((w > 0) & (w < 1)).all()
    assert w[noisy].mean() < w[~noisy].mean() - 0.02  # the learned rule carries to new rows
    soft = np.eye(2, dtype=np.float32)[added.labels]  # weak rows come with soft labels
    np.testing.assert_allclose(again.weights_for(added.embeddings, soft, added.membership), w)
    with pytest.raises(CommentaryError, match="takes 16-d embeddings"):
        again.weights_for(added.embeddings[:, :8], added.labels, added.membership)
    with pytest.raises(CommentaryError, match="holds only weights, no network"):
        Commentary(com.weights, "fp-test", {}).weights_for(
            added.embeddings, added.labels, added.membership
        )


def test_commentary_file_round_trip_and_fingerprint_check(tmp_path) -> None:
    com = Commentary(np.array([0.2, 0.9], np.float32), "abc", {"kind": "sbl"})
    path = com.save(tmp_path / "c.npz")
    again = Commentary.load(path, "abc", 2)
    np.testing.assert_array_equal(again.weights, com.weights)
    with pytest.raises(CommentaryError, match="learned for dataset abc, not this dataset"):
        Commentary.load(path, "other")
    with pytest.raises(CommentaryError, match="has 2 weights for 3 training examples"):
        Commentary.load(path, "abc", 3)
    with pytest.raises(CommentaryError, match="does not exist"):
        Commentary.load(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(CommentaryError, match="is not a slicewise commentary file"):
        Commentary.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("device", ["cuda" if torch.cuda.is_available() else "meta"])
def test_weighted_loss_stays_on_the_inputs_device(device) -> None:
    """The per-class weight sums are built on the inputs' device: weighted finetuning on CUDA
    crashed on a CPU tensor. Without a GPU here, the `meta` device catches the same mistake."""
    b, c, k = 8, 3, 2
    out = HeadOutput(
        torch.randn(b, c, device=device),
        torch.randn(b, k + 1, device=device),
        torch.randn(b, k + 1, c, device=device),
        torch.rand(b, k + 1, device=device),
    )
    target = torch.arange(b, device=device) % c
    member = torch.zeros(b, k, device=device)
    loss = head_loss(out, target, member, sample_weight=torch.rand(b, device=device))
    assert loss.device.type == device and loss.shape == ()
