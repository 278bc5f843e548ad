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

`EpoxyClassifier` is the paper's use of it as a classifier with no training: an unseen point's
LF votes are extended from its nearest *training* voters per LF and the label model fitted on
the extended training matrix gives its label distribution (points no LF reaches get the class
balance). How it compares with a trained head: bench/bench_epoxy.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.weak.label_model import TripletLabelModel
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
    voters: tuple[np.ndarray, torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For every point and LF: similarity to the nearest voter of that LF, and its vote.

    `voters` = `(L_v, emb_v)` searches other points' votes (e.g. unseen points against the
    training set); by default the points' own. Returns `(sim [N, m], vote [N, m])`; where the
    LF itself votes, `sim = inf` and `vote` is its own vote; where it never votes, `sim = -inf`.
    """
    L_v, emb_v = (L, emb) if voters is None else voters
    n, m = L.shape
    sim = np.full((n, m), -np.inf, dtype=np.float32)
    vote = np.full((n, m), ABSTAIN, dtype=np.int64)
    rng = np.random.default_rng(seed)
    search = emb.to(torch.bfloat16) if low_precision else emb
    search_v = emb_v.to(torch.bfloat16) if low_precision else emb_v
    for j in range(m):
        who = np.flatnonzero(L_v[:, j] != ABSTAIN)
        if who.size == 0:
            continue
        if max_voters is not None and who.size > max_voters:
            who = np.sort(rng.choice(who, max_voters, replace=False))
        targets = np.flatnonzero(L[:, j] == ABSTAIN)
        blocks = [  # voter embeddings, transposed once per LF
            search_v[who[v : v + voter_chunk]].T.contiguous()
            for v in range(0, who.size, voter_chunk)
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
            nearest = who[arg.numpy()]
            if low_precision:  # exact cosine of the chosen neighbour
                best = (emb[rows] * emb_v[nearest]).sum(1)
            sim[rows, j] = best.numpy()
            vote[rows, j] = L_v[nearest, j]
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


@dataclass
class EpoxyClassifier:
    """Extended LF votes + the label model as a classifier for unseen points, no training."""

    votes: np.ndarray  # [N, m] the training points' own LF votes: the voters
    embeddings: torch.Tensor  # their prepared (normalised) embeddings
    thresholds: list[float]
    model: TripletLabelModel  # fitted on the extended training matrix

    @classmethod
    def fit(
        cls,
        L: np.ndarray,
        embeddings: np.ndarray,
        num_classes: int,
        thresholds: Sequence[float],
        class_balance: np.ndarray | None = None,
        lf_names: Sequence[str] | None = None,
    ) -> EpoxyClassifier:
        """Extend the training votes with `thresholds` and fit the label model on them.

        Args:
            L: the training points' label matrix `[N, m]`.
            embeddings: their frozen embeddings `[N, d]`.
            num_classes: number of classes.
            thresholds: per-LF similarity thresholds (`tune_thresholds`).
            class_balance: the class balance when known.
            lf_names: LF names, for the label model's warnings.
        """
        emb = prepare_embeddings(embeddings)
        sim, vote = nearest_votes(L, emb)
        extended = extend_votes(L, sim, vote, thresholds)
        model = TripletLabelModel(num_classes, class_balance).fit(extended, lf_names)
        return cls(np.asarray(L), emb, list(thresholds), model)

    def extend(self, L: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Unseen points' label matrix, abstains filled from their nearest training voters."""
        if L.shape[1] != self.votes.shape[1]:
            raise LFError(
                f"{L.shape[1]} LFs voted; the classifier was fitted on {self.votes.shape[1]}"
            )
        sim, vote = nearest_votes(
            L, prepare_embeddings(embeddings), voters=(self.votes, self.embeddings)
        )
        return extend_votes(L, sim, vote, self.thresholds)

    def predict_proba(self, L: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(probabilities [n, C], covered [n])` for unseen points from their LF votes and
        embeddings; uncovered points (no vote even after extension) get the class balance.
        """
        extended = self.extend(L, embeddings)
        return self.model.predict_proba(extended), (extended != ABSTAIN).any(1)


@dataclass
class ExtensionChoice:
    """Whether extended votes label better than the LFs alone, judged on a validation split."""

    classifier: EpoxyClassifier | None  # None: the extension did not help on validation
    validation_macro_f1: dict[str, float]  # "lfs only" and "extended"
    thresholds: list[float]


def choose_extension(
    L_train: np.ndarray,
    train_embeddings: np.ndarray,
    L_val: np.ndarray,
    val_embeddings: np.ndarray,
    val_gold: np.ndarray,
    num_classes: int,
    grid: Sequence[float],
    class_balance: np.ndarray | None = None,
) -> ExtensionChoice:
    """Tune thresholds on the validation rows, then keep the extension only if its labels beat
    the LFs' own on validation (macro-F1 over every row; an unreached row gets the balance).
    """
    from sklearn.metrics import f1_score

    L_all = np.concatenate([L_train, L_val])
    emb_all = prepare_embeddings(np.concatenate([train_embeddings, val_embeddings]))
    sim, vote = nearest_votes(L_all, emb_all)
    gold = np.concatenate([np.full(len(L_train), ABSTAIN), val_gold])
    dev = np.arange(len(L_train), len(L_all))
    thresholds = tune_thresholds(L_all, sim, vote, gold, dev, grid)
    clf = EpoxyClassifier.fit(L_train, train_embeddings, num_classes, thresholds, class_balance)
    plain = TripletLabelModel(num_classes, class_balance).fit(L_train)

    def f1(probs: np.ndarray) -> float:
        return float(
            f1_score(val_gold, probs.argmax(1), average="macro", labels=list(range(num_classes)))
        )

    scores = {
        "lfs only": f1(plain.predict_proba(L_val)),
        "extended": f1(clf.predict_proba(L_val, val_embeddings)[0]),
    }
    helps = scores["extended"] > scores["lfs only"]
    return ExtensionChoice(clf if helps else None, scores, thresholds)
