"""`slicewise label`: LFs → (extended) label matrix → probabilistic labels → optionally a head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.config import ProjectConfig
from training.weak.epoxy import extend_votes, nearest_votes, prepare_embeddings, tune_thresholds
from training.weak.label_model import TripletLabelModel
from training.weak.labeling import ABSTAIN, apply_lfs


@dataclass
class WeakLabels:
    """Probabilistic labels for a set of texts and how they were made."""

    probs: np.ndarray  # [N, C]
    covered: np.ndarray  # [N] bool: some (extended) LF voted
    L: np.ndarray  # the label matrix used (extended when extension is on)
    thresholds: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def weak_labels(
    cfg: ProjectConfig,
    L: np.ndarray,
    embeddings: np.ndarray | None = None,
    dev_gold: np.ndarray | None = None,
    dev_idx: np.ndarray | None = None,
    extend: bool | None = None,
) -> WeakLabels:
    """Extend (when embeddings are given and extension is on), fit the label model, label.

    Args:
        cfg: project config (labels, `weak_supervision` settings).
        L: label matrix `[N, m]` of every point (the dev rows included).
        embeddings: frozen embeddings `[N, d]` for the Epoxy extension.
        dev_gold: gold class indices of the dev rows (for tuning the thresholds).
        dev_idx: row indices of the dev points in `L`.
        extend: override `cfg.weak_supervision.extend`.
    """
    ws = cfg.weak_supervision
    extend = ws.extend if extend is None else extend
    thresholds: list[float] = []
    if extend and embeddings is not None:
        sim, vote = nearest_votes(L, prepare_embeddings(embeddings))
        if dev_gold is not None and dev_idx is not None:
            gold = np.full(len(L), ABSTAIN)
            gold[dev_idx] = dev_gold
            thresholds = tune_thresholds(L, sim, vote, gold, dev_idx, ws.threshold_grid)
        else:
            thresholds = [0.9] * L.shape[1]
        L = extend_votes(L, sim, vote, thresholds)
    balance = None if ws.class_balance is None else np.asarray(ws.class_balance)
    model = TripletLabelModel(len(cfg.labels), balance).fit(L)
    covered = (L != ABSTAIN).any(1)
    return WeakLabels(
        model.predict_proba(L),
        covered,
        L,
        thresholds,
        {
            "coverage": float(covered.mean()),
            "class_balance": model.balance.tolist(),
            "lf_accuracy": model.lf_accuracies(L).tolist(),
        },
    )


def label_texts(
    cfg: ProjectConfig,
    texts: list[str],
    embeddings: np.ndarray | None = None,
    dev_texts: list[str] | None = None,
    dev_gold: np.ndarray | None = None,
    dev_embeddings: np.ndarray | None = None,
) -> WeakLabels:
    """Probabilistic labels for `texts` (dev texts with gold labels tune the extension)."""
    L = apply_lfs(texts, cfg)
    if dev_texts is None:
        return weak_labels(cfg, L, embeddings)
    L_all = np.concatenate([L, apply_lfs(dev_texts, cfg)])
    emb_all = (
        None
        if embeddings is None or dev_embeddings is None
        else np.concatenate([embeddings, dev_embeddings])
    )
    dev_idx = np.arange(len(texts), len(texts) + len(dev_texts))
    res = weak_labels(cfg, L_all, emb_all, dev_gold, dev_idx)
    n = len(texts)
    return WeakLabels(res.probs[:n], res.covered[:n], res.L[:n], res.thresholds, res.stats)
