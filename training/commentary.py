"""Commentaries (Raghu et al., ICLR 2021): learned per-example weights for training.

A small commentary network maps (embedding, one-hot label, slice memberships, training progress)
to a weight in (0, 1). It is learned by differentiating the validation loss through unrolled
inner training runs of the slice-aware head on frozen embeddings: each outer step takes
`inner_steps` SGD steps on weighted training minibatches (the graph is kept,
`torch.func.functional_call`), measures the loss on a validation batch (monitored-slice rows
weighted by `1 + monitored_slice_weight`), and updates the commentary network by backprop.
Weights count within their class (`head_loss` normalises them per class), so a commentary
cannot drop a class; and the outer loss adds `spread_penalty · KL(uniform ‖ weights)`: without
it, short inner runs rewarded putting nearly all weight on a few examples (demo: mean weight
0.04, positive label 0.002; heads trained on those weights fell to 0.41 macro-F1).

Horizon: a fresh head for every outer step sees only the first `inner_steps` (20) steps of
training, while real training takes hundreds of AdamW steps (the short-horizon bias of
Wu et al. 2018). So the inner head is warm-started: it continues across outer steps for
`horizon` (400) inner steps before a fresh one, and each outer gradient flows through the last
`inner_steps` only (truncated backprop); the progress input runs over the whole horizon.
`horizon = inner_steps` restores a fresh head per outer step. What this changes on the demo is
measured in `bench/bench_commentary.py` (bench/results/commentary.md).

The saved file holds the learned weights of the training split (averaged over training progress
0..1, since a reused commentary feeds a static `sample_weight`), the dataset fingerprint, and
the commentary network itself: `Commentary.weights_for` weighs rows it never saw (rows added at
retrain time, soft-labelled weak rows included). `slicewise train --commentary PATH` reuses the
weights, in frozen and finetune mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from slicewise.core.errors import SlicewiseError
from training.config import Kind, ProjectConfig
from training.fit import new_head
from training.model import head_loss
from training.prepared import PreparedData


class CommentaryError(SlicewiseError, ValueError):
    """A commentary file is missing, malformed or belongs to another dataset."""


class CommentaryNet(nn.Module):
    """(h, one-hot y, slice membership, progress) → weight in (0, 1)."""

    def __init__(self, d: int, num_classes: int, num_slices: int, hidden: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Linear(d + num_classes + num_slices + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, 2.0)  # start near weight 0.88 for everyone

    def forward(
        self, h: torch.Tensor, y: torch.Tensor, member: torch.Tensor, progress: float
    ) -> torch.Tensor:
        """Weights `[B]`; `y` holds class indices `[B]` or soft labels `[B, C]`."""
        onehot = y.float() if y.dim() == 2 else nn.functional.one_hot(y, self.num_classes).float()
        t = torch.full((len(h), 1), float(progress))
        return torch.sigmoid(self.net(torch.cat([h, onehot, member.float(), t], dim=1))).squeeze(1)


PROGRESS_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # a static weight averages over training progress


@dataclass
class Commentary:
    """Learned weights for one dataset's training split, and the network that gives them."""

    weights: np.ndarray
    fingerprint: str
    meta: dict
    network: dict[str, np.ndarray] = field(default_factory=dict)  # CommentaryNet state

    def weights_for(
        self, embeddings: np.ndarray, labels: np.ndarray, membership: np.ndarray
    ) -> np.ndarray:
        """Weights in (0, 1) for any rows (e.g. ones added at retrain time), from the network.

        Args:
            embeddings: frozen embeddings `[N, d]`, from the backbone the commentary saw.
            labels: class indices `[N]` or soft labels `[N, C]`.
            membership: slice membership `[N, k]`.

        Raises:
            CommentaryError: the file holds no network (written before it was stored), or the
                shapes do not match the network's.
        """
        if not self.network:
            raise CommentaryError(
                "this commentary holds only weights, no network (learned before networks were "
                "stored); learn it again with `slicewise commentary learn`"
            )
        dims = self.meta["network_dims"]
        if embeddings.shape[1] != dims["d"] or membership.shape[1] != dims["num_slices"]:
            raise CommentaryError(
                f"the commentary network takes {dims['d']}-d embeddings and {dims['num_slices']} "
                f"slices; got {embeddings.shape[1]} and {membership.shape[1]}"
            )
        net = CommentaryNet(**dims)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in self.network.items()})
        return _average_weights(
            net, *(torch.from_numpy(np.asarray(a)) for a in (embeddings, labels, membership))
        )

    def save(self, path: str | Path) -> Path:
        """Write weights, network, fingerprint and metadata as one `.npz` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        net = {f"net.{k}": v for k, v in self.network.items()}
        np.savez(
            tmp,
            weights=self.weights,
            fingerprint=self.fingerprint,
            meta=json.dumps(self.meta),
            **net,
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, fingerprint: str | None = None, n: int | None = None
    ) -> Commentary:
        """Read a commentary; check it belongs to `fingerprint` and has `n` weights.

        Raises:
            CommentaryError: naming the file and the mismatch.
        """
        path = Path(path)
        if not path.is_file():
            raise CommentaryError(f"commentary file {path} does not exist")
        try:
            with np.load(path) as data:
                network = {k[4:]: data[k] for k in data.files if k.startswith("net.")}
                com = cls(
                    data["weights"],
                    str(data["fingerprint"]),
                    json.loads(str(data["meta"])),
                    network,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise CommentaryError(f"{path} is not a slicewise commentary file: {exc}") from exc
        if fingerprint is not None and com.fingerprint != fingerprint:
            raise CommentaryError(
                f"commentary {path} was learned for dataset {com.fingerprint}, not this dataset ({fingerprint}); "
                "learn a new one with `slicewise commentary learn`"
            )
        if n is not None and len(com.weights) != n:
            raise CommentaryError(
                f"commentary {path} has {len(com.weights)} weights for {n} training examples"
            )
        return com


def _average_weights(
    net: CommentaryNet, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor
) -> np.ndarray:
    with torch.no_grad():
        w = torch.stack([net(x, y, m, p) for p in PROGRESS_POINTS]).mean(0)
    return w.numpy().astype(np.float32)


def default_path(cfg: ProjectConfig, fingerprint: str) -> Path:
    """Next to the dataset file (or in the cache folder for the built-in demo)."""
    if cfg.dataset.source == "file" and cfg.dataset.path is not None:
        return Path(cfg.dataset.path).with_name(
            f"{Path(cfg.dataset.path).stem}.commentary-{fingerprint}.npz"
        )
    return Path(cfg.train.cache_dir) / f"{cfg.name}.commentary-{fingerprint}.npz"


def learn_commentary(
    cfg: ProjectConfig,
    prepared: PreparedData,
    kind: Kind = "sbl",
    seed: int = 0,
    batch_size: int = 256,
    inner_lr: float = 0.05,
    outer_lr: float = 1e-2,
    progress: bool = True,
) -> Commentary:
    """Learn a commentary network by backprop through unrolled inner training runs."""
    cc, t = cfg.commentary, cfg.train
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tr, va = prepared.splits["train"], prepared.splits["validation"]
    x, y, m = (torch.from_numpy(a) for a in (tr.embeddings, tr.labels, tr.membership))
    xv, yv, mv = (torch.from_numpy(a) for a in (va.embeddings, va.labels, va.membership))
    monitored = torch.tensor([s in cfg.monitored_slices for s in cfg.slice_names], dtype=torch.bool)
    val_weight = 1.0 + cc.monitored_slice_weight * mv[:, monitored].any(1).float()
    dims = {"d": x.shape[1], "num_classes": len(cfg.labels), "num_slices": len(cfg.slices)}
    comm = CommentaryNet(**dims)
    opt = torch.optim.Adam(comm.parameters(), lr=outer_lr)
    history = []
    horizon = max(cc.horizon, cc.inner_steps)
    done = horizon  # inner steps the current head has taken; start with a fresh head
    params: dict[str, torch.Tensor] = {}
    head = new_head(cfg, kind, x.shape[1]).train()
    for _step in tqdm(
        range(cc.outer_steps), desc="commentary", unit="outer step", disable=not progress
    ):
        if done + cc.inner_steps > horizon:  # a fresh head every `horizon` inner steps
            head = new_head(cfg, kind, x.shape[1]).train()
            params, done = {k: v.detach().clone() for k, v in head.named_parameters()}, 0
        # warm start: continue the head from where the last outer step left it (truncated
        # backprop through the last `inner_steps` steps only)
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        spread = torch.zeros(())
        for i in range(cc.inner_steps):
            idx = torch.randint(len(x), (batch_size,), generator=gen)
            w = comm(x[idx], y[idx], m[idx], (done + i) / max(1, horizon - 1))
            spread = spread - torch.log(w / w.mean()).mean() / cc.inner_steps  # KL(uniform ‖ w)
            out = functional_call(head, params, (x[idx], m[idx].float()))
            loss = head_loss(
                out, y[idx], m[idx], t.lambda_ind, t.lambda_pred, w, kind != "baseline"
            )
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {k: p - inner_lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
        done += cc.inner_steps
        vidx = torch.randint(len(xv), (min(1024, len(xv)),), generator=gen)
        logits = functional_call(head, params, (xv[vidx], mv[vidx].float())).logits
        ce = nn.functional.cross_entropy(logits, yv[vidx], reduction="none")
        val_loss = (ce * val_weight[vidx]).sum() / val_weight[vidx].sum()
        opt.zero_grad()
        (val_loss + cc.spread_penalty * spread).backward()
        opt.step()
        history.append(float(val_loss.detach()))
    return Commentary(
        _average_weights(comm, x, y, m),
        prepared.fingerprint,
        {
            "kind": kind,
            "seed": seed,
            "outer_steps": cc.outer_steps,
            "inner_steps": cc.inner_steps,
            "horizon": horizon,
            "monitored_slice_weight": cc.monitored_slice_weight,
            "val_loss_history": history,
            "network_dims": dims,
        },
        {k: v.detach().numpy().copy() for k, v in comm.state_dict().items()},
    )


def commentary_report(
    com: Commentary, cfg: ProjectConfig, prepared: PreparedData, out_dir: Path
) -> str:
    """Mean learned weight per slice and per label: markdown (returned and written) + PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = prepared.splits["train"]
    rows = [("all", com.weights.mean(), len(tr))]
    rows += [
        (f"label {lab}", com.weights[tr.labels == i].mean(), int((tr.labels == i).sum()))
        for i, lab in enumerate(cfg.labels)
    ]
    rows += [
        (f"slice {s}", com.weights[tr.membership[:, j]].mean(), int(tr.membership[:, j].sum()))
        for j, s in enumerate(cfg.slice_names)
        if tr.membership[:, j].any()
    ]
    md = "| group | examples | mean weight |\n|---|---:|---:|\n" + "\n".join(
        f"| {g} | {n} | {w:.3f} |" for g, w, n in rows
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "commentary.md").write_text(md + "\n")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1))
    ax.barh([g for g, _, _ in rows][::-1], [w for _, w, _ in rows][::-1], color="tab:purple")
    ax.set_xlabel("mean learned example weight")
    ax.set_xlim(0, 1)
    ax.set_title("commentary weights per label and slice")
    fig.tight_layout()
    fig.savefig(out_dir / "commentary.png", dpi=110)
    plt.close(fig)
    return md
