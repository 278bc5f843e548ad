"""A closed-form label model with the triplet method (FlyingSquid, Fu et al. 2020).

Multi-class generalisation used here (documented in the README's weak-supervision section):
one-vs-rest per class `c`, with `Y_c = +1` when the true class is `c`, else `−1`. Each LF `j`
becomes two binary indicators, "votes c" and "votes another class" (abstaining is neither). If
the LFs are conditionally independent given `Y_c`, every indicator has
`E[I | Y_c] = m + d · Y_c`, so the covariance of two indicators of *different* LFs is rank one:

    Cov(I_i, I_k) = σ_c² d_i d_k,      σ_c² = 4 p_c (1 − p_c),  p_c = P(Y = c).

The triplet identity `|σ_c d_i| = sqrt(|Cov_ij Cov_ik / Cov_jk|)` gives every `|d_i|` in closed
form (median over triplets, as FlyingSquid does for robustness). Triplets are drawn from the
"votes c" indicators when at least `MIN_TRIPLET_LFS` (3) LFs vote `c`; with fewer, an LF has no
two own-class partners, so pairs mixing "votes c" and "votes another class" indicators are used
(a class with two LFs keeps its own-class evidence). The signs come from the data: the
covariances fix every `d_i`'s sign relative to the others, and the one remaining flip is
FlyingSquid's assumption that on average LFs beat random. An LF whose "votes c" turns out to be
evidence *against* `c` is worse than random: `fit` warns, names it, and the model counts its
votes as the evidence they are (its estimated accuracy is then near the truth, e.g. 0.01 for a
true 0.02). Means then give `m_i`, hence
`P(I_i = 1 | Y_c = ±1)`, and the posterior of `Y_c` is a naive-Bayes product. The class
balance is given, or estimated in closed form from third moments (`_moment_balance`: the
skewness of `Y_c`) when at least `MIN_MOMENT_LFS` LFs vote each class, else taken as the LFs'
vote share. The per-class posteriors are normalised across classes. No SGD, no iterations.

Speed: every statistic is computed on the *distinct rows* of `L` (vote patterns) weighted by
their counts — with sparse LFs a 100k-row matrix has a few thousand patterns — so fitting costs
one sort of integer row keys plus work on the patterns.

This works with unipolar LFs (the common case, each voting one class or abstaining), for which
FlyingSquid's symmetric ±1 formulation has no signal in the second moments.

Class balance, measured: on synthetic LFs (bench) the third-moment estimate is within 0.005 of
the true balance, where the earlier fixed point (balance → posteriors → balance) converged to a
biased one (0.517 / 0.312 / 0.171 for 0.501 / 0.301 / 0.198) and cost 10 posterior passes. On the
demo's LFs (3–4 per class, far from independent) it would be badly off (0.70 / 0.22 / 0.08 for
0.42 / 0.39 / 0.18), and the demo has fewer than `MIN_MOMENT_LFS` LFs for two classes, so it
uses the vote share (0.29 / 0.51 / 0.20). Give the balance when it is known.

The one-vs-rest view assumes conditional independence given `Y_c`; LFs for two other
classes are only approximately independent given "not c". Points where every LF abstains get
the class balance as their label distribution (not the model's posterior given all abstains,
which would read the LFs' silence as evidence); `covered` tells them apart.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit, softmax
from threadpoolctl import ThreadpoolController

from training.weak.labeling import ABSTAIN, LFError

EPS = 1e-3
MIN_TRIPLET_LFS = 3  # own-class LFs needed to draw triplet pairs from "votes c" indicators only
MIN_MOMENT_LFS = 4  # LFs voting a class needed to estimate its balance from third moments
MOMENT_LFS = 11  # the strongest LFs per class used there: C(11, 3) = 165 triplets
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

    def __init__(self, num_classes: int, class_balance: np.ndarray | None = None) -> None:
        self.C = num_classes
        self.fixed_balance = (
            None if class_balance is None else np.asarray(class_balance, dtype=float)
        )
        self.models: list[_ClassModel] = []
        self.balance = np.full(num_classes, 1.0 / num_classes)
        self.balance_source = "uniform (not fitted)"  # then: given, third moments or vote share

    def _onehot(self, L: np.ndarray) -> np.ndarray:
        """[N, C·m] float32 votes, class-major: column `c·m + j` is "LF j votes c"."""
        n, m = L.shape
        out = np.empty((n, self.C, m), dtype=np.float32)
        for c in range(self.C):  # one long comparison per class: 4x faster than broadcasting
            np.equal(L, c, out=out[:, c, :], casting="unsafe")
        return out.reshape(n, -1)

    def _selector(self, m: int, c: int) -> np.ndarray:
        """[C·m, 2m]: indicator 2j = LF j votes c, 2j+1 = LF j votes another class."""
        A = np.zeros((self.C * m, 2 * m), dtype=np.float32)
        lfs = np.arange(m)
        A[c * m + lfs, 2 * lfs] = 1.0
        for k in range(self.C):
            if k != c:
                A[k * m + lfs, 2 * lfs + 1] = 1.0
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

        Pairs are drawn from the positive indicators ("votes c") when at least
        `MIN_TRIPLET_LFS` LFs vote c: two LFs of the same *other* class are correlated given
        "not c", which would bias the ratio; LFs voting c are the ones the one-vs-rest
        independence assumption fits. With fewer, an own-class LF has at most one other
        own-class LF to pair with, so the pairs are drawn from every live indicator, keeping
        only pairs with at least one positive member where such pairs exist (a class with two
        LFs still gets its own-class evidence: `votes c` of the other LF times a negative
        indicator).
        """
        k = cov.shape[0]
        lf_of = np.arange(k) // 2
        live = np.diag(cov) > 1e-12
        own = live & positive
        a_idx, b_idx = np.triu_indices(k, 1)
        ok = (lf_of[a_idx] != lf_of[b_idx]) & (np.abs(cov[a_idx, b_idx]) > 1e-8)
        if len(np.unique(lf_of[own])) >= MIN_TRIPLET_LFS:
            ok &= own[a_idx] & own[b_idx]
        else:
            ok &= live[a_idx] & live[b_idx]
            mixed = ok & (own[a_idx] | own[b_idx])
            if mixed.any():
                ok = mixed
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

    @staticmethod
    def _resolve_signs(cov: np.ndarray, scaled: np.ndarray, polarity: np.ndarray) -> np.ndarray:
        """Signs of `d` from the data: `Cov(I_i, I_k) = σ² d_i d_k` fixes them up to one flip.

        An indicator's sign is read from its covariances with the other LFs' indicators,
        weighted by their signed `σ d` (starting from the polarity guess: "votes c" is evidence
        for c), twice. Pairs of two "votes another class" indicators are left out: votes for two
        other classes are dependent given "not c" (they exclude each other), which outweighs
        their weak rank-one covariance. A "votes c" indicator changes sign only when its
        covariances with the "votes c" and with the "votes another class" indicators both say
        so: sparse LFs of one class that rarely fire together have negative covariances from
        that alone (the demo's `lf_question_neutral` would be flipped by the first half). The
        remaining global flip is FlyingSquid's assumption that on average LFs beat random: the
        signed `σ d` agree with the polarities, weighted by `|σ d|`.
        """
        lf_of = np.arange(cov.shape[0]) // 2
        positive = polarity > 0
        other = lf_of[:, None] != lf_of[None, :]
        signs = polarity.copy()
        for _ in range(2):
            signed = signs * scaled
            by_pos = np.sign((cov * (other & positive[None, :])) @ signed)
            by_neg = np.sign((cov * (other & ~positive[None, :])) @ signed)
            agree = (by_pos == by_neg) | (by_neg == 0)
            pos_sign = np.where(agree & (by_pos != 0), by_pos, polarity)
            neg_sign = np.where(by_pos != 0, by_pos, polarity)  # "votes c" partners only
            signs = np.where(positive, pos_sign, neg_sign)
        if (signs * polarity) @ scaled < 0:
            signs = -signs
        return signs

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
            digits = ((ukeys[:, None] >> shifts) & ((1 << bits) - 1)).astype(np.int8)
            return digits - np.int8(1), counts, index  # int8: the passes over U are 8x lighter
        U, index, counts = np.unique(L, axis=0, return_inverse=True, return_counts=True)
        return U, counts, index.ravel()

    def fit(self, L: np.ndarray, lf_names: Sequence[str] | None = None) -> TripletLabelModel:
        """Estimate per-class indicator rates (and the class balance unless given).

        Args:
            L: label matrix `[N, m]` (class indices, `ABSTAIN = -1`).
            lf_names: names of the `m` LFs, for the worse-than-random warning.

        Warns:
            UserWarning: for an LF whose votes for a class are, by the data, evidence *against*
                that class (worse than random); the model then counts them so, and lists the
                LF in `worse_than_random`.
        """
        # the products here are tiny; OpenBLAS threads only add wake-up latency (10× on a busy box)
        with _single_threaded_blas():
            self._fit(np.asarray(L))
        self._warn_worse_than_random(lf_names)
        return self

    def _fit(self, L: np.ndarray) -> TripletLabelModel:
        self._check(L)
        m = L.shape[1]
        U, counts, _ = self._patterns(L)
        if (U == ABSTAIN).all():
            raise LFError("every labeling function abstains on every point: nothing to learn from")
        weights = counts.astype(np.float64) / len(L)
        root_w = np.sqrt(weights).astype(np.float32)  # float32 products: 4x faster than float64
        scaled_votes = self._onehot(U)
        scaled_votes *= root_w[:, None]  # in place: one pattern-sized buffer for both moments
        mu = (root_w @ scaled_votes).astype(np.float64)
        second = (scaled_votes.T @ scaled_votes).astype(np.float64)
        centred = second - np.outer(mu, mu)
        self._selectors = [self._selector(m, c) for c in range(self.C)]
        polarity = np.tile([1.0, -1.0], m)
        covs = [A.T @ centred @ A for A in self._selectors]
        scaled = [self._scaled_d(cov, polarity > 0) for cov in covs]
        self._signs = [
            self._resolve_signs(cov, s, polarity) for cov, s in zip(covs, scaled, strict=True)
        ]
        self.worse_than_random = [  # (LF, class): its "votes c" is evidence against c
            (j, c)
            for c in range(self.C)
            for j in np.flatnonzero((self._signs[c][0::2] < 0) & (scaled[c][0::2] > 0))
            if mu[c * m + j] > 0
        ]
        if self.fixed_balance is not None:
            self.balance, self.balance_source = self.fixed_balance, "given"
        elif (moments := self._moment_balance(U, weights, mu, scaled, self._signs)) is not None:
            self.balance, self.balance_source = moments, "third moments"
        else:
            trusted = np.ones(U.shape, dtype=bool)  # a worse-than-random LF's votes don't count
            for j, c in self.worse_than_random:
                trusted[:, j] &= U[:, j] != c
            self.balance = self._vote_share(np.where(trusted, U, ABSTAIN), counts)
            self.balance_source = "vote share"
        self.models = []
        for c, A in enumerate(self._selectors):
            p = float(np.clip(self.balance[c], EPS, 1 - EPS))
            d = self._signs[c] * scaled[c] / (2 * np.sqrt(p * (1 - p)))
            mc = mu @ A - d * (2 * p - 1)
            self.models.append(
                _ClassModel(np.clip(mc + d, EPS, 1 - EPS), np.clip(mc - d, EPS, 1 - EPS))
            )
        return self

    def _warn_worse_than_random(self, lf_names: Sequence[str] | None) -> None:
        for j, c in self.worse_than_random:
            name = f"{lf_names[j]!r}" if lf_names is not None else f"#{j}"
            model, p = self.models[c], self.balance[c]
            pos, neg = model.p_fire_pos[2 * j], model.p_fire_neg[2 * j]
            accuracy = pos * p / (pos * p + neg * (1 - p))
            warnings.warn(
                f"labeling function {name} votes class {c} less often when the class is {c} than "
                f"when it is not (estimated accuracy {accuracy:.2f}, below the class balance "
                f"{p:.2f}): worse than random, so the label model counts its votes for {c} as "
                "evidence against it; fix or drop the LF",
                UserWarning,
                stacklevel=3,
            )

    def _moment_balance(
        self,
        U: np.ndarray,
        weights: np.ndarray,
        mu: np.ndarray,
        scaled: list[np.ndarray],
        signs: list[np.ndarray],
    ) -> np.ndarray | None:
        """Class balance in closed form from third moments; None with too few LFs for a class.

        For indicators `I = m + d · Y_c` of conditionally independent LFs, the centred third
        moment is `E[(I_i − μ_i)(I_j − μ_j)(I_k − μ_k)] = γ · s_i s_j s_k`, with `s = σ_c |d|`
        from the triplet step and `γ = (1 − 2p) / sqrt(p (1 − p))` the skewness of `Y_c`, so
        `p = (1 − γ / sqrt(γ² + 4)) / 2`. `γ` is the median over triplets of the "votes c"
        indicators of the `MOMENT_LFS` LFs with the strongest signal; the per-class `p` are
        normalised to sum to one.
        """
        m = U.shape[1]
        votes_t = np.ascontiguousarray(U.T)  # [m, P]: one LF's votes in a row
        w32 = weights.astype(np.float32)
        p = np.empty(self.C)
        for c in range(self.C):
            cols = c * m + np.arange(m)  # "LF j votes c"
            s = (signs[c] * scaled[c])[0::2]  # signed: a worse-than-random LF's is negative
            live = np.flatnonzero((np.abs(s) > 1e-6) & (mu[cols] > 0))
            if len(live) < MIN_MOMENT_LFS:
                return None
            live = live[np.argsort(-np.abs(s[live]), kind="stable")][:MOMENT_LFS]
            xt = (votes_t[live] == c) - mu[cols[live], None].astype(np.float32)  # centred
            wxt = xt * w32
            third = np.stack([(wxt * row) @ xt.T for row in xt])  # [n, n, n], n ≤ MOMENT_LFS
            a, b, k = np.array(list(itertools.combinations(range(len(live)), 3))).T
            ratio = third[a, b, k] / (s[live][a] * s[live][b] * s[live][k])
            gamma = float(np.median(ratio))
            p[c] = 0.5 * (1.0 - gamma / np.sqrt(gamma**2 + 4.0))
        return p / p.sum()

    def _vote_share(self, U: np.ndarray, counts: np.ndarray) -> np.ndarray:
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
        """Probabilistic labels `[N, C]`; rows where every LF abstains get the class balance."""
        if not self.models:
            raise LFError("the label model is not fitted; call fit(L) first")
        L = np.asarray(L)
        with _single_threaded_blas():
            U, _, inverse = self._patterns(L, inverse=True)
            probs = self._posterior(self._onehot(U))
        probs[(U == ABSTAIN).all(1)] = self.balance  # no evidence: the class balance
        return probs[inverse]

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
