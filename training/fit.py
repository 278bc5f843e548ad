"""The one training loop: mini-batches, AdamW steps, early stopping on validation macro-F1.

Every trainer uses `fit`: the frozen-embedding heads (`training.train.train_head`), end-to-end
finetuning (`training.finetune`) and the weak-supervision loop
(`training.weak.pipeline.interactive_loop`, fixed epochs with no validation). A trainer
supplies the loss of one batch of row indices and, for early stopping, a validation function;
`fit` owns the epoch order, the optimiser steps, the history and the restore of the best
epoch. `new_head` builds a head from the config's hyper-parameters.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from training.config import Kind, ProjectConfig
from training.model import SliceAwareHead

SCORE = "val_macro_f1"  # the early-stopping score `validate` returns


@dataclass
class FitResult:
    """How a `fit` run went: the epoch kept and what every epoch measured."""

    best_epoch: int
    best_score: float  # validation macro-F1 of `best_epoch`; -1 without validation
    history: list[dict[str, float]] = field(default_factory=list)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` threads in the block; the caller's setting comes back after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


SMALL_STEP = 10_000_000  # multiply-adds of a step below which a head trains on one thread


def head_threads(
    configured: int = 0, step_macs: float = float("inf"), sample_s: float = 0.2
) -> int:
    """Torch threads for training a head on frozen embeddings (`train.threads`).

    `configured` > 0 is taken as it is. 0 (auto): one thread for a step of fewer than
    `SMALL_STEP` multiply-adds (`step_macs`: small products, where handing work between threads
    costs more than it saves); otherwise every core this process may use while those cores are
    idle (measured over `sample_s`), one thread when other work holds them. Threads that wait
    for each other lose their turn on a busy machine. On the demo's SBL head (2 cores, batch
    512, 0.5G multiply-adds a step), a step took 47 ms on one thread and 28 on two with the
    cores idle; with two busy loops beside it, 76 ms on one and 145 on two. Results with one
    and two threads differ in the last float bits (the products split their sums differently).
    """
    if configured > 0:
        return configured
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == 1 or step_macs < SMALL_STEP:
        return 1
    import psutil

    busy = psutil.cpu_percent(interval=sample_s, percpu=True)  # per CPU of the machine
    idle = sum(100.0 - busy[c] for c in cores if c < len(busy)) / 100.0
    return len(cores) if idle >= len(cores) - 0.5 else 1


def set_seed(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a torch generator for the batch order.

    Args:
        seed: the run's seed.

    Returns:
        A CPU `torch.Generator` seeded with `seed`.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over all classes (absent classes count as 0 only if predicted)."""
    return float(
        f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0)
    )


def new_head(cfg: ProjectConfig, kind: Kind, d: int) -> SliceAwareHead:
    """A fresh head for this project.

    Args:
        cfg: project config (`labels`, `slices` and the head settings in `cfg.train`).
        kind: `baseline`, `sbl` or `moa`.
        d: width of the representation the head reads.

    Returns:
        An untrained `SliceAwareHead`.
    """
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


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    n: int,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    validate: Callable[[], dict[str, float]] | None = None,
    patience: int = 1,
    progress: bool = False,
    desc: str = "train",
    bar_per_batch: bool = False,
) -> FitResult:
    """Train `model` for up to `epochs` epochs, stopping early on validation macro-F1.

    Each epoch visits the `n` rows once in a random order (drawn from `generator`) in batches
    of `batch_size` and takes one optimiser step per batch. With `validate`, an epoch whose
    score does not beat the best one counts towards `patience`; once `patience` epochs
    passed since the best, training stops and the best epoch's weights are restored.

    Args:
        model: the module being trained (put in train mode each epoch, eval mode at the end).
        opt: its optimiser.
        batch_loss: the loss of one batch, given the batch's row indices (a CPU LongTensor).
        n: number of training rows.
        batch_size: rows per step.
        epochs: the most epochs to run.
        generator: the source of the batch order (`set_seed`).
        validate: called after each epoch; returns `{"val_macro_f1": ..., ...}` (every value
            is recorded in the history). None: no validation, no early stopping.
        patience: epochs without improvement before stopping.
        progress: show a progress bar.
        desc: the progress bar's label.
        bar_per_batch: one bar per epoch over its batches (long finetuning epochs) instead
            of one bar over the epochs.

    Returns:
        The best epoch, its score and the per-epoch history (`epoch`, `step`, `loss` and what
        `validate` returned).
    """
    steps_per_epoch = -(-n // batch_size)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()) if validate is not None else None)
    history: list[dict[str, float]] = []
    bar = tqdm(
        range(epochs),
        desc=desc,
        unit="epoch",
        disable=not progress or bar_per_batch,
        leave=False,
    )
    for epoch in bar:
        model.train()
        total = 0.0
        batches = torch.randperm(n, generator=generator).split(batch_size)
        if progress and bar_per_batch:
            batches = tqdm(batches, desc=f"{desc} epoch {epoch}", unit="batch")
        for idx in batches:
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        record = {"epoch": epoch, "step": (epoch + 1) * steps_per_epoch, "loss": total / n}
        if validate is None:
            history.append(record)
            continue
        record.update(validate())
        history.append(record)
        score = record[SCORE]
        bar.set_postfix(loss=f"{total / n:.3f}", val_f1=f"{score:.3f}")
        if score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience:
            break
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return FitResult(best[1], best[0], history)
