"""Prediction-log entries of many predictions (`slicewise.core.log_entries`): the codec, the
stream cap in predictions (the Lua script on a real Redis) and the readers (window, retrain)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import redis

from monitoring.window import read_window
from service.prediction_log import FLUSH_MAX, PredictionLog
from slicewise.core import contracts as c
from slicewise.core.log_entries import (
    BATCH_FIELD,
    ROWS_FIELD,
    decode_batches,
    encode_batches,
    entry_records,
    logged_count,
    logged_records,
)
from tests.conftest import legacy_fields

LABELS = ["negative", "neutral", "positive"]
MANIFEST = c.Manifest(
    version="v2",
    created_at="t",
    labels=LABELS,
    max_length=8,
    backbone="synthetic",
    slices=[c.SliceInfo(name="a", monitored=True), c.SliceInfo(name="b", monitored=True)],
)


def record(i: int, version: str = "v2", **kw) -> c.PredictionRecord:
    p = np.array([1.0 + i % 3, 2.0, 1.0 + i % 5])
    p /= p.sum()
    return c.PredictionRecord(
        version,
        LABELS[int(p.argmax())],
        float(p.max()),
        dict(zip(LABELS, p.tolist(), strict=True)),
        {"a": float(i % 2), "b": i / 1000},
        10 + i,
        id=f"p{i}",
        ts=1_700_000_000.0 + i / 10,
        **kw,
    )


def test_records_survive_the_batch_codec_bit_for_bit() -> None:
    records = [record(i) for i in range(5)]
    records += [record(5, text="no way", learned_slices=["a"]), record(6, text=None)]
    records += [record(7, version="v3"), record(8, version="v3")]  # a hot swap mid-flush
    records[2].probabilities["neutral"] = float("nan")
    entries = encode_batches(records)
    assert [n for _, n in entries] == [7, 2]  # one entry per model version, in order
    back = [r for payload, n in entries for r in entry_records({BATCH_FIELD: payload, "n": n})]
    assert [r.id for r in back] == [r.id for r in records]
    for got, want in zip(back, records, strict=True):
        assert got.model_version == want.model_version and got.label == want.label
        assert got.ts == want.ts and got.confidence == want.confidence
        assert got.text == want.text and got.learned_slices == want.learned_slices
        assert got.text_length == want.text_length and got.slices == want.slices
        np.testing.assert_array_equal(
            list(got.probabilities.values()), list(want.probabilities.values())
        )


def test_a_payload_that_does_not_parse_spoils_only_its_entry() -> None:
    [(good, _)], [(other, _)] = encode_batches([record(0)]), encode_batches([record(1)])
    assert [b is None for b in decode_batches([good, b"\x93junk", other])] == [False, True, False]
    with pytest.raises(ValueError, match="batch does not parse"):
        entry_records({BATCH_FIELD: b"junk", ROWS_FIELD: b"1"})
    bad = record(3)
    bad.confidence = float("nan")  # skipped, as `from_fields` refuses it
    [(payload, n)] = encode_batches([record(2), bad])
    assert n == 2 and [r.id for r in entry_records({BATCH_FIELD: payload})] == ["p2"]


def wait_written(plog: PredictionLog, n: int) -> None:
    deadline = time.monotonic() + 10
    while plog.written < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert plog.written == n


def test_the_stream_is_capped_in_predictions_not_entries(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    old = [record(i) for i in range(150)]  # an older service: one prediction per entry
    for rec in old[:100]:
        client.xadd(c.PREDICTIONS_STREAM, rec.to_fields())
    for rec in old[100:]:
        client.xadd(c.PREDICTIONS_STREAM, legacy_fields(rec))
    plog = PredictionLog(redis_server.url, maxlen=300, flush_interval=0.01)
    try:
        for step in range(12):  # flushes of 40: 480 predictions
            plog.append([record(1000 + 40 * step + i) for i in range(40)])
            wait_written(plog, 40 * (step + 1))
        held = logged_count(client)
        assert 300 <= held < 300 + 40 and int(client.get(c.PREDICTION_ROWS_KEY)) == held
        assert client.xlen(c.PREDICTIONS_STREAM) < held / 10  # the old entries went first
        newest = [r.id for r in logged_records(client)]
        assert newest == [f"p{i}" for i in range(1479, 1479 - held, -1)]
        window = read_window(client, MANIFEST, size=250)  # a part of the oldest entry kept
        assert window["id"].tolist() == [f"p{i}" for i in range(1230, 1480)]
        client.delete(c.PREDICTIONS_STREAM)  # a flushed log: the count starts again
        plog.append([record(i) for i in range(5)])
        wait_written(plog, 485)
        assert int(client.get(c.PREDICTION_ROWS_KEY)) == logged_count(client) == 5
    finally:
        plog.close()


def test_a_burst_fills_entries_of_at_most_flush_max(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    plog = PredictionLog(redis_server.url, maxlen=10_000, flush_interval=0.5)
    try:
        plog.append([record(i) for i in range(1234)])
        wait_written(plog, 1234)
        entries = client.xrange(c.PREDICTIONS_STREAM)
        assert [int(f[b"n"]) for _, f in entries] == [FLUSH_MAX, FLUSH_MAX, 234]
        assert client.get("slicewise:prediction:p1233") == b"v2"  # the feedback lookup key
    finally:
        plog.close()


def test_window_and_retrain_read_what_the_service_logged(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    plog = PredictionLog(redis_server.url, flush_interval=0.01)
    records = [record(i, text=f"text {i}") for i in range(60)]
    records[7].learned_slices = ["b"]
    try:
        for i in range(0, 60, 20):
            plog.append(records[i : i + 20])
            wait_written(plog, i + 20)
    finally:
        plog.close()
    client.xadd(c.PREDICTIONS_STREAM, record(60, text="text 60").to_fields())  # one-field entry
    frame = read_window(client, MANIFEST, size=1000)
    assert frame["id"].tolist() == [f"p{i}" for i in range(61)]
    assert frame["text"].tolist() == [f"text {i}" for i in range(61)]
    assert frame[c.LEARNED_SLICES_FIELD].tolist()[6:9] == ["", "b", ""]
    want = [*records, record(60)]
    np.testing.assert_array_equal(frame[c.CONFIDENCE_COLUMN], [r.confidence for r in want])
    np.testing.assert_array_equal(
        frame[c.prob_column("neutral")], [r.probabilities["neutral"] for r in want]
    )
    np.testing.assert_array_equal(frame[c.slice_score_column("b")], [r.slices["b"] for r in want])
    assert frame[c.PREDICTED_LABEL_COLUMN].tolist() == [r.label for r in want]
    newest = list(logged_records(client, count=25))
    assert [r.id for r in newest] == [f"p{i}" for i in range(60, 35, -1)]
    assert math.isclose(newest[1].probabilities["positive"], records[59].probabilities["positive"])
