"""Training entry points: heads on frozen embeddings, or backbone + head (finetune).

Frozen mode trains only the head on the embeddings `training.prepared` computed once:
seconds on CPU. Finetune mode (`training.finetune`) trains the backbone and head end to end
on token batches. Both run the one loop in `training.fit` (early stopping on validation
macro-F1, best epoch restored); `train_model` checkpoints the result (`training.checkpoint`).

The data and checkpoint names are re-exported here, so `from training.train import
prepare_data, train_model, load_checkpoint` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from slicewise.core.contracts import new_version
from training.backbone import load_encoder
from training.checkpoint import TrainedModel, load_checkpoint, save_checkpoint
from training.config import Kind, ProjectConfig
from training.fit import fit, head_threads, macro_f1, new_head, set_seed, torch_threads
from training.model import SliceAwareClassifier, SliceAwareHead, head_loss
from training.prepared import SPLITS, EncodedSplit, PreparedData, label_ids, prepare_data

__all__ = [
    "SPLITS",
    "EncodedSplit",
    "PreparedData",
    "TrainResult",
    "TrainedModel",
    "label_ids",
    "load_checkpoint",
    "predict_head",
    "prepare_data",
    "save_checkpoint",
    "train_head",
    "train_model",
    "train_project",
]


@dataclass
class TrainResult:
    """A trained head and how training went."""

    head: SliceAwareHead
    kind: Kind
    seed: int
    best_epoch: int
    val_macro_f1: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_head(
    cfg: ProjectConfig,
    kind: Kind,
    train: EncodedSplit,
    validation: EncodedSplit,
    *,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a head on frozen embeddings; early stopping on validation macro-F1.

    Args:
        cfg: project config (hyper-parameters in `cfg.train`).
        kind: `baseline`, `sbl` or `moa`.
        train: training split; labels int `[N]` or soft `[N, C]`.
        validation: validation split with int labels.
        seed: makes the run deterministic.
        sample_weight: optional per-example weights `[N]` (learned commentaries).
        progress: show a progress bar.

    Returns:
        The head of the best epoch (eval mode), its validation macro-F1 and the history.
    """
    t = cfg.train
    gen = set_seed(seed)
    head = new_head(cfg, kind, train.embeddings.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    x = torch.from_numpy(train.embeddings)
    y = torch.from_numpy(train.labels)
    m = torch.from_numpy(train.membership)
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return head_loss(
            head(x[idx], m[idx].float()),
            y[idx],
            m[idx],
            t.lambda_ind,
            t.lambda_pred,
            None if w is None else w[idx],
            slice_experts=kind != "baseline",
        )

    def validate() -> dict[str, float]:
        val_probs = predict_head(head, validation.embeddings, validation.membership)[
            "probabilities"
        ]
        picked = val_probs[np.arange(len(val_probs)), validation.labels]
        return {
            "val_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
            "val_macro_f1": macro_f1(validation.labels, val_probs.argmax(1), len(cfg.labels)),
        }

    d, experts = train.embeddings.shape[1], train.membership.shape[1] + 1
    step_macs = min(t.batch_size, len(x)) * d * d * experts  # the slice experts' product
    with torch_threads(head_threads(t.threads, step_macs)):
        res = fit(
            head,
            opt,
            batch_loss,
            n=len(x),
            batch_size=t.batch_size,
            epochs=t.epochs,
            generator=gen,
            validate=validate,
            patience=t.patience,
            progress=progress,
            desc=f"train {kind} seed={seed}",
        )
    return TrainResult(head, kind, seed, res.best_epoch, res.best_score, res.history)


@torch.inference_mode()
def predict_head(
    head: SliceAwareHead,
    embeddings: np.ndarray,
    membership: np.ndarray | None = None,
    batch_size: int = 4096,
) -> dict[str, np.ndarray]:
    """`probabilities`, `slice_membership`, `slice_attention` for frozen embeddings.

    `membership` (the rules' `[N, k]` membership) is what a rules-membership head routes on.
    """
    rules = None if membership is None else torch.from_numpy(membership.astype(np.float32))
    was_training = head.training
    head.eval()
    outs: dict[str, list[np.ndarray]] = {
        "probabilities": [],
        "slice_membership": [],
        "slice_attention": [],
    }
    for start in range(0, len(embeddings), batch_size):
        o = head(
            torch.from_numpy(embeddings[start : start + batch_size]),
            None if rules is None else rules[start : start + batch_size],
        )
        outs["probabilities"].append(o.probabilities.numpy())
        outs["slice_membership"].append(o.slice_membership.numpy())
        outs["slice_attention"].append(o.attention.numpy())
    head.train(was_training)
    return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in outs.items()}


def train_model(
    cfg: ProjectConfig,
    kind: Kind | None = None,
    *,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    prepared: PreparedData | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train the project's model in `cfg.train.mode` and checkpoint it.

    Args:
        cfg: project config.
        kind: the head kind (default: `cfg.train.kind`).
        seed: makes the run deterministic.
        sample_weight: optional per-example weights of the training split (commentaries).
        prepared: the prepared data, when the caller already has it (else prepared here).
        progress: show progress bars.

    Returns:
        The classifier with its provenance and checkpoint path.
    """
    kind = kind or cfg.train.kind
    if cfg.train.mode == "frozen":
        prepared = prepared or prepare_data(cfg, progress)
        res = train_head(
            cfg,
            kind,
            prepared.splits["train"],
            prepared.splits["validation"],
            seed=seed,
            sample_weight=sample_weight,
            progress=progress,
        )
        model = SliceAwareClassifier(load_encoder(cfg.backbone), res.head).eval()
        trained = TrainedModel(
            model, kind, seed, "frozen", new_version(), res.val_macro_f1, res.best_epoch
        )
    else:
        from training.finetune import finetune

        prepared = prepared or prepare_data(cfg, progress, embed=False)
        trained = finetune(
            cfg, kind, prepared, seed=seed, sample_weight=sample_weight, progress=progress
        )
    trained.checkpoint = save_checkpoint(cfg, trained)
    return trained


def train_project(
    cfg: ProjectConfig, *, seed: int = 0, commentary: Path | None = None
) -> TrainedModel:
    """`slicewise train`: train `cfg.train.kind` in `cfg.train.mode`, optionally with learned
    example weights, and checkpoint it.

    Args:
        cfg: project config (command-line overrides already applied).
        seed: makes the run deterministic.
        commentary: a `.npz` from `slicewise commentary learn`; its weights must belong to
            this dataset (checked against the fingerprint and the training split's size).

    Returns:
        The trained classifier with its checkpoint path.

    Raises:
        CommentaryError: the weights belong to other data.
    """
    prepared, weights = None, None
    if commentary is not None:
        from training.commentary import Commentary

        prepared = prepare_data(cfg, embed=cfg.train.mode == "frozen")
        n = len(prepared.splits["train"])
        weights = Commentary.load(commentary, prepared.fingerprint, n).weights
    return train_model(cfg, seed=seed, sample_weight=weights, prepared=prepared)
