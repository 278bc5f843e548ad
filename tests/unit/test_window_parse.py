"""The columnar parse of the prediction log gives exactly the entry-by-entry parse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.window import _slow_frame, records_frame
from slicewise.core import contracts as c

LABELS = ["negative", "neutral", "positive"]
SLICES = ["negation", "question"]


class Manifest:
    labels = LABELS
    slice_names = SLICES


def entries(n: int, seed: int, raw: bool, text: bool = False, learned: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = rng.dirichlet([1, 1, 1])
        rec = c.PredictionRecord(
            model_version=f"v{i % 2}",
            label=LABELS[int(p.argmax())],
            confidence=float(p.max()),
            probabilities=dict(zip(LABELS, map(float, p), strict=True)),
            slices={s: float(rng.random()) for s in SLICES[: 1 + i % 2]},  # one may be missing
            text_length=int(rng.integers(1, 300)),
            text=f"text é {i}" if text else None,
            learned_slices=(SLICES if i % 7 == 3 else ["question"] if i % 5 == 1 else [])
            if learned
            else [],
        )
        f = rec.to_fields()
        out.append({k.encode(): v.encode() for k, v in f.items()} if raw else f)
    return out


BAD = [
    {"confidence": "nan"},  # non-finite confidence: skipped
    {"confidence": "high"},
    {"text_length": "12.5"},
    {"probabilities": "{not json"},
    {"slices": '{"negation":0.5},{"question":0.1}'},
    {"probabilities": "[0.1, 0.2]"},
    {"ts": ""},
]


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("learned", [True, False])
def test_columnar_parse_equals_entry_by_entry(raw, text, learned) -> None:
    fields = entries(50, 0, raw, text, learned)
    fast = records_frame(fields, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()))
    assert len(fast) == 50 and fast[c.slice_score_column("question")].iloc[0] == 0.0
    flags = fast[c.LEARNED_SLICES_FIELD].tolist()
    if learned:  # the slices the service served on learned scores, per record
        assert flags[3] == "negation,question" and flags[1] == "question" and flags[0] == ""
    else:
        assert set(flags) == {""}


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("raw", [True, False])
def test_bad_entries_are_skipped_like_from_fields_does(bad, raw) -> None:
    fields = entries(40, 1, raw)
    del fields[5][b"label" if raw else "label"]  # a missing field
    for i in (7, 33):
        for k, v in bad.items():
            fields[i][k.encode() if raw else k] = v.encode() if raw else v
    fast = records_frame(fields, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()))
    assert len(fast) == 37


def test_empty_log_gives_the_columns() -> None:
    assert list(records_frame([], Manifest()).columns) == list(_slow_frame([], Manifest()).columns)


@pytest.mark.parametrize("bad", [None, *BAD])
def test_flat_field_lists_as_redis_sends_them_parse_the_same(bad) -> None:
    """The monitor reads raw XRANGE replies: `[field, value, ...]` lists, not dicts."""
    fields = entries(40, 2, raw=True, text=True)
    if bad is not None:
        for k, v in bad.items():
            fields[9][k.encode()] = v.encode()
    flat = [[x for kv in f.items() for x in kv] for f in fields]
    fast = records_frame(flat, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()), check_exact=True)
