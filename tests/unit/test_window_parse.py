"""The columnar parse of the prediction log gives exactly the entry-by-entry parse, for the
one-field entries the service writes, the field-by-field entries of older services, and blocks
that mix them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitoring.window import _slow_frame, records_frame
from slicewise.core import contracts as c
from tests.conftest import legacy_fields

LABELS = ["negative", "neutral", "positive"]
SLICES = ["negation", "question"]


class Manifest:
    labels = LABELS
    slice_names = SLICES


def entries(
    n: int, seed: int, raw: bool, text: bool = False, learned: bool = False, legacy: bool = False
) -> list[dict]:
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
        f = legacy_fields(rec) if legacy else rec.to_fields()
        f = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.items()}
        out.append({k.encode(): v.encode() for k, v in f.items()} if raw else f)
    return out


def spoil(fields: dict, change: dict | str, raw: bool) -> None:
    """Apply `change` to an entry: its fields (legacy), or its packed JSON object's keys (a
    str: the packed value replaced whole).
    """
    key = (lambda k: k.encode()) if raw else (lambda k: k)
    r = key(c.PREDICTION_FIELD)
    if r not in fields:
        for k, v in change.items():
            fields[key(k)] = v.encode() if raw else v
        return
    value = change if isinstance(change, str) else json.dumps({**json.loads(fields[r]), **change})
    fields[r] = value.encode() if raw else value


BAD = [
    {"confidence": "nan"},  # non-finite confidence: skipped
    {"confidence": "high"},
    {"text_length": "12.5"},
    {"probabilities": "{not json"},
    {"slices": '{"negation":0.5},{"question":0.1}'},
    {"probabilities": "[0.1, 0.2]"},
    {"ts": ""},
]
BAD_PACKED = [
    {"confidence": None},  # non-finite confidence (JSON null): skipped
    {"confidence": "high"},
    {"text_length": 12.5},
    {"probabilities": "{}"},
    {"probabilities": [0.1, 0.2]},
    {"slices": {"negation": "x"}},
    {"ts": ""},
    {"id": 3},
    "{not json",
    '{"id":"a"},{"id":"b"}',  # two objects in one value
]


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("learned", [True, False])
def test_columnar_parse_equals_entry_by_entry(legacy, raw, text, learned) -> None:
    fields = entries(50, 0, raw, text, learned, legacy)
    fast = records_frame(fields, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()))
    assert len(fast) == 50 and fast[c.slice_score_column("question")].iloc[0] == 0.0
    flags = fast[c.LEARNED_SLICES_FIELD].tolist()
    if learned:  # the slices the service served on learned scores, per record
        assert flags[3] == "negation,question" and flags[1] == "question" and flags[0] == ""
    else:
        assert set(flags) == {""}


@pytest.mark.parametrize(
    ("legacy", "bad"), [(True, b) for b in BAD] + [(False, b) for b in BAD_PACKED]
)
@pytest.mark.parametrize("raw", [True, False])
def test_bad_entries_are_skipped_like_from_fields_does(legacy, bad, raw) -> None:
    fields = entries(40, 1, raw, legacy=legacy)
    if legacy:
        del fields[5][b"label" if raw else "label"]  # a missing field
    else:
        packed = json.loads(fields[5][b"r" if raw else "r"])
        del packed["label"]
        spoil(fields[5], json.dumps(packed), raw)
    for i in (7, 33):
        spoil(fields[i], bad, raw)
    fast = records_frame(fields, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()))
    assert len(fast) == 37


@pytest.mark.parametrize("bad", [None, BAD_PACKED[0], BAD_PACKED[-2]])
def test_a_block_mixing_both_formats_keeps_the_order(bad) -> None:
    """During an upgrade the log holds entries of the old service beside the new one's."""
    new, old = entries(40, 3, raw=True, text=True), entries(40, 3, raw=True, text=True, legacy=True)
    mixed = [old[i] if i % 3 == 0 or 20 <= i < 26 else new[i] for i in range(40)]
    ids = [c.PredictionRecord.from_fields(f).id for f in mixed]
    if bad is not None:
        spoil(mixed[4], bad, raw=True)  # a new-format entry
        spoil(mixed[6], {"confidence": "nan"}, raw=True)  # an old one
    flat = [[x for kv in f.items() for x in kv] for f in mixed]
    fast = records_frame(flat, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(mixed, Manifest()), check_exact=True)
    kept = [x for i, x in enumerate(ids) if bad is None or i not in (4, 6)]
    assert fast["id"].tolist() == kept  # both kinds, in the log's order


def test_empty_log_gives_the_columns() -> None:
    assert list(records_frame([], Manifest()).columns) == list(_slow_frame([], Manifest()).columns)


@pytest.mark.parametrize(
    ("legacy", "bad"),
    [(True, b) for b in [None, *BAD]] + [(False, b) for b in [None, *BAD_PACKED]],
)
def test_flat_field_lists_as_redis_sends_them_parse_the_same(legacy, bad) -> None:
    """The monitor reads raw XRANGE replies: `[field, value, ...]` lists, not dicts."""
    fields = entries(40, 2, raw=True, text=True, legacy=legacy)
    if bad is not None:
        spoil(fields[9], bad, raw=True)
    flat = [[x for kv in f.items() for x in kv] for f in fields]
    fast = records_frame(flat, Manifest(), chunk=16)
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()), check_exact=True)


@pytest.mark.parametrize("raw", [True, False])
def test_a_block_of_packed_entries_that_all_fail_gives_the_empty_columns(raw) -> None:
    bad = [{"r": "{not json"}, {"r": "{}"}, {"r": '{"id": 1}'}]
    bad = [{k.encode(): v.encode() for k, v in f.items()} for f in bad] if raw else bad
    fast = records_frame(bad, Manifest())
    pd.testing.assert_frame_equal(fast, _slow_frame(bad, Manifest()))
    assert fast.empty


def test_fields_beside_the_packed_one_are_ignored_as_from_fields_does() -> None:
    fields = entries(5, 4, raw=True)
    fields[2][b"extra"] = b"x"
    flat = [[x for kv in f.items() for x in kv] for f in fields]
    fast = records_frame(flat, Manifest())
    pd.testing.assert_frame_equal(fast, _slow_frame(fields, Manifest()), check_exact=True)
    assert len(fast) == 5
