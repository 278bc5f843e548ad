"""The monitor's kept window (`monitoring.window.Window`) equals a fresh read of the real Redis
log after appends, evictions, trims and a replaced stream, and so do the drift verdicts; with
one prediction per entry and with the service's entries of many (`slicewise.core.log_entries`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import redis

from monitoring.drift import slice_drift
from monitoring.monitor import Monitor
from monitoring.window import Window, read_window
from slicewise.core import contracts as c
from slicewise.core.log_entries import BATCH_FIELD, ROWS_FIELD, encode_batches, logged_count
from slicewise.core.settings import MonitorConfig
from tests.conftest import legacy_fields

LABELS = ["negative", "neutral", "positive"]
MANIFEST = c.Manifest(
    version="v1",
    created_at="t",
    labels=LABELS,
    max_length=8,
    backbone="synthetic",
    slices=[c.SliceInfo(name="a", monitored=True), c.SliceInfo(name="b", monitored=True)],
)


def profile(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Reference-profile rows: slice a (30%) has lower confidence when `shift` > 0."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([2, 1, 2], n)
    a = rng.random(n) < 0.3
    p[a, 0] += shift
    p /= p.sum(1, keepdims=True)
    data = {c.prob_column(lab): p[:, i] for i, lab in enumerate(LABELS)}
    data[c.PREDICTED_LABEL_COLUMN] = np.array(LABELS)[p.argmax(1)]
    data[c.CONFIDENCE_COLUMN] = p.max(1)
    data[c.slice_score_column("a")] = np.where(a, 1.0, 0.0)
    data[c.slice_score_column("b")] = (rng.random(n) < 0.4).astype(float)
    data[c.TEXT_LENGTH_COLUMN] = rng.integers(5, 200, n) + (a * shift * 300).astype(int)
    data[c.TRUE_LABEL_COLUMN] = np.where(
        rng.random(n) < 0.8, data[c.PREDICTED_LABEL_COLUMN], LABELS[1]
    )
    return pd.DataFrame(data)


def log(
    client: redis.Redis,
    rows: pd.DataFrame,
    start: int,
    ms: int | None = None,
    legacy: bool = False,
    per_entry: int = 1,
) -> None:
    """XADD the rows as the service does, `per_entry` records an entry (explicit ms ids when
    `ms` is given, 1 row per ms), or one per entry as services before did: one JSON field, or
    field by field (`legacy`)."""
    records = [
        c.PredictionRecord(
            MANIFEST.version,
            row[c.PREDICTED_LABEL_COLUMN],
            float(row[c.CONFIDENCE_COLUMN]),
            {lab: float(row[c.prob_column(lab)]) for lab in LABELS},
            {s: float(row[c.slice_score_column(s)]) for s in MANIFEST.slice_names},
            int(row[c.TEXT_LENGTH_COLUMN]),
            id=f"p{start + i}",
        )
        for i, (_, row) in enumerate(rows.iterrows())
    ]
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(records), per_entry):
        if per_entry > 1:
            [(payload, n)] = encode_batches(records[i : i + per_entry])
            fields = {BATCH_FIELD: payload, ROWS_FIELD: n}
        else:
            fields = legacy_fields(records[i]) if legacy else records[i].to_fields()
        pipe.xadd(c.PREDICTIONS_STREAM, fields, id=f"{ms + i}-0" if ms else "*")
    pipe.execute()


def same(kept: pd.DataFrame, fresh: pd.DataFrame, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(kept, fresh)
    a = slice_drift(reference, kept, MANIFEST, min_rows=20)
    b = slice_drift(reference, fresh, MANIFEST, min_rows=20)
    assert [r.as_dict() for r in a.values()] == [r.as_dict() for r in b.values()]


@pytest.mark.parametrize("per_entry", [1, 7])
def test_kept_window_by_size_equals_a_fresh_read(redis_server, per_entry: int) -> None:
    client = redis.Redis.from_url(redis_server.url)
    reference = profile(3000, 0)
    window = Window(MANIFEST, size=400, batch=16)
    assert window.refresh(client).empty  # empty log
    log(client, profile(300, 1), 0, per_entry=per_entry)
    client.xadd(c.PREDICTIONS_STREAM, {"id": "broken"})  # an entry that does not parse
    client.xadd(c.PREDICTIONS_STREAM, {BATCH_FIELD: b"junk", ROWS_FIELD: 3})  # nor does this
    log(client, profile(200, 2, shift=0.4), 300, per_entry=per_entry)
    fresh = read_window(client, MANIFEST, 400)
    same(window.refresh(client), fresh, reference)
    assert fresh["id"].iloc[0] == f"p{500 - 400 + 4}"  # 4 of the 400 logged did not parse
    reads = window.full_reads
    for step in range(3):  # appends that push the oldest rows (and the broken entries) out
        log(client, profile(90, 10 + step, shift=0.4), 1000 + 100 * step, per_entry=per_entry)
        kept = window.refresh(client)
        assert window.full_reads == reads  # read only the new entries
        assert window.last_read == math.ceil(90 / per_entry)
        same(kept, read_window(client, MANIFEST, 400), reference)
    assert len(kept) == 400 and kept["id"].iloc[-1] == "p1289"
    # a trim of entries the window holds
    client.xtrim(c.PREDICTIONS_STREAM, maxlen=250 // per_entry, approximate=False)
    log(client, profile(10, 20), 2000, per_entry=per_entry)
    kept = window.refresh(client)
    assert window.full_reads == reads and len(kept) == logged_count(client) < 400
    same(kept, read_window(client, MANIFEST, 400), reference)
    log(client, profile(500, 21), 3000, per_entry=per_entry)  # more new rows than the window
    same(window.refresh(client), read_window(client, MANIFEST, 400), reference)
    assert window.full_reads == reads + 1


def test_a_stream_an_upgrade_wrote_in_both_formats_reads_whole(redis_server) -> None:
    """An older service's field-by-field entries, then (and beside) the new one-field ones."""
    client = redis.Redis.from_url(redis_server.url)
    old, new = profile(150, 1), profile(150, 2)
    log(client, old, 0, legacy=True)
    window = Window(MANIFEST, size=1000, batch=64)
    assert window.refresh(client)["id"].tolist() == [f"p{i}" for i in range(150)]
    log(client, new.iloc[:100], 150)
    log(client, old.iloc[:20], 250, legacy=True)  # a second replica not yet upgraded
    log(client, new.iloc[100:], 270, per_entry=9)  # the service of now: many per entry
    kept = window.refresh(client)
    assert window.full_reads == 1 and window.last_read == 100 + 20 + 6
    assert kept["id"].tolist() == [f"p{i}" for i in range(320)]
    pd.testing.assert_frame_equal(kept, read_window(client, MANIFEST, 1000, batch=50))
    both = pd.concat([old, new.iloc[:100], old.iloc[:20], new.iloc[100:]], ignore_index=True)
    for column in [c.CONFIDENCE_COLUMN, c.prob_column("neutral"), c.slice_score_column("a")]:
        np.testing.assert_array_equal(kept[column], both[column])
    np.testing.assert_array_equal(kept[c.TEXT_LENGTH_COLUMN], both[c.TEXT_LENGTH_COLUMN])


def test_a_replaced_stream_is_read_anew(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    window = Window(MANIFEST, size=100)
    log(client, profile(80, 1), 0)
    window.refresh(client)
    client.delete(c.PREDICTIONS_STREAM)  # e.g. a flushed Redis: the last id seen is gone
    log(client, profile(30, 2), 500)
    kept = window.refresh(client)
    assert window.full_reads == 2 and kept["id"].tolist() == [f"p{i}" for i in range(500, 530)]


def test_a_new_stream_that_reuses_the_last_id_is_read_anew(redis_server) -> None:
    """A stream deleted and written again within one millisecond can give an entry the id of
    the entry read last; the window must still notice the new stream.
    """
    client = redis.Redis.from_url(redis_server.url)
    window = Window(MANIFEST, size=100)
    log(client, profile(1, 1), 0, ms=1000)  # id 1000-0
    assert window.refresh(client)["id"].tolist() == ["p0"]
    client.delete(c.PREDICTIONS_STREAM)
    log(client, profile(1, 2), 7, ms=1000)  # the same id, another prediction
    assert window.refresh(client)["id"].tolist() == ["p7"] and window.full_reads == 2


@pytest.mark.parametrize("per_entry", [1, 10])
def test_kept_window_by_minutes_evicts_by_entry_time(redis_server, per_entry: int) -> None:
    client = redis.Redis.from_url(redis_server.url)
    t0 = 1_700_000_000_000  # ms
    log(client, profile(200, 1), 0, ms=t0, per_entry=per_entry)  # t0 + the first row's number
    window = Window(MANIFEST, minutes=0.1, batch=32)  # 6 s = 6000 ms
    now = (t0 + 5000) / 1000
    assert len(window.refresh(client, now=now)) == 200
    log(client, profile(100, 2), 200, ms=t0 + 6100, per_entry=per_entry)  # 6.1 s later
    now = (t0 + 6150) / 1000  # the window starts at t0+150 ms
    kept = window.refresh(client, now=now)
    assert window.full_reads == 1 and len(kept) == 50 + 100
    pd.testing.assert_frame_equal(kept, Window(MANIFEST, minutes=0.1).refresh(client, now=now))


def test_monitor_passes_on_a_kept_window_equal_fresh_passes(redis_server, tmp_path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    folder = tmp_path / "bundle"
    folder.mkdir()
    profile(3000, 0).to_parquet(folder / c.REFERENCE_PARQUET, index=False)
    (folder / c.MODEL_ONNX).write_bytes(b"")
    (folder / c.TOKENIZER_DIR).mkdir()
    (folder / c.MANIFEST_JSON).write_text(MANIFEST.model_dump_json())
    bundle = c.Bundle.load(folder)
    settings = MonitorConfig(window_size=1500, min_rows=30, report_dir=None)
    monitor = Monitor(bundle, client, settings)
    log(client, profile(1200, 1), 0)
    for pid in range(0, 1200, 7):
        client.xadd(c.FEEDBACK_STREAM, {"id": f"p{pid}", "label": "neutral"})
    monitor.run_once()
    for step in range(2):  # the window fills, then the shifted rows push the old ones out
        log(client, profile(400, 5 + step, shift=0.5), 2000 + 1000 * step)
        kept = monitor.run_once()
        fresh = Monitor(bundle, client, settings).run_once()
        assert monitor.window.full_reads == 1
        for key in ("window_rows", "slices", "drifted_slices", "accuracy", "estimated_accuracy"):
            assert (
                kept[key] == pytest.approx(fresh[key])
                if "accuracy" in key
                else kept[key] == fresh[key]
            )
    assert kept["window_rows"] == 1500 and "a" in kept["drifted_slices"]


def test_kept_feedback_labels_see_a_new_stream_that_reuses_the_last_id(redis_server) -> None:
    """A stream deleted and written again within one millisecond can give its first event the
    id of the event read last; the kept labels must still notice the new stream.
    """
    from slicewise.core.feedback import FeedbackLabels, read_feedback_labels

    client = redis.Redis.from_url(redis_server.url)
    client.delete(c.FEEDBACK_STREAM, c.FEEDBACK_LABELS_KEY)
    kept = FeedbackLabels()
    client.xadd(c.FEEDBACK_STREAM, {"id": "a", "label": "negative"}, id="1000-0")
    assert kept.read(client) == {"a": "negative"}
    client.delete(c.FEEDBACK_STREAM)
    client.xadd(c.FEEDBACK_STREAM, {"id": "b", "label": "positive"}, id="1000-0")  # same id
    assert kept.read(client) == read_feedback_labels(client) == {"b": "positive"}
    assert kept.whole_reads == 2


def test_kept_feedback_labels_equal_a_whole_read(redis_server) -> None:
    from slicewise.core.feedback import FeedbackLabels, read_feedback_labels, record_feedback

    client = redis.Redis.from_url(redis_server.url)
    kept = FeedbackLabels(batch=4)
    assert kept.read(client) == {} and kept.whole_reads == 1
    client.xadd(c.FEEDBACK_STREAM, {"id": "old", "label": "negative"})  # stream only (legacy)
    for i in range(10):
        record_feedback(client, f"p{i}", LABELS[i % 3])
    assert kept.read(client) == read_feedback_labels(client)
    for i in range(5, 15):  # corrections and new labels, more than one page
        record_feedback(client, f"p{i}", "neutral")
    got = kept.read(client)
    assert got == read_feedback_labels(client) and got["p6"] == "neutral" and len(got) == 16
    assert kept.whole_reads == 2  # the first read of an empty stream, then one whole read
    client.delete(c.FEEDBACK_STREAM)  # the event seen last is gone: read whole
    record_feedback(client, "p1", "positive")
    assert kept.read(client) == read_feedback_labels(client) and kept.whole_reads == 3
