"""The slice-rule evaluator (slicewise/core/slice_rules.py): one code path for training and
serving. Property tests over random texts and every declarative rule kind check it against
training's `slice_membership` on a pandas Series, against the vectorised pandas string
operations training used before the evaluator existed, and against an independent per-text
reference written here without regular expressions for keywords and word counts.
"""

from __future__ import annotations

import re
import types
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slicewise.core.slice_rules import (
    SliceError,
    compile_rule,
    compile_rules,
    keyword_pattern,
    rule_kind,
)
from training.config import parse_config
from training.slices import slice_membership

# Texts: words that keyword rules look for, fragments of them, clitics with both apostrophes,
# punctuation, and whitespace of several kinds (str.split() splits on all of them).
PIECES = [
    "not",
    "no",
    "nothing",
    "know",
    "knot",
    "NOT",
    "No",
    "don't",
    "don’t",
    "cant",
    "can't",
    "n't",
    "it's",
    "bit's",
    "'s",
    "?",
    "!",
    "flight",
    "Flights",
    "@united",
    "http://t.co/x",
    "https",
    "c++",
    "new",
    "york",
    "é",
    "café",
    "_",
    "x",
    "42",
    "'",
    "’",
]
SPACES = [" ", "  ", "\t", "\n", "\xa0", "", ",", "."]
KEYWORDS = [
    "not",
    "no",
    "n't",
    "never",
    "it's",
    "'s",
    "c++",
    "new york",
    "café",
    "cant",
    "flight",
    "?",
    "don't",
]
REGEXES = [
    r"\?",
    r"https?://",
    r"(?i)\b(flight|flights|airline)\b|@(united|jetblue)\b",
    r"^no",
    r"t$",
    r"(flight|york)",
    r"[A-Z]{2,}",
    r"\d+",
    r"'s\b",
    r"(?i)caf\u00e9",
]

texts_strategy = st.lists(
    st.builds(
        lambda ws, ps: "".join(w + s for w, s in zip(ws, ps, strict=False)),
        st.lists(st.sampled_from(PIECES), max_size=12),
        st.lists(st.sampled_from(SPACES), min_size=12, max_size=12),
    ),
    min_size=1,
    max_size=20,
)

word_count_strategy = (
    st.tuples(st.integers(0, 8), st.integers(0, 8)).map(lambda t: {"min": min(t), "max": max(t)})
    | st.integers(0, 8).map(lambda n: {"max": n})
    | st.integers(0, 8).map(lambda n: {"min": n})
)

rule_strategy = st.one_of(
    st.lists(st.sampled_from(KEYWORDS), min_size=1, max_size=4, unique=True).map(
        lambda k: {"keywords": k}
    ),
    st.sampled_from(REGEXES).map(lambda r: {"regex": r}),
    word_count_strategy.map(lambda w: {"word_count": w}),
)
rules_strategy = st.lists(rule_strategy, min_size=1, max_size=6)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def reference_keywords(text: str, keywords: list[str]) -> bool:
    """Whole-word, case-insensitive keyword search without regular expressions.

    A keyword that starts with a word character needs a non-word character (or the start)
    before it, unless it is a clitic ("n't", "'s", ...); one that ends with a word character
    needs a non-word character (or the end) after it. Both apostrophes are the same.
    """
    t = text.replace("’", "'").lower()
    for kw in keywords:
        k = kw.lower()
        clitic = k == "n't" or (k.startswith("'") and k[1:] in {"s", "d", "m", "ll", "re", "ve"})
        need_left = _is_word(k[0]) and not clitic
        need_right = _is_word(k[-1])
        start = t.find(k)
        while start != -1:
            end = start + len(k)
            left_ok = not need_left or start == 0 or not _is_word(t[start - 1])
            right_ok = not need_right or end == len(t) or not _is_word(t[end])
            if left_ok and right_ok:
                return True
            start = t.find(k, start + 1)
    return False


def reference_word_count(text: str) -> int:
    """Runs of non-whitespace characters, counted by hand."""
    count, inside = 0, False
    for ch in text:
        if ch.isspace():
            inside = False
        elif not inside:
            inside, count = True, count + 1
    return count


def reference_membership(text: str, rule: dict) -> bool:
    """The independent per-text reference for one rule."""
    if "keywords" in rule:
        return reference_keywords(text, rule["keywords"])
    if "regex" in rule:
        return re.search(rule["regex"], text) is not None
    lo, hi = rule["word_count"].get("min", 0), rule["word_count"].get("max", 10**9)
    return lo <= reference_word_count(text) <= hi


def pandas_membership(series: pd.Series, rule: dict) -> np.ndarray:
    """Training's vectorised pandas string operations, as they were before the evaluator."""
    if "keywords" in rule:
        return series.str.contains(keyword_pattern(rule["keywords"]), regex=True).to_numpy(bool)
    if "regex" in rule:
        with warnings.catch_warnings():  # pandas warns about groups; we only test for a match
            warnings.simplefilter("ignore")
            return series.str.contains(rule["regex"], regex=True).to_numpy(bool)
    n = series.str.split().str.len().fillna(0)
    wc = rule["word_count"]
    return ((n >= wc.get("min", 0)) & (n <= wc.get("max", 10**9))).to_numpy(bool)


def _named(rules: list[dict]) -> list[dict]:
    return [{"name": f"s{i}", **r} for i, r in enumerate(rules)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=texts_strategy, rules=rules_strategy)
def test_evaluator_equals_training_pandas_and_an_independent_reference(texts, rules) -> None:
    slices = _named(rules)
    evaluator = compile_rules([types.SimpleNamespace(**s) for s in slices])
    got = evaluator.evaluate(texts)
    assert got.shape == (len(texts), len(rules)) and got.dtype == bool

    cfg = parse_config({"labels": ["a", "b"], "slices": slices})
    series = pd.Series(texts, dtype=object)
    np.testing.assert_array_equal(slice_membership(series, cfg), got)

    for j, rule in enumerate(rules):
        np.testing.assert_array_equal(pandas_membership(series, rule), got[:, j], err_msg=str(rule))
        expected = [reference_membership(t, rule) for t in texts]
        assert got[:, j].tolist() == expected, (rule, texts)


@given(texts=texts_strategy)
@settings(max_examples=100, deadline=None)
def test_a_single_text_gives_the_same_answer_as_a_batch(texts) -> None:
    """Evaluating a text alone or inside any batch gives the same membership (no batch effects)."""
    rules = [
        types.SimpleNamespace(name="n", keywords=["not", "n't"]),
        types.SimpleNamespace(name="w", word_count={"max": 3}),
        types.SimpleNamespace(name="q", regex=r"\?"),
    ]
    evaluator = compile_rules(rules)
    batch = evaluator.evaluate(texts)
    for i, t in enumerate(texts):
        assert evaluator.evaluate([t])[0].tolist() == batch[i].tolist()
        assert [r.test(t) for r in evaluator.rules] == batch[i].tolist()


BAD_RULES = [
    ({"name": "broken", "regex": "(unclosed"}, ["'broken'", "invalid regular expression"]),
    ({"name": "blank", "keywords": ["ok", "  "]}, ["'blank'", "empty keyword"]),
    ({"name": "upside", "word_count": {"min": 5, "max": 2}}, ["'upside'", "0 <= min <= max"]),
    ({"name": "both", "regex": "x", "keywords": ["y"]}, ["'both'", "exactly one"]),
    ({"name": "none"}, ["'none'", "exactly one", "got none"]),
    ({"name": "gone", "function": "no_such_module_xyz:fn"}, ["'gone'", "cannot import"]),
]


@pytest.mark.parametrize(("rule", "words"), BAD_RULES, ids=[r["name"] for r, _ in BAD_RULES])
def test_a_rule_that_does_not_compile_is_refused_naming_the_slice(rule: dict, words) -> None:
    with pytest.raises(SliceError) as info:
        compile_rule(rule["name"], types.SimpleNamespace(**rule))
    for word in words:
        assert word in str(info.value)


def test_rule_kind_names_the_one_rule() -> None:
    assert rule_kind(types.SimpleNamespace(name="a", regex="x")) == "regex"
    assert rule_kind(types.SimpleNamespace(name="a", word_count={"max": 1})) == "word_count"


def test_a_raising_function_marks_its_cells_and_keeps_the_others() -> None:
    def picky(text: str) -> bool:
        if "boom" in text:
            raise RuntimeError("boom")
        return text.startswith("a")

    rule = compile_rule("picky", types.SimpleNamespace(function="picky"), {"picky": picky})
    evaluator = compile_rules([])
    evaluator.rules = [rule, compile_rule("q", types.SimpleNamespace(regex=r"\?"))]
    member, failed, error = evaluator.evaluate_with_errors(["a?", "boom?", "b"])
    assert member.tolist() == [[True, True], [False, True], [False, False]]
    assert failed.tolist() == [[False, False], [True, False], [False, False]]
    assert error is not None and "'picky'" in str(error) and "text 1" in str(error)
    with pytest.raises(SliceError, match="text 1"):
        evaluator.evaluate(["a?", "boom?", "b"])


def test_non_strings_are_evaluated_as_their_str() -> None:
    evaluator = compile_rules([types.SimpleNamespace(name="w", word_count={"max": 1})])
    assert evaluator.evaluate([12345, None, "a b"])[:, 0].tolist() == [True, True, False]


def test_the_core_module_imports_neither_pandas_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, slicewise.core.slice_rules; "
        "print(sorted(m for m in ('pandas', 'torch', 'training') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
