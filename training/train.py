"""Training: prepare the data once, then train heads (frozen) or backbone + head (finetune).

Frozen mode embeds every split once with the frozen backbone (cached on disk by
`training.backbone.embed_texts`) and trains only the head: seconds on CPU. Finetune mode
trains the backbone and head end to end on token batches. Both stop early on validation
macro-F1 and restore the best epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from slicewise.core.contracts import new_version
from training.backbone import embed_texts, load_encoder
from training.config import ProjectConfig
from training.data import Splits, dataset_fingerprint, load_dataset, split_dataset
from training.model import Kind, SliceAwareClassifier, SliceAwareHead, head_loss
from training.slices import require_members, slice_membership

SPLITS = ("train", "validation", "test", "reference")


@dataclass
class EncodedSplit:
    """One split as arrays: embeddings, labels (int or soft) and slice membership."""

    embeddings: np.ndarray  # [N, d] float32
    labels: np.ndarray  # [N] int or [N, C] float
    membership: np.ndarray  # [N, k] bool
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> EncodedSplit:
        """Rows `idx` of this split."""
        texts = None if self.texts is None else [self.texts[i] for i in idx]
        return EncodedSplit(self.embeddings[idx], self.labels[idx], self.membership[idx], texts)


@dataclass
class PreparedData:
    """The project's data, split, sliced and (in frozen mode) embedded."""

    cfg: ProjectConfig
    splits: dict[str, EncodedSplit]
    frames: Splits
    fingerprint: str

    @property
    def dim(self) -> int:
        """Embedding size d."""
        return int(self.splits["train"].embeddings.shape[1])


def label_ids(labels: Any, label_set: list[str]) -> np.ndarray:
    """Map label names to their index in `label_set`."""
    index = {name: i for i, name in enumerate(label_set)}
    return np.array([index[x] for x in labels], dtype=np.int64)


def prepare_data(cfg: ProjectConfig, progress: bool = True, embed: bool = True) -> PreparedData:
    """Load, split, slice and embed (cached) the project's data.

    Raises:
        DataError, SliceError: for bad data or slicing functions (one-line messages).
    """
    df = load_dataset(cfg)
    frames = split_dataset(df, cfg.dataset.split)
    splits = {}
    for name, frame in frames.items():
        texts = frame["text"].tolist()
        membership = slice_membership(texts, cfg)
        if name == "train":
            require_members(membership, cfg.slice_names, "the training data")
        emb = (
            embed_texts(
                cfg.backbone, texts, cfg.train.embed_batch_size, cfg.train.cache_dir, progress
            )
            if embed
            else np.zeros((len(texts), 0), np.float32)
        )
        splits[name] = EncodedSplit(emb, label_ids(frame["label"], cfg.labels), membership, texts)
    return PreparedData(cfg, splits, frames, dataset_fingerprint(df))


@dataclass
class TrainResult:
    """A trained head and how training went."""

    head: SliceAwareHead
    kind: Kind
    seed: int
    best_epoch: int
    val_macro_f1: float
    history: list[dict[str, float]] = field(default_factory=list)


def _set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over all classes (absent classes count as 0 only if predicted)."""
    return float(
        f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0)
    )


def new_head(cfg: ProjectConfig, kind: Kind, d: int) -> SliceAwareHead:
    """A fresh head for this project."""
    t = cfg.train
    return SliceAwareHead(
        d,
        len(cfg.labels),
        len(cfg.slices),
        kind,
        t.dropout,
        t.temperature,
        t.moa_attention_dim,
        t.membership,
    )


def train_head(
    cfg: ProjectConfig,
    kind: Kind,
    train: EncodedSplit,
    validation: EncodedSplit,
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
    """
    t = cfg.train
    gen = _set_seed(seed)
    head = new_head(cfg, kind, train.embeddings.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    x = torch.from_numpy(train.embeddings)
    y = torch.from_numpy(train.labels)
    m = torch.from_numpy(train.membership)
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    best = (-1.0, 0, copy.deepcopy(head.state_dict()))
    history: list[dict[str, float]] = []
    bar = tqdm(
        range(t.epochs),
        desc=f"train {kind} seed={seed}",
        unit="epoch",
        disable=not progress,
        leave=False,
    )
    for epoch in bar:
        head.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(t.batch_size):
            loss = head_loss(
                head(x[idx], m[idx].float()),
                y[idx],
                m[idx],
                t.lambda_ind,
                t.lambda_pred,
                None if w is None else w[idx],
                slice_experts=kind != "baseline",
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        val_probs = predict_head(head, validation.embeddings, validation.membership)[
            "probabilities"
        ]
        f1 = macro_f1(validation.labels, val_probs.argmax(1), len(cfg.labels))
        picked = val_probs[np.arange(len(val_probs)), validation.labels]
        val_loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
        history.append(
            {
                "epoch": epoch,
                "step": (epoch + 1) * -(-len(x) // t.batch_size),
                "loss": total / len(x),
                "val_loss": val_loss,
                "val_macro_f1": f1,
            }
        )
        bar.set_postfix(loss=f"{total / len(x):.3f}", val_f1=f"{f1:.3f}")
        if f1 > best[0]:
            best = (f1, epoch, copy.deepcopy(head.state_dict()))
        elif epoch - best[1] >= t.patience:
            break
    head.load_state_dict(best[2])
    head.eval()
    return TrainResult(head, kind, seed, best[1], best[0], history)


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


@dataclass
class TrainedModel:
    """A full classifier (backbone + head) ready to export, with its provenance."""

    model: SliceAwareClassifier
    kind: Kind
    seed: int
    mode: str
    version: str
    val_macro_f1: float
    best_epoch: int
    checkpoint: Path | None = None


def train_model(
    cfg: ProjectConfig,
    kind: Kind | None = None,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    prepared: PreparedData | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train the project's model (`cfg.train.kind` unless `kind` is given) and checkpoint it."""
    kind = kind or cfg.train.kind
    if cfg.train.mode == "frozen":
        prepared = prepared or prepare_data(cfg, progress)
        res = train_head(
            cfg,
            kind,
            prepared.splits["train"],
            prepared.splits["validation"],
            seed,
            sample_weight,
            progress,
        )
        model = SliceAwareClassifier(load_encoder(cfg.backbone), res.head).eval()
        trained = TrainedModel(
            model, kind, seed, "frozen", new_version(), res.val_macro_f1, res.best_epoch
        )
    else:
        from training.finetune import finetune

        prepared = prepared or prepare_data(cfg, progress, embed=False)
        trained = finetune(cfg, kind, prepared, seed, sample_weight, progress)
    trained.checkpoint = save_checkpoint(cfg, trained)
    return trained


def save_checkpoint(cfg: ProjectConfig, trained: TrainedModel) -> Path:
    """Save the classifier's state and what is needed to rebuild it."""
    path = Path(cfg.train.checkpoint_dir) / f"{cfg.name}-{trained.kind}-{trained.version}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "config": cfg.model_dump(mode="json"),
        "kind": trained.kind,
        "seed": trained.seed,
        "mode": trained.mode,
        "version": trained.version,
        "val_macro_f1": trained.val_macro_f1,
        "best_epoch": trained.best_epoch,
        "head": trained.model.head.state_dict(),
        "encoder": trained.model.encoder.state_dict() if trained.mode == "finetune" else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[ProjectConfig, TrainedModel]:
    """Rebuild a `TrainedModel` (and its config) from `save_checkpoint`'s file."""
    from training.config import ProjectConfig

    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, holds a dict
    query = state["head"].get("combiner.query.weight")
    if query is not None:  # checkpoints from before `moa_attention_dim` had 384-wide queries
        state["config"].setdefault("train", {})["moa_attention_dim"] = query.shape[0]
    cfg = ProjectConfig.model_validate(state["config"])
    encoder = load_encoder(cfg.backbone)
    if state["encoder"] is not None:
        encoder.load_state_dict(state["encoder"])
    head = new_head(cfg, state["kind"], encoder.config.hidden_size)
    head.load_state_dict(state["head"])
    model = SliceAwareClassifier(encoder, head).eval()
    return cfg, TrainedModel(
        model,
        state["kind"],
        state["seed"],
        state["mode"],
        state["version"],
        state["val_macro_f1"],
        state["best_epoch"],
        Path(path),
    )
