"""Salience aggregates whole words (tokenizer offsets), and judges shortcut patterns on them."""

from __future__ import annotations

import numpy as np
import pytest

from training.salience import SHORTCUT_PATTERNS, _word_sums, normalise_word, words

TWEET = "@united Seahawks don't fly #Hawks https://t.co/x1 www.example.com Great!! ??"


def flagged(word: str) -> list[str]:
    return [name for name, pat in SHORTCUT_PATTERNS.items() if pat.search(word)]


def test_words_are_the_texts_own_words() -> None:
    assert words(TWEET) == [
        "@united",
        "seahawks",
        "don't",
        "fly",
        "#hawks",
        "<url>",
        "<url>",
        "great",
        "??",
    ]


@pytest.mark.parametrize(
    ("word", "reasons"),
    [
        ("@united", ["handle"]),
        ("#hawks", ["hashtag"]),
        ("https://t.co/x1", ["url"]),
        ("??", ["punctuation"]),
        ("seahawks", []),  # WordPieces 'sea', '##hawks': no hashtag
        ("don't", []),  # WordPieces 'don', "'", 't': no URL
        ("t", []),
        ("great!!", []),
        ("my_name", []),  # an underscore is no handle without '@'
    ],
)
def test_shortcut_patterns_on_whole_words(word: str, reasons: list[str]) -> None:
    assert flagged(normalise_word(word)) == reasons


def test_piece_values_are_summed_into_words() -> None:
    # "don't #hawks": pieces don | ' | t | # | hawks at these offsets
    offsets = [(0, 0), (0, 3), (3, 4), (4, 5), (6, 7), (7, 12), (0, 0)]
    order, (sums,) = _word_sums(
        "don't #hawks", offsets, [1, 2, 3, 4, 5], [np.array([0, 1.0, 2.0, 3.0, 0.5, 0.25, 0])]
    )
    assert order == [0, 1] and sums.tolist() == [6.0, 0.75]
