"""Checkpoint I/O: a trained classifier with the config and provenance needed to rebuild it.

A checkpoint is one `torch.save` file, `<checkpoint_dir>/<project>-<kind>-<version>.pt`,
holding the config (as JSON-able data), the head's state, the encoder's state in finetune
mode (frozen mode reloads the shipped backbone) and how training went.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from training.backbone import load_encoder
from training.config import Kind, ProjectConfig
from training.fit import new_head
from training.model import SliceAwareClassifier


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


def save_checkpoint(cfg: ProjectConfig, trained: TrainedModel) -> Path:
    """Save the classifier's state and what is needed to rebuild it.

    Args:
        cfg: the project config the model was trained with (stored in the file).
        trained: the model and its provenance.

    Returns:
        The checkpoint's path (written atomically: never a half-written file).
    """
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
    """Rebuild a `TrainedModel` (and its config) from `save_checkpoint`'s file.

    Args:
        path: the checkpoint file.

    Returns:
        The config stored in the checkpoint and the model in eval mode.
    """
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


def latest_checkpoint(cfg: ProjectConfig) -> Path | None:
    """The newest checkpoint of this project in `cfg.train.checkpoint_dir`, or None."""
    found = sorted(
        Path(cfg.train.checkpoint_dir).glob(f"{cfg.name}-*.pt"), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None
