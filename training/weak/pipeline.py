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
            "class_balance_source": model.balance_source,
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


@dataclass
class LoopResult:
    """What the interactive loop made, with seconds per stage."""

    head: Any  # training.model.SliceAwareHead on the projected embeddings
    projection: (
        Any  # torch.Tensor: (mean [d], components [d, dim]); apply as (x - mean) @ components
    )
    labels: WeakLabels
    timings: dict[str, float]


def interactive_loop(
    cfg: ProjectConfig,
    L: np.ndarray,
    embeddings: np.ndarray,
    membership: np.ndarray,
    thresholds: float | list[float] = 0.9,
    dim: int = 64,
    max_voters: int = 1024,
    epochs: int = 4,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
) -> LoopResult:
    """Extend → fit → train the slice-aware head, fast enough to iterate on LFs (seconds).

    The same `SliceAwareHead` and `head_loss` as `train_head`, trained for a fixed number of
    epochs (no per-epoch validation) on the soft labels of the covered points, on the frozen
    embeddings projected to their top `dim` principal components (a fixed linear map that can
    be folded in front of the head). The extension searches at most `max_voters` voters per LF
    in bfloat16 with exact float32 similarities for the chosen neighbour.
    """
    import time

    import torch

    from training.train import new_head

    timings: dict[str, float] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    if not torch.isfinite(x).all():
        prepare_embeddings(embeddings)  # raises the named NaN error
    mean = x.mean(0)
    centred = x - mean
    sample = centred[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:8192]]
    _, vecs = torch.linalg.eigh(sample.T @ sample)  # PCA: d × d covariance of ≤ 8192 rows
    comps = vecs[:, -dim:].flip(1)
    z = centred @ comps
    scale = z.std(0).clamp_min(1e-6)
    timings["pca_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    taus = [thresholds] * L.shape[1] if isinstance(thresholds, float) else list(thresholds)
    active = [j for j, tau in enumerate(taus) if tau <= 1.0]  # τ > 1: extension off, skip
    L_ext = L
    if active:
        sim, vote = nearest_votes(
            L[:, active],
            torch.nn.functional.normalize(x, dim=1),  # the space the thresholds are tuned in
            max_voters=max_voters,
            low_precision=True,
        )
        L_ext = L.copy()
        L_ext[:, active] = extend_votes(L[:, active], sim, vote, [taus[j] for j in active])
    comps, z = comps / scale, z / scale  # whitened for the head: unit variance per component
    timings["extend_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ws = cfg.weak_supervision
    balance = None if ws.class_balance is None else np.asarray(ws.class_balance)
    model = TripletLabelModel(len(cfg.labels), balance).fit(L_ext)
    probs = model.predict_proba(L_ext)
    covered = (L_ext != ABSTAIN).any(1)
    timings["label_model_s"] = time.perf_counter() - t

    t = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = new_head(cfg, cfg.train.kind, dim)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)
    xs = z[torch.from_numpy(covered)]
    ys = torch.from_numpy(probs[covered].astype(np.float32))
    ms = torch.from_numpy(np.asarray(membership)[covered])
    head.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny head: thread hand-offs cost more than they save
    try:
        _train_epochs(head, opt, xs, ys, ms, cfg, epochs, batch_size, gen)
    finally:
        torch.set_num_threads(threads)
    head.eval()
    timings["head_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = (
        time.process_time() - cpu0
    )  # CPU seconds (both cores): wall ≫ cpu/2 = busy box
    labels = WeakLabels(
        probs,
        covered,
        L_ext,
        list(taus),
        {
            "coverage": float(covered.mean()),
            "class_balance": model.balance.tolist(),
            "class_balance_source": model.balance_source,
        },
    )
    return LoopResult(head, (mean, comps), labels, timings)


def _train_epochs(
    head: Any,
    opt: Any,
    xs: Any,
    ys: Any,
    ms: Any,
    cfg: ProjectConfig,
    epochs: int,
    batch_size: int,
    gen: Any,
) -> None:
    import torch

    from training.model import head_loss

    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(batch_size):
            loss = head_loss(
                head(xs[idx], ms[idx].float()),
                ys[idx],
                ms[idx],
                cfg.train.lambda_ind,
                cfg.train.lambda_pred,
                slice_experts=head.kind != "baseline",
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
