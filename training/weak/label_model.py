"""A closed-form label model with the triplet method (FlyingSquid, Fu et al. 2020).

Multi-class generalisation used here (documented in the README's weak-supervision section):
one-vs-rest per class `c`, with `Y_c = +1` when the true class is `c`, else `−1`. Each LF `j`
becomes two binary indicators, "votes c" and "votes another class" (abstaining is neither). If
the LFs are conditionally independent given `Y_c`, every indicator has
`E[I | Y_c] = m + d · Y_c`, so the covariance of two indicators of *different* LFs is rank one:

    Cov(I_i, I_k) = σ_c² d_i d_k,      σ_c² = 4 p_c (1 − p_c),  p_c = P(Y = c).

The triplet identity `|σ_c d_i| = sqrt(|Cov_ij Cov_ik / Cov_jk|)` gives every `|d_i|` in closed
form (median over triplets, as FlyingSquid does for robustness); the sign follows the
indicator's polarity ("votes c" is positive evidence for `c`). Means then give `m_i`, hence
`P(I_i = 1 | Y_c = ±1)`, and the posterior of `Y_c` is a naive-Bayes product. The class
balance is given, or estimated by a short fixed point (balance → posteriors → balance).
The per-class posteriors are normalised across classes. No SGD anywhere.

Speed: every statistic is computed on the *distinct rows* of `L` (vote patterns) weighted by
their counts — with sparse LFs a 100k-row matrix has a few thousand patterns — so fitting costs
one sort of integer row keys plus work on the patterns.

This works with unipolar LFs (the common case, each voting one class or abstaining), for which
FlyingSquid's symmetric ±1 formulation has no signal in the second moments.

NOTE: on LFs that break the independence assumption the balance fixed point can drift: on the
demo's LFs it moves from the vote share 0.29 / 0.51 / 0.20 to 0.23 / 0.71 / 0.07 in 10 steps
(true 0.42 / 0.39 / 0.18; label accuracy 0.624 → 0.621). Give the balance when it is known.

The one-vs-rest view assumes conditional independence given `Y_c`; LFs for two other
classes are only approximately independent given "not c". Points where every LF abstains get
the class balance as their label distribution; `covered` tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit, softmax
from threadpoolctl import ThreadpoolController

from training.weak.labeling import ABSTAIN, LFError

EPS = 1e-3
_THREADPOOLS: list[ThreadpoolController] = []


def _single_threaded_blas():  # type: ignore[no-untyped-def]
    """Limit BLAS to one thread (the controller is built once: it scans the loaded libraries)."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=1, user_api="blas")


@dataclass
class _ClassModel:
    p_fire_pos: np.ndarray  # P(I = 1 | Y_c = +1), per indicator
    p_fire_neg: np.ndarray  # P(I = 1 | Y_c = −1)


class TripletLabelModel:
    """Fit on a label matrix `L [N, m]` (class indices, `ABSTAIN = -1`) in closed form."""

    def __init__(
        self, num_classes: int, class_balance: np.ndarray | None = None, balance_iters: int = 10
    ) -> None:
        self.C = num_classes
        self.fixed_balance = (
            None if class_balance is None else np.asarray(class_balance, dtype=float)
        )
        self.balance_iters = balance_iters
        self.models: list[_ClassModel] = []
        self.balance = np.full(num_classes, 1.0 / num_classes)

    def _onehot(self, L: np.ndarray) -> np.ndarray:
        """[N, m·C] float32 one-hot votes (all zeros where the LF abstains)."""
        return (L[:, :, None] == np.arange(self.C)).reshape(len(L), -1).astype(np.float32)

    def _selector(self, m: int, c: int) -> np.ndarray:
        """[m·C, 2m]: indicator 2j = LF j votes c, 2j+1 = LF j votes another class."""
        A = np.zeros((m * self.C, 2 * m), dtype=np.float32)
        for j in range(m):
            A[j * self.C + c, 2 * j] = 1.0
            A[[j * self.C + k for k in range(self.C) if k != c], 2 * j + 1] = 1.0
        return A

    def _check(self, L: np.ndarray) -> None:
        """Shape and value range of `L` (the all-abstain check runs on its patterns)."""
        if L.ndim != 2 or L.shape[1] < 3:
            raise LFError(
                f"the label model needs at least 3 labeling functions; got {L.shape[1] if L.ndim == 2 else 0}"
            )
        if L.size and (L.min() < ABSTAIN or L.max() >= self.C):
            bad = np.setdiff1d(np.unique(L), np.arange(-1, self.C))
            raise LFError(
                f"label matrix holds {bad.tolist()}, outside ABSTAIN (-1) and 0..{self.C - 1}"
            )

    @staticmethod
    def _scaled_d(cov: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """|σ d| per indicator by the triplet identity, median over pairs (a, b) of other LFs.

        Pairs are drawn from the positive indicators ("votes c") when at least two LFs vote c:
        two LFs of the same *other* class are correlated given "not c", which would bias the
        ratio; LFs voting c are the ones the one-vs-rest independence assumption fits.
        """
        k = cov.shape[0]
        lf_of = np.arange(k) // 2
        live = np.diag(cov) > 1e-12
        pool = live & positive
        if len(np.unique(lf_of[pool])) < 2:
            pool = live
        a_idx, b_idx = np.triu_indices(k, 1)
        ok = (
            pool[a_idx]
            & pool[b_idx]
            & (lf_of[a_idx] != lf_of[b_idx])
            & (np.abs(cov[a_idx, b_idx]) > 1e-8)
        )
        a_idx, b_idx = a_idx[ok], b_idx[ok]
        # ratios [indicator, pair]; a pair counts for i when neither of its LFs is i's LF
        ratio = np.sqrt(np.abs(cov[:, a_idx] * cov[:, b_idx] / cov[a_idx, b_idx]))
        usable = (lf_of[a_idx][None, :] != lf_of[:, None]) & (
            lf_of[b_idx][None, :] != lf_of[:, None]
        )
        usable &= live[:, None]
        out = np.zeros(k)
        count = usable.sum(1)
        rows = np.flatnonzero(count)
        if rows.size:  # per-row median of the usable ratios (NaNs sort last)
            ranked = np.sort(np.where(usable, ratio, np.nan)[rows], axis=1)
            c = count[rows]
            out[rows] = 0.5 * (
                ranked[np.arange(rows.size), (c - 1) // 2] + ranked[np.arange(rows.size), c // 2]
            )
        return out

    def _patterns(
        self, L: np.ndarray, inverse: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Distinct rows of `L`, their counts, and (when asked) each row's pattern index."""
        m, bits = L.shape[1], int(self.C).bit_length()  # a digit L + 1 in 0..C takes `bits`
        if m * bits < 63:  # a row fits one int64 key
            shifts = bits * np.arange(m, dtype=np.int64)
            place = np.left_shift(1, shifts)
            keys = np.dot(L.astype(np.int64, copy=False), place) + place.sum()  # digits L + 1
            if inverse:
                ukeys, index, counts = np.unique(keys, return_inverse=True, return_counts=True)
            else:  # sorting alone: ~10x faster than asking np.unique for first indices too
                (ukeys, counts), index = np.unique(keys, return_counts=True), None
            digits = (ukeys[:, None] >> shifts) & ((1 << bits) - 1)
            return digits - 1, counts, index
        U, index, counts = np.unique(L, axis=0, return_inverse=True, return_counts=True)
        return U, counts, index.ravel()

    def fit(self, L: np.ndarray) -> TripletLabelModel:
        """Estimate per-class indicator rates (and the class balance unless given)."""
        # the products here are tiny; OpenBLAS threads only add wake-up latency (10× on a busy box)
        with _single_threaded_blas():
            return self._fit(np.asarray(L))

    def _fit(self, L: np.ndarray) -> TripletLabelModel:
        self._check(L)
        m = L.shape[1]
        U, counts, _ = self._patterns(L)
        if (U == ABSTAIN).all():
            raise LFError("every labeling function abstains on every point: nothing to learn from")
        onehot = self._onehot(U)
        weights = counts.astype(np.float64) / len(L)
        w32 = weights.astype(np.float32)  # float32 products: 4x faster than mixing in float64
        mu = (w32 @ onehot).astype(np.float64)
        second = ((onehot.T * w32) @ onehot).astype(np.float64)
        centred = second - np.outer(mu, mu)
        self._selectors = [self._selector(m, c) for c in range(self.C)]
        signs = np.tile([1.0, -1.0], m)
        means = [mu @ A for A in self._selectors]
        scaled = [self._scaled_d(A.T @ centred @ A, signs > 0) for A in self._selectors]
        balance = (
            self.fixed_balance
            if self.fixed_balance is not None
            else self._initial_balance(U, counts)
        )
        for _ in range(1 if self.fixed_balance is not None else self.balance_iters):
            self.models = []
            for c in range(self.C):
                p = float(np.clip(balance[c], EPS, 1 - EPS))
                d = signs * scaled[c] / (2 * np.sqrt(p * (1 - p)))
                mc = means[c] - d * (2 * p - 1)
                self.models.append(
                    _ClassModel(np.clip(mc + d, EPS, 1 - EPS), np.clip(mc - d, EPS, 1 - EPS))
                )
            self.balance = balance
            if self.fixed_balance is None:
                balance = weights @ self._posterior(onehot)
                if np.abs(balance - self.balance).max() < 1e-4:  # converged
                    break
        self.balance = balance
        return self

    def _initial_balance(self, U: np.ndarray, counts: np.ndarray) -> np.ndarray:
        votes = np.array([counts @ (c == U).sum(1) for c in range(self.C)], dtype=float) + 1.0
        return votes / votes.sum()

    def _posterior(self, onehot: np.ndarray) -> np.ndarray:
        """`P(Y | λ)` per row of `onehot`, from every class's naive-Bayes log-odds at once.

        `log P(λ, Y_c = +1) − log P(λ, Y_c = −1) = const_c + I · (w⁺ − w⁻)` with `I = onehot @ A_c`;
        `P(Y_c = +1 | λ)` is its sigmoid, normalised across classes.
        """
        log_odds = np.empty((onehot.shape[1], self.C))
        const = np.empty(self.C)
        for c, (model, A) in enumerate(zip(self.models, self._selectors, strict=True)):
            p = float(np.clip(self.balance[c], EPS, 1 - EPS))
            pos, neg = model.p_fire_pos, model.p_fire_neg
            w = np.log(pos) - np.log1p(-pos) - np.log(neg) + np.log1p(-neg)
            log_odds[:, c] = A @ w
            const[c] = np.log(p) - np.log1p(-p) + np.log1p(-pos).sum() - np.log1p(-neg).sum()
        z = onehot @ log_odds.astype(np.float32) + const
        probs = expit(z)
        total = probs.sum(1, keepdims=True)
        if (total > 0).all():
            return probs / total
        return softmax(log_expit(z), axis=1)  # every class underflowed somewhere: in log space

    def predict_proba(self, L: np.ndarray) -> np.ndarray:
        """Probabilistic labels `[N, C]`."""
        if not self.models:
            raise LFError("the label model is not fitted; call fit(L) first")
        L = np.asarray(L)
        with _single_threaded_blas():
            U, _, inverse = self._patterns(L, inverse=True)
            return self._posterior(self._onehot(U))[inverse]

    def lf_accuracies(self, L: np.ndarray) -> np.ndarray:
        """Estimated P(vote is right | LF votes) per LF, from the fitted model."""
        L = np.asarray(L)
        out = np.full(L.shape[1], np.nan)
        for j in range(L.shape[1]):
            voted = L[:, j] != ABSTAIN
            if not voted.any():
                continue
            total = 0.0
            for c in np.unique(L[voted, j]):
                model, p = self.models[c], self.balance[c]
                fire_pos, fire_neg = model.p_fire_pos[2 * j], model.p_fire_neg[2 * j]
                p_right = fire_pos * p / (fire_pos * p + fire_neg * (1 - p))
                total += p_right * (L[voted, j] == c).sum()
            out[j] = total / voted.sum()
        return out
