"""Slicing functions: declarative rules, registered and imported Python SFs, errors (training/slices.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from training.config import parse_config
from training.slices import (
    SliceError,
    keyword_pattern,
    require_members,
    rule_mask,
    slice_counts,
    slice_membership,
    slicing_function,
)

DATA = [
    "I don't like this",  # 0
    "NOT good at all",  # 1
    "nothing to say, I know",  # 2: "no" must not match inside "nothing" / "know"
    "Is the flight on time?",  # 3
    "great",  # 4
    "see https://t.co/x for details on the long delay we had today",  # 5
    "dont do that",  # 6
    "/usr/bin is a path",  # 7
]

SLICES = [
    {"name": "negation", "keywords": ["not", "n't", "no", "never"]},
    {"name": "question", "regex": r"\?"},
    {"name": "grouped", "regex": r"(flight|delay)"},  # groups are fine (no pandas warning)
    {"name": "short", "word_count": {"max": 3}},
    {"name": "long", "word_count": {"min": 10}},
    {"name": "middle", "word_count": {"min": 4, "max": 5}},
    {"name": "path", "function": "os.path:isabs"},  # `module:function` import
    {"name": "shouting", "function": "shouting"},  # registered below by name
]

# text index:     0  1  2  3  4  5  6  7
EXPECTED = {
    "negation": [1, 1, 0, 0, 0, 0, 0, 0],
    "question": [0, 0, 0, 1, 0, 0, 0, 0],
    "grouped": [0, 0, 0, 1, 0, 1, 0, 0],
    "short": [0, 0, 0, 0, 1, 0, 1, 0],
    "long": [0, 0, 0, 0, 0, 1, 0, 0],
    "middle": [1, 1, 1, 1, 0, 0, 0, 1],
    "path": [0, 0, 0, 0, 0, 0, 0, 1],
    "shouting": [0, 1, 0, 0, 0, 0, 0, 0],
}


@slicing_function(name="shouting", description="has a fully upper-case word of 3+ letters")
def _shouting(text: str) -> bool:
    return any(w.isupper() and len(w) >= 3 for w in text.split())


@slicing_function(name="explodes")
def _explodes(text: str) -> bool:
    if "bin" in text:
        raise RuntimeError("boom")
    return False


def project(slices: list[dict]) -> object:
    return parse_config({"labels": ["a", "b"], "slices": slices})


def test_membership_matrix_matches_the_expected_table() -> None:
    cfg = project(SLICES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "match groups" UserWarning from pandas
        m = slice_membership(DATA, cfg)
    assert m.dtype == bool and m.shape == (len(DATA), len(SLICES))
    for j, name in enumerate(cfg.slice_names):
        assert m[:, j].astype(int).tolist() == EXPECTED[name], name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_rule_alone_gives_its_column(name: str) -> None:
    rule = next(s for s in SLICES if s["name"] == name)
    m = slice_membership(pd.Series(DATA), project([rule]))
    assert m[:, 0].astype(int).tolist() == EXPECTED[name]


KEYWORD_CASES = [
    (["n't"], "I can't", True),
    (["n't"], "I cant", False),
    (["n't"], "we don’t", True),  # typographic apostrophe
    (["it's"], "it's fine", True),
    (["it's"], "bit's", False),
    (["no"], "No way", True),
    (["no"], "know nothing", False),
    (["not"], "NOT", True),
    (["not"], "knot", False),
    (["c++"], "I write C++ daily", True),  # regex characters are escaped
    (["new york"], "in New York today", True),
    (["new york"], "newyork", False),
]


@pytest.mark.parametrize(("keywords", "text", "hit"), KEYWORD_CASES)
def test_keywords_are_whole_word_and_case_insensitive(keywords, text, hit) -> None:
    import re

    assert bool(re.search(keyword_pattern(keywords), text)) is hit
    assert slice_membership([text], project([{"name": "k", "keywords": keywords}]))[0, 0] == hit


def test_counts_per_slice() -> None:
    cfg = project(SLICES)
    counts = slice_counts(slice_membership(DATA, cfg), cfg.slice_names)
    assert counts == {name: sum(col) for name, col in EXPECTED.items()}


def test_a_raising_python_sf_is_named_with_the_text_index() -> None:
    cfg = project([{"name": "boom_slice", "function": "explodes"}])
    with pytest.raises(SliceError) as info:
        slice_membership(DATA, cfg)
    msg = str(info.value)
    assert "'boom_slice'" in msg and "text 7" in msg and "boom" in msg and "\n" not in msg


UNKNOWN_REFS = [
    ("not_registered", ["'not_registered' is not registered", "shouting", "module:function"]),
    ("no_such_module_xyz:fn", ["cannot import", "no_such_module_xyz"]),
    ("os.path:no_such_fn", ["cannot import", "no_such_fn"]),
    ("os:sep", ["not callable"]),
]


@pytest.mark.parametrize(("ref", "words"), UNKNOWN_REFS)
def test_unknown_or_unimportable_functions_are_named(ref: str, words: list[str]) -> None:
    with pytest.raises(SliceError) as info:
        slice_membership(DATA, project([{"name": "s", "function": ref}]))
    for word in words:
        assert word in str(info.value)


def test_plugin_modules_are_imported_and_missing_ones_named() -> None:
    cfg = parse_config({"labels": ["a", "b"], "plugins": ["no_such_plugin_mod"], "slices": []})
    with pytest.raises(SliceError, match="plugin module 'no_such_plugin_mod'"):
        slice_membership(DATA, cfg)


def test_decorator_without_parentheses_is_refused_with_the_fix() -> None:
    with pytest.raises(SliceError, match=r"@slicing_function\(\)"):
        slicing_function(_shouting)  # type: ignore[arg-type]


def test_empty_slices_are_allowed_in_membership_but_refused_for_training() -> None:
    cfg = project([{"name": "question", "regex": r"\?"}, {"name": "emoji", "regex": "🙂"}])
    batch = ["no question here", "another one"]  # a tiny production batch: no error
    m = slice_membership(batch, cfg)
    assert not m.any()
    with pytest.raises(SliceError) as info:
        require_members(slice_membership(DATA, cfg), cfg.slice_names, "the training data")
    msg = str(info.value)
    assert "['emoji']" in msg and "the training data" in msg and "question" not in msg


def test_no_slices_gives_an_empty_matrix() -> None:
    assert slice_membership(DATA, project([])).shape == (len(DATA), 0)


def test_non_string_texts_are_stringified_for_declarative_rules() -> None:
    mask = rule_mask(pd.Series([12345, "a b"]).astype(str), project(SLICES[3:4]).slices[0])
    assert mask.tolist() == [True, True]
    assert isinstance(mask, np.ndarray)
