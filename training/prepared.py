"""Prepared data: the project's dataset loaded, split, sliced and (in frozen mode) embedded.

Frozen mode embeds every split once with the frozen backbone (cached on disk by
`training.backbone.embed_texts`), so training a head takes seconds on CPU; finetune mode
keeps only the texts (`embed=False`) and tokenizes batches as it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.backbone import embed_texts
from training.config import ProjectConfig
from training.data import Splits, dataset_fingerprint, load_dataset, split_dataset
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

    Args:
        cfg: the project config (dataset, slices, backbone, `train.cache_dir`).
        progress: show the embedding progress bar.
        embed: embed every split with the frozen backbone (False: texts only, zero-width
            embeddings, for finetune mode and salience).

    Returns:
        The splits (`train`, `validation`, `test`, `reference`) as `EncodedSplit`s, the raw
        frames and the dataset fingerprint.

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
