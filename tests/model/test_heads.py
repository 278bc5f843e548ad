"""The three heads: shapes, attention, loss terms, and learning a planted slice rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.model import KINDS, SliceAwareHead, head_loss
from training.train import EncodedSplit, predict_head, train_head


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_forward_shapes_and_attention_sums_to_one(kind: str, num_classes: int) -> None:
    torch.manual_seed(0)
    head = SliceAwareHead(16, num_classes, 3, kind).eval()
    out = head(torch.randn(7, 16))
    assert out.probabilities.shape == (7, num_classes)
    assert out.slice_membership.shape == (7, 3)
    assert out.attention.shape == (7, 4)
    experts = 1 if kind == "baseline" else 4  # the baseline is a plain head: `base` only
    assert out.slice_logits.shape == (7, experts, num_classes)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(7))
    torch.testing.assert_close(out.probabilities.sum(1), torch.ones(7))
    assert ((out.slice_membership > 0) & (out.slice_membership < 1)).all()


def test_baseline_attends_only_to_base_and_slice_kinds_spread() -> None:
    torch.manual_seed(0)
    h = torch.randn(5, 16)
    base = SliceAwareHead(16, 3, 2, "baseline").eval()(h).attention
    assert torch.equal(base, torch.tensor([[1.0, 0.0, 0.0]] * 5))
    for kind in ("sbl", "moa"):
        att = SliceAwareHead(16, 3, 2, kind).eval()(h).attention
        assert (att[:, 1:] > 0).all()


def test_loss_terms_hard_soft_and_weighted() -> None:
    torch.manual_seed(0)
    head = SliceAwareHead(8, 3, 2, "sbl")
    out = head(torch.randn(4, 8))
    y = torch.tensor([0, 1, 2, 0])
    m = torch.tensor([[1, 0], [0, 0], [1, 1], [0, 1]])
    ce_only = head_loss(out, y, m, lambda_ind=0, lambda_pred=0)
    torch.testing.assert_close(ce_only, torch.nn.functional.cross_entropy(out.logits, y))
    soft = torch.nn.functional.one_hot(y, 3).float()
    torch.testing.assert_close(head_loss(out, soft, m), head_loss(out, y, m))
    assert head_loss(out, y, m, lambda_ind=1) > ce_only
    assert head_loss(out, y, m, lambda_ind=0, lambda_pred=1) > ce_only
    # weights are normalised to mean 1 per class: uniform weights change nothing, nor do
    # weights that differ only between classes (a commentary never changes the class balance)
    torch.testing.assert_close(
        head_loss(out, y, m, sample_weight=torch.full((4,), 3.0)), head_loss(out, y, m)
    )
    per_class = torch.tensor([5.0, 1.0, 0.5, 2.0])[y]
    torch.testing.assert_close(head_loss(out, y, m, sample_weight=per_class), head_loss(out, y, m))
    assert not torch.isclose(
        head_loss(out, y, m, sample_weight=torch.tensor([1.0, 0, 0, 0])), head_loss(out, y, m)
    )
    # the baseline keeps a plain head: no per-slice predictor term
    torch.testing.assert_close(head_loss(out, y, m, lambda_ind=0, slice_experts=False), ce_only)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'mlp'"):
        SliceAwareHead(8, 3, 2, "mlp")  # type: ignore[arg-type]


def _planted(n: int, seed: int) -> EncodedSplit:
    """Label = sign of feature 0, flipped inside the slice (feature 1 > 0.8)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    in_slice = x[:, 1] > 0.8
    y = (x[:, 0] > 0).astype(np.int64)
    y[in_slice] = 1 - y[in_slice]
    return EncodedSplit(x, y, in_slice[:, None])


def test_slice_heads_learn_a_planted_slice_rule_better_than_baseline(tiny_config) -> None:
    """Mean over 3 seeds: one seed of MoA alone is noisy on this small problem."""
    cfg = tiny_config.model_copy(deep=True)
    cfg.labels = ["a", "b"]
    cfg.slices = cfg.slices[:1]
    cfg.train.epochs, cfg.train.lr, cfg.train.patience = 60, 1e-2, 15
    train, val, test = _planted(3000, 0), _planted(600, 1), _planted(2000, 2)
    inside = test.membership[:, 0]
    slice_acc = {}
    for kind in KINDS:
        accs = []
        for seed in (0, 1, 2):
            result = train_head(cfg, kind, train, val, seed=seed, progress=False)
            out = predict_head(result.head, test.embeddings)
            pred = out["probabilities"].argmax(1)
            accs.append((pred[inside] == test.labels[inside]).mean())
            assert (pred[~inside] == test.labels[~inside]).mean() > 0.9, kind
            # every kind's indicator head learns the slice
            assert ((out["slice_membership"][:, 0] >= 0.5) == inside).mean() > 0.9, kind
        slice_acc[kind] = float(np.mean(accs))
    for kind in ("sbl", "moa"):
        assert slice_acc[kind] > 0.86, slice_acc
        assert slice_acc[kind] > slice_acc["baseline"] + 0.02, slice_acc


def test_training_is_deterministic_per_seed(tiny_config, tiny_prepared) -> None:
    cfg = tiny_config.model_copy(deep=True)
    cfg.train.epochs = 3
    tr, va = tiny_prepared.splits["train"], tiny_prepared.splits["validation"]
    a = predict_head(train_head(cfg, "moa", tr, va, seed=3, progress=False).head, va.embeddings)
    b = predict_head(train_head(cfg, "moa", tr, va, seed=3, progress=False).head, va.embeddings)
    np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
