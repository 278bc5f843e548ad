"""The slice-rule evaluator: one code path that decides slice membership for training and serving.

A slice is defined by exactly one rule (docs/design.md §3): a keyword list, a regular expression, a
word-count range, or a Python function (`text -> bool`, a registered name or
`package.module:function`). `compile_rules` turns the definitions into a `RuleEvaluator` once
(patterns compiled, functions resolved); `RuleEvaluator.evaluate` then gives the exact `[N, k]`
membership of a batch of texts. Training (`training/slices.py`) and the service both call it, so
the two can never disagree on who is in a slice.

Semantics (the ones training always had):
- keywords: case-insensitive whole words (`keyword_pattern`); clitics such as "n't" match at
  the end of a word ("don't"), and an apostrophe also matches the typographic one ("don’t");
- regex: `re.search` anywhere in the text, Python `re` syntax, no implicit flags;
- word_count: `len(text.split())` (runs of whitespace) within `[min, max]`, both inclusive;
- a text that is not a `str` is evaluated as `str(text)`.

Measured on the demo's six rules (bench/bench_membership.py, 2 shared CPU cores, load 5):
15.6-27 µs a text in 64-text batches (49.5 µs before keyword rules tested a first-character
class first); inside the served model path the rules stage is about 0.1% of the time.

Imports neither torch nor pandas (the serving bento packs this file).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from slicewise.core.errors import SlicewiseError

SliceFn = Callable[[str], bool]
RuleKind = Literal["keywords", "regex", "word_count", "function"]
RULE_KINDS: tuple[RuleKind, ...] = ("keywords", "regex", "word_count", "function")
NO_MAX = 10**9  # word_count without `max`

_REGISTRY: dict[str, SliceFn] = {}


class SliceError(SlicewiseError, ValueError):
    """A slice rule does not compile, a slicing function is unknown or raises."""


def slicing_function(
    name: str | None = None, description: str = ""
) -> Callable[[SliceFn], SliceFn]:
    """Register a Python slicing function under `name` (default: the function's name).

    Import this decorator from `slicewise.core.slice_rules` in a plugin module, so the service
    can import the module (it has no torch and no `training` package).

    Example:
        >>> @slicing_function(name="mentions_refund")
        ... def mentions_refund(text: str) -> bool:
        ...     return "refund" in text.lower()
        >>> mentions_refund("I want a REFUND")
        True
    """
    if callable(name):  # used as @slicing_function without parentheses
        raise SliceError(
            "use @slicing_function() with parentheses, e.g. @slicing_function(name='x')"
        )

    def register(fn: SliceFn) -> SliceFn:
        key = name or fn.__name__
        fn.__doc__ = fn.__doc__ or description
        _REGISTRY[key] = fn
        return fn

    return register


def resolve_function(
    ref: str, registry: dict[str, Callable[..., Any]] | None = None, kind: str = "slicing"
) -> Callable[..., Any]:
    """A registered function by name, or `package.module:function` imported on demand.

    Args:
        ref: a registered name or `package.module:function`.
        registry: the names to look in (default: `@slicing_function`'s registry).
        kind: `slicing` or `labeling`, for messages.

    Returns:
        The function.

    Raises:
        SliceError: naming the reference and why it cannot be resolved.
    """
    reg = _REGISTRY if registry is None else registry
    if ref in reg:
        return reg[ref]
    if ":" not in ref:
        known = ", ".join(sorted(reg)) or "none"
        raise SliceError(
            f"{kind} function {ref!r} is not registered (registered: {known}); use a registered "
            "name or `package.module:function`"
        )
    module, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SliceError(f"cannot import {kind} function {ref!r}: {exc}") from exc
    if not callable(fn):
        raise SliceError(f"{ref!r} is not callable")
    return fn


def import_plugins(modules: Iterable[str]) -> None:
    """Import plugin modules so their decorated functions register.

    Raises:
        SliceError: naming the first module that cannot be imported.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SliceError(f"cannot import plugin module {module!r}: {exc}") from exc


# English clitics that tokenisers split off the word they end ("do|n't", "it|'s"): as keywords
# they match at the end of a word, so they get no left word boundary.
_CLITIC = re.compile(r"^(n't|'(s|d|m|ll|re|ve))$", re.IGNORECASE)


def keyword_pattern(keywords: Sequence[str]) -> str:
    """Case-insensitive whole-word regex for a keyword list.

    Clitics such as "n't" match inside "don't" / "can't" (they end a word rather than start
    one), and an apostrophe also matches the typographic one ("don’t").
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for kw in sorted(keywords, key=len, reverse=True):
        left = r"\b" if re.match(r"\w", kw) and not _CLITIC.match(kw) else ""
        right = r"\b" if re.search(r"\w$", kw) else ""
        body = "['’]".join(re.escape(piece) for piece in kw.split("'"))
        groups.setdefault((left, right), []).append(body)
    # `\b(?:a|b)\b` finds the same texts as `\ba\b|\bb\b` (the engine backtracks into every
    # alternative) but tests the boundary once per position: 3x faster on the demo's negation
    # keywords (Python's `re` has no literal-prefix scan under IGNORECASE).
    parts = [f"{left}(?:{'|'.join(bodies)}){right}" for (left, right), bodies in groups.items()]
    # A match must start with some keyword's first character: testing that one class first
    # (a lookahead) skips the alternation at every other position, 5.8x faster on the demo's
    # negation keywords (13.7 -> 2.4 µs a tweet); the texts matched are the same.
    first: set[str] = set()
    for kw in keywords:
        first |= {"'", "’"} if kw[0] == "'" else {kw[0]}
    lead = "[" + "".join(re.escape(ch) for ch in sorted(first)) + "]"
    return f"(?i)(?={lead})(?:" + "|".join(parts) + ")"


def rule_kind(definition: Any) -> RuleKind:
    """Which rule a definition (config slice, manifest rule, labeling function) uses.

    Raises:
        SliceError: when it defines none or more than one.
    """
    given = [k for k in RULE_KINDS if getattr(definition, k, None)]
    if len(given) != 1:
        name = getattr(definition, "name", "?")
        what = ", ".join(given) if given else "none"
        raise SliceError(
            f"{name!r} must define exactly one of keywords, regex, word_count, function "
            f"(got {what})"
        )
    return given[0]


@dataclass(frozen=True)
class CompiledRule:
    """One slice rule, ready to evaluate: a compiled pattern, a word range or a function."""

    name: str
    kind: RuleKind
    pattern: re.Pattern[str] | None = None
    min_words: int = 0
    max_words: int = NO_MAX
    function: Callable[[str], Any] | None = None

    def test(self, text: str) -> bool:
        """Whether one text is in the slice (a function's exception propagates)."""
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        if self.kind == "word_count":
            return self.min_words <= len(text.split()) <= self.max_words
        assert self.function is not None
        return bool(self.function(text))


def compile_rule(
    name: str,
    definition: Any,
    registry: dict[str, Callable[..., Any]] | None = None,
    kind: str = "slicing",
) -> CompiledRule:
    """Compile one rule definition (any object with keywords / regex / word_count / function).

    Args:
        name: the slice's (or LF's) name, for messages.
        definition: the rule: a config slice, a manifest `SliceRule`, a labeling function.
        registry: where `function` names are looked up (default: `@slicing_function`'s).
        kind: `slicing` or `labeling`, for messages.

    Returns:
        The compiled rule (`test(text)` decides one text).

    Raises:
        SliceError: naming the slice when the rule is empty, ambiguous, does not compile, or its
            function cannot be resolved.
    """
    what = rule_kind(definition)
    if what == "keywords":
        keywords = list(definition.keywords)
        bad = [k for k in keywords if not isinstance(k, str) or not k.strip()]
        if bad:
            raise SliceError(f"{kind} rule {name!r}: empty keyword(s) {bad}; remove them")
        return CompiledRule(name, what, pattern=re.compile(keyword_pattern(keywords)))
    if what == "regex":
        try:
            return CompiledRule(name, what, pattern=re.compile(definition.regex))
        except re.error as exc:
            raise SliceError(
                f"{kind} rule {name!r}: invalid regular expression {definition.regex!r}: {exc}"
            ) from None
    if what == "word_count":
        wc = dict(definition.word_count)
        unknown = sorted(set(wc) - {"min", "max"})
        lo, hi = wc.get("min", 0), wc.get("max", NO_MAX)
        if unknown or not isinstance(lo, int) or not isinstance(hi, int) or lo < 0 or hi < lo:
            raise SliceError(
                f"{kind} rule {name!r}: word_count {wc} is not a range; need integers "
                "0 <= min <= max (keys `min`, `max`)"
            )
        return CompiledRule(name, what, min_words=lo, max_words=hi)
    try:
        fn = resolve_function(definition.function, registry, kind)
    except SliceError as exc:
        raise SliceError(f"{kind} rule {name!r}: {exc}") from None
    return CompiledRule(name, what, function=fn)


class RuleEvaluator:
    """Compiled slice rules; `evaluate` gives the exact `[N, k]` membership of a batch."""

    def __init__(self, rules: Sequence[CompiledRule], kind: str = "slicing") -> None:
        self.rules = list(rules)
        self.kind = kind

    @property
    def names(self) -> list[str]:
        """Slice names in column order."""
        return [r.name for r in self.rules]

    def evaluate_with_errors(
        self, texts: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray, SliceError | None]:
        """Membership `[N, k]`, the cells whose function raised, and the first such error.

        A raising Python function marks its cell failed (membership False) instead of stopping
        the batch: the service falls back to the learned score there.
        """
        strs = [t if isinstance(t, str) else str(t) for t in texts]
        n = len(strs)
        member = np.zeros((n, len(self.rules)), dtype=bool)
        failed = np.zeros_like(member)
        first: SliceError | None = None
        words: np.ndarray | None = None
        for j, rule in enumerate(self.rules):
            if rule.pattern is not None:
                search = rule.pattern.search
                member[:, j] = [search(t) is not None for t in strs]
            elif rule.kind == "word_count":
                if words is None:  # shared by every word-count rule of the batch
                    words = np.fromiter((len(t.split()) for t in strs), dtype=np.int64, count=n)
                member[:, j] = (words >= rule.min_words) & (words <= rule.max_words)
            else:
                fn = rule.function
                assert fn is not None
                for i, t in enumerate(strs):
                    try:
                        member[i, j] = bool(fn(t))
                    except Exception as exc:
                        failed[i, j] = True
                        if first is None:
                            first = SliceError(
                                f"{self.kind} function {rule.name!r} raised on text {i} "
                                f"({t[:40]!r}): {exc!r}"
                            )
                            first.__cause__ = exc
        return member, failed, first

    def evaluate(self, texts: Sequence[Any]) -> np.ndarray:
        """The exact boolean membership `[N, k]`, columns in rule order.

        Args:
            texts: the texts (a non-string is read as `str(value)`).

        Returns:
            Boolean array `[len(texts), len(rules)]`.

        Raises:
            SliceError: when a Python slicing function raises, naming it and the text index.
        """
        member, _, error = self.evaluate_with_errors(texts)
        if error is not None:
            raise error
        return member


def compile_rules(
    definitions: Sequence[Any],
    registry: dict[str, Callable[..., Any]] | None = None,
    kind: str = "slicing",
) -> RuleEvaluator:
    """Compile named rule definitions (each with a `name`) into one evaluator.

    Args:
        definitions: the rules, in column order.
        registry: where `function` names are looked up (default: `@slicing_function`'s).
        kind: `slicing` or `labeling`, for messages.

    Returns:
        The evaluator; `evaluate(texts)` gives membership `[N, k]`.

    Raises:
        SliceError: naming the first slice whose rule does not compile.
    """
    return RuleEvaluator([compile_rule(d.name, d, registry, kind) for d in definitions], kind=kind)
