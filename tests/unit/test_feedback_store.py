"""The feedback store on a real Redis: one label per id, bounded by a TTL and a count, and the
trimmed labels never come back through the stream."""

from __future__ import annotations

import time

import redis

from slicewise.core import contracts as c
from slicewise.core.feedback import read_feedback_labels, record_feedback, trim_feedback


def test_labels_past_their_ttl_go_and_do_not_come_back_from_the_stream(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert record_feedback(client, "old", "neg", ttl_s=1.0) is None
    assert record_feedback(client, "old", "pos", ttl_s=1.0) == "neg"  # a correction
    time.sleep(1.2)
    assert record_feedback(client, "new", "neg", ttl_s=1.0) is None  # its write trims "old"
    assert client.hgetall(c.FEEDBACK_LABELS_KEY) == {b"new": b"neg"}
    assert client.zrange(c.FEEDBACK_TIMES_KEY, 0, -1) == [b"new"]
    assert read_feedback_labels(client) == {"new": "neg"}  # its 2 events stay in the stream
    assert client.xlen(c.FEEDBACK_STREAM) == 3
    time.sleep(1.2)
    assert trim_feedback(client, ttl_s=1.0) == 1  # without writes (the service trims every 60 s)
    assert client.hlen(c.FEEDBACK_LABELS_KEY) == 0 and client.zcard(c.FEEDBACK_TIMES_KEY) == 0


def test_past_the_cap_the_oldest_labels_go(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for i in range(12):
        record_feedback(client, f"p{i}", "neg", max_labels=5)
    record_feedback(client, "p3", "pos", max_labels=5)  # already gone: a new label, newest now
    kept = read_feedback_labels(client)
    assert kept == {"p8": "neg", "p9": "neg", "p10": "neg", "p11": "neg", "p3": "pos"}
    assert client.zcard(c.FEEDBACK_TIMES_KEY) == 5


def test_labels_from_before_the_hash_still_count(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(c.FEEDBACK_STREAM, {"id": "legacy", "label": "neg", "ts": "0"})
    record_feedback(client, "p1", "pos")
    assert read_feedback_labels(client) == {"legacy": "neg", "p1": "pos"}


def test_kept_labels_drop_what_a_trim_removed(redis_server) -> None:
    """The monitor's incremental reader notices a trim (the hash shrank) and reads whole."""
    from slicewise.core.feedback import FeedbackLabels

    client = redis.Redis.from_url(redis_server.url)
    kept = FeedbackLabels(batch=4)
    for i in range(6):
        record_feedback(client, f"p{i}", "neg")
    assert kept.read(client) == read_feedback_labels(client) and kept.whole_reads == 1
    record_feedback(client, "p6", "pos")
    assert kept.read(client)["p6"] == "pos" and kept.whole_reads == 1  # incremental
    record_feedback(client, "p7", "pos", max_labels=3)  # trims p0..p4
    assert kept.read(client) == {"p5": "neg", "p6": "pos", "p7": "pos"}
    assert kept.whole_reads == 2
    record_feedback(client, "p8", "neg", max_labels=3)  # trims p5 between two reads
    assert (
        kept.read(client) == read_feedback_labels(client) == {"p6": "pos", "p7": "pos", "p8": "neg"}
    )
