"""Epoxy (Chen, Fu et al. 2020): extend each LF's votes through the embedding space.

For LF `j` and a point where it abstains, find the nearest point (cosine similarity) among
those `j` voted on; if the similarity is at least `τ_j`, copy that vote. `τ_j` is tuned on a
labelled dev set: the smallest threshold whose extended votes are at least as accurate on dev
as the LF's own votes (most coverage without making the LF worse); 1.01 turns extension off.

Similarities are computed in chunks of points × chunks of voters, so an N × N matrix never
exists; `dim` optionally projects the embeddings onto their top principal components first,
and `max_voters` caps the voters searched per LF (a random sample), for speed. With
`low_precision=True` the search runs in bfloat16 (AMX / AVX-512 matrix units on CPUs that have
them, 2–4× faster here) and the similarity of the chosen neighbour is then recomputed in float32,
so thresholds compare exact cosines (the neighbour itself may differ from the float32 one on
near-ties).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.weak.labeling import ABSTAIN, LFError


def prepare_embeddings(emb: np.ndarray, dim: int | None = None) -> torch.Tensor:
    """L2-normalised float32 embeddings (optionally PCA-projected to `dim`).

    Raises:
        LFError: for NaN or infinite values (named by row).
    """
    x = np.asarray(emb, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise LFError(
            f"embeddings hold NaN or infinite values in {int(bad.sum())} rows (first: row {int(np.argmax(bad))})"
        )
    t = torch.from_numpy(x)
    if dim is not None and dim < t.shape[1]:
        centred = t - t.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=dim, center=False, niter=2)
        t = centred @ v
    return torch.nn.functional.normalize(t, dim=1)


@torch.inference_mode()
def nearest_votes(
    L: np.ndarray,
    emb: torch.Tensor,
    chunk: int = 4096,
    voter_chunk: int = 16384,
    max_voters: int | None = None,
    seed: int = 0,
    low_precision: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """For every point and LF: similarity to the nearest voter of that LF, and its vote.

    Returns `(sim [N, m], vote [N, m])`; where the LF itself votes, `sim = inf` and `vote` is
    its own vote; where it never votes, `sim = -inf`.
    """
    n, m = L.shape
    sim = np.full((n, m), -np.inf, dtype=np.float32)
    vote = np.full((n, m), ABSTAIN, dtype=np.int64)
    rng = np.random.default_rng(seed)
    search = emb.to(torch.bfloat16) if low_precision else emb
    for j in range(m):
        voters = np.flatnonzero(L[:, j] != ABSTAIN)
        if voters.size == 0:
            continue
        if max_voters is not None and voters.size > max_voters:
            voters = np.sort(rng.choice(voters, max_voters, replace=False))
        targets = np.flatnonzero(L[:, j] == ABSTAIN)
        blocks = [  # voter embeddings, transposed once per LF
            search[voters[v : v + voter_chunk]].T.contiguous()
            for v in range(0, voters.size, voter_chunk)
        ]
        for s in range(0, targets.size, chunk):
            rows = targets[s : s + chunk]
            best = torch.full((rows.size,), -float("inf"))
            arg = torch.zeros(rows.size, dtype=torch.long)
            queries = search[rows]
            for b, block in enumerate(blocks):
                top, idx = (queries @ block).max(1)
                top, v = top.float(), b * voter_chunk
                better = top > best
                best = torch.where(better, top, best)
                arg = torch.where(better, idx + v, arg)
            nearest = voters[arg.numpy()]
            if low_precision:  # exact cosine of the chosen neighbour
                best = (emb[rows] * emb[nearest]).sum(1)
            sim[rows, j] = best.numpy()
            vote[rows, j] = L[nearest, j]
        sim[L[:, j] != ABSTAIN, j] = np.inf
        vote[L[:, j] != ABSTAIN, j] = L[L[:, j] != ABSTAIN, j]
    return sim, vote


def extend_votes(
    L: np.ndarray, sim: np.ndarray, vote: np.ndarray, thresholds: Sequence[float]
) -> np.ndarray:
    """The extended label matrix: abstains replaced by the nearest voter's vote where `sim ≥ τ_j`."""
    take = sim >= np.asarray(thresholds, dtype=np.float32)[None, :]
    return np.where((L == ABSTAIN) & take, vote, L)


def tune_thresholds(
    L: np.ndarray,
    sim: np.ndarray,
    vote: np.ndarray,
    gold: np.ndarray,
    dev: np.ndarray,
    grid: Sequence[float],
) -> list[float]:
    """Per LF, the smallest `τ` in `grid` whose extended votes on the dev rows are at least as
    accurate as the LF's own votes there (1.01 = no extension when none qualifies).
    """
    out = []
    for j in range(L.shape[1]):
        own = dev[L[dev, j] != ABSTAIN]
        own_acc = float((L[own, j] == gold[own]).mean()) if own.size else 1.0
        chosen = 1.01
        for t in sorted(grid):
            new = dev[(L[dev, j] == ABSTAIN) & (sim[dev, j] >= t)]
            if new.size >= 5 and float((vote[new, j] == gold[new]).mean()) >= own_acc:
                chosen = float(t)
                break
        out.append(chosen)
    return out
