"""`slicewise label`: LFs → (extended) label matrix → probabilistic labels → optionally a head."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
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

    def first(self, n: int) -> WeakLabels:
        """The labels of the first `n` rows (the points before the appended dev rows)."""
        return WeakLabels(self.probs[:n], self.covered[:n], self.L[:n], self.thresholds, self.stats)


def fit_label_model(cfg: ProjectConfig, L: np.ndarray) -> TripletLabelModel:
    """The triplet label model fitted on `L`, with the config's class balance when it has one.

    Args:
        cfg: project config (`labels`, `weak_supervision.class_balance`).
        L: label matrix `[N, m]` (ABSTAIN = -1).

    Returns:
        The fitted model (`predict_proba`, `balance`, `lf_accuracies`).

    Raises:
        LFError: too few LFs or votes to fit.
    """
    balance = cfg.weak_supervision.class_balance
    return TripletLabelModel(len(cfg.labels), None if balance is None else np.asarray(balance)).fit(
        L
    )


def weak_labels(
    cfg: ProjectConfig,
    L: np.ndarray,
    *,
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
    model = fit_label_model(cfg, L)
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
    *,
    embeddings: np.ndarray | None = None,
    dev_texts: list[str] | None = None,
    dev_gold: np.ndarray | None = None,
    dev_embeddings: np.ndarray | None = None,
) -> WeakLabels:
    """Probabilistic labels for `texts` (dev texts with gold labels tune the extension)."""
    L = apply_lfs(texts, cfg)
    if dev_texts is None:
        return weak_labels(cfg, L, embeddings=embeddings)
    L_all = np.concatenate([L, apply_lfs(dev_texts, cfg)])
    emb_all = (
        None
        if embeddings is None or dev_embeddings is None
        else np.concatenate([embeddings, dev_embeddings])
    )
    dev_idx = np.arange(len(texts), len(texts) + len(dev_texts))
    res = weak_labels(cfg, L_all, embeddings=emb_all, dev_gold=dev_gold, dev_idx=dev_idx)
    return res.first(len(texts))


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
    *,
    thresholds: float | list[float] = 0.9,
    dim: int = 64,
    max_voters: int = 1024,
    epochs: int = 4,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
) -> LoopResult:
    """Extend → fit → train the slice-aware head, fast enough to iterate on LFs (seconds).

    The same `SliceAwareHead`, `head_loss` and loop (`training.fit.fit`) as `train_head`,
    trained for a fixed number of epochs (no per-epoch validation) on the soft labels of the
    covered points, on the frozen embeddings projected to their top `dim` principal components
    (a fixed linear map that can be folded in front of the head). The extension searches at
    most `max_voters` voters per LF in bfloat16 with exact float32 similarities for the chosen
    neighbour.
    """
    import time

    import torch

    from training.fit import fit, new_head, torch_threads
    from training.model import head_loss

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
    model = fit_label_model(cfg, L_ext)
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
    with torch_threads(1):  # a tiny head: thread hand-offs cost more than they save
        fit(
            head,
            opt,
            lambda idx: head_loss(
                head(xs[idx], ms[idx].float()),
                ys[idx],
                ms[idx],
                cfg.train.lambda_ind,
                cfg.train.lambda_pred,
                slice_experts=head.kind != "baseline",
            ),
            n=len(xs),
            batch_size=batch_size,
            epochs=epochs,
            generator=gen,
        )
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


@dataclass
class LabelRun:
    """What `slicewise label` made and measured."""

    lf_table: Any  # pandas.DataFrame: per-LF coverage / overlaps / conflicts / accuracy
    labels: WeakLabels  # of the training split
    accuracy: float  # label accuracy on the covered training rows, against the gold labels
    path: Path  # the parquet file written
    head_macro_f1: float | None = None  # test macro-F1 of a head trained on the weak labels


def label_training_split(
    cfg: ProjectConfig,
    *,
    out: Path,
    extend: bool | None = None,
    train_head: bool = False,
) -> LabelRun:
    """Weakly label the training split; the validation split's gold labels tune the extension.

    Writes `out` (parquet: `text`, `p_<label>` per class, `covered`) atomically.

    Args:
        cfg: project config (LFs, `weak_supervision`).
        out: the parquet file for the probabilistic labels.
        extend: extend LF votes through the embedding space (Epoxy); default: the config's.
        train_head: also train `cfg.train.kind`'s head on the covered rows' weak labels and
            measure its test macro-F1.

    Returns:
        The LF table, the labels, their accuracy on covered rows, the file, the head's F1.

    Raises:
        LFError, DataError, SliceError: bad LFs or data.
    """
    from training.evaluate import head_slice_metrics
    from training.prepared import EncodedSplit, prepare_data
    from training.train import train_head as fit_head
    from training.weak.labeling import lf_analysis

    prepared = prepare_data(cfg)
    tr, va = prepared.splits["train"], prepared.splits["validation"]
    assert tr.texts is not None and va.texts is not None
    L = np.concatenate([apply_lfs(tr.texts, cfg), apply_lfs(va.texts, cfg)])
    table = lf_analysis(
        L[: len(tr)], [x.name for x in cfg.labeling_functions], cfg.labels, tr.labels
    )
    res = weak_labels(
        cfg,
        L,
        embeddings=np.concatenate([tr.embeddings, va.embeddings]),
        dev_gold=va.labels,
        dev_idx=np.arange(len(tr), len(tr) + len(va)),
        extend=extend,
    )
    labels = res.first(len(tr))
    probs, covered = labels.probs, labels.covered
    accuracy = float((probs[covered].argmax(1) == tr.labels[covered]).mean())
    _write_labels(out, tr.texts, probs, covered, cfg.labels)
    run = LabelRun(table, labels, accuracy, out)
    if train_head:
        weak = EncodedSplit(
            tr.embeddings[covered], probs[covered].astype(np.float32), tr.membership[covered]
        )
        head = fit_head(cfg, cfg.train.kind, weak, va).head
        metrics = head_slice_metrics(cfg, head, prepared.splits["test"])
        run.head_macro_f1 = metrics["overall"]["macro_f1"]
    return run


def _write_labels(
    out: Path, texts: list[str], probs: np.ndarray, covered: np.ndarray, label_names: list[str]
) -> None:
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(probs, columns=[f"p_{lab}" for lab in label_names])
    frame.insert(0, "text", texts)
    frame["covered"] = covered
    tmp = out.with_name(out.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(out)  # never a half-written labels file
