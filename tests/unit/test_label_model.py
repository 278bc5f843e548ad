"""The triplet label model against LFs of known accuracy: two LFs a class, a worse-than-random
LF, all-abstain rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from training.weak import ABSTAIN, TripletLabelModel

BALANCE = (0.5, 0.3, 0.2)


def lfs_with_accuracies(n: int, specs, balance=BALANCE, seed: int = 0):
    """Unipolar LFs given as `(class, P(fire | that class), accuracy)`; returns L, y, accuracies.

    The false-fire rate follows from the accuracy: `acc = p·tp / (p·tp + (1 − p)·fp)`.
    """
    rng = np.random.default_rng(seed)
    y = rng.choice(len(balance), n, p=balance)
    L = np.full((n, len(specs)), ABSTAIN)
    for j, (c, tp, acc) in enumerate(specs):
        p = balance[c]
        fp = p * tp * (1 - acc) / ((1 - p) * acc)
        L[np.where(y == c, rng.random(n) < tp, rng.random(n) < fp), j] = c
    true_acc = np.array([(y[L[:, j] != ABSTAIN] == c).mean() for j, (c, _, _) in enumerate(specs)])
    return L, y, true_acc


TWO_PER_CLASS = [(c, tp, acc) for c in range(3) for tp, acc in ((0.5, 0.84), (0.4, 0.65))]
THREE_PER_CLASS_AND_A_BAD_ONE = [(c, 0.4, 0.8) for c in range(3) for _ in range(3)] + [
    (1, 0.01, 0.02)
]


@pytest.mark.parametrize("balance", [None, BALANCE])
def test_two_lfs_a_class_keep_their_own_class_evidence(balance) -> None:
    L, y, acc = lfs_with_accuracies(50_000, TWO_PER_CLASS)
    model = TripletLabelModel(3, class_balance=balance).fit(L)
    est = model.lf_accuracies(L)
    np.testing.assert_allclose(est, acc, atol=0.03)
    assert not model.worse_than_random
    covered = (L != ABSTAIN).any(1)
    probs = model.predict_proba(L)
    assert (probs[covered].argmax(1) == y[covered]).mean() > 0.8


@pytest.mark.parametrize("balance", [None, BALANCE])
def test_a_worse_than_random_lf_is_detected_and_counted_against_its_class(balance) -> None:
    L, _, acc = lfs_with_accuracies(50_000, THREE_PER_CLASS_AND_A_BAD_ONE)
    names = [f"lf{j}" for j in range(L.shape[1])]
    with pytest.warns(UserWarning, match=r"'lf9' votes class 1 .* worse than random"):
        model = TripletLabelModel(3, class_balance=balance).fit(L, lf_names=names)
    assert model.worse_than_random == [(9, 1)]
    np.testing.assert_allclose(model.lf_accuracies(L), acc, atol=0.03)
    np.testing.assert_allclose(model.balance, BALANCE, atol=0.02)
    # a vote of the bad LF alone moves the labels away from class 1
    probs = model.predict_proba(np.array([[ABSTAIN] * 9 + [1]]))
    assert probs[0, 1] < model.balance[1]


def test_good_lfs_raise_no_worse_than_random_warning() -> None:
    L, _, _ = lfs_with_accuracies(20_000, [(c, 0.3, 0.7) for c in range(3) for _ in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = TripletLabelModel(3).fit(L)
    assert model.worse_than_random == []


@pytest.mark.parametrize("balance", [None, BALANCE])
def test_all_abstain_rows_get_the_class_balance(balance) -> None:
    L, _, _ = lfs_with_accuracies(20_000, THREE_PER_CLASS_AND_A_BAD_ONE[:9])
    model = TripletLabelModel(3, class_balance=balance).fit(L)
    silent = np.full((3, 9), ABSTAIN)
    mixed = np.vstack([silent, L[:50]])
    np.testing.assert_allclose(model.predict_proba(silent), np.tile(model.balance, (3, 1)))
    np.testing.assert_allclose(model.predict_proba(mixed)[:3], np.tile(model.balance, (3, 1)))
