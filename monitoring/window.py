"""Read the current window of predictions (and feedback) from the Redis log (docs/design.md §7, §9).

An entry holds many predictions (`slicewise.core.log_entries`), or one in the formats of older
services; all become rows of a DataFrame with the reference-profile columns, so reference and current
data are compared column for column. `read_window` reads the whole window; `Window` keeps it
between passes and reads only the entries logged since the last pass (docs/monitoring.md,
"Monitoring at scale").
"""

from __future__ import annotations

import functools
import gc
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import chain, groupby
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import redis

from slicewise.core import contracts as c
from slicewise.core.errors import SlicewiseError
from slicewise.core.feedback import FeedbackLabels, read_feedback_labels
from slicewise.core.log_entries import BATCH_FIELD, LoggedBatch, decode_batches, entry_rows


class WindowError(SlicewiseError, RuntimeError):
    """The prediction log cannot be read or holds nothing usable."""


def _ms_id(ts: float) -> str:
    return f"{int(ts * 1000)}-0"


def _raw_client(client: redis.Redis) -> redis.Redis:
    """A client on the same connections whose XRANGE/XREVRANGE replies stay as Redis sent them
    (`[id, [field, value, ...]]`): redis-py's per-entry dict was a fifth of the read time.
    """
    raw = redis.Redis(connection_pool=client.connection_pool)
    for command in ("XRANGE", "XREVRANGE"):
        raw.set_response_callback(command, lambda response, **_: response)
    return raw


def _stream_id(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)


def _stream_ids(ids: list) -> np.ndarray:
    """Stream ids (`b"<ms>-<seq>"`) → int64 [n, 2], parsed in one pass over the joined bytes."""
    if ids and isinstance(ids[0], bytes):
        text = b" ".join(ids).replace(b"-", b" ")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (and stops) on what is not a number
            try:
                numbers = np.fromstring(text, dtype=np.int64, sep=" ")
            except (ValueError, DeprecationWarning):
                numbers = np.zeros(0, np.int64)
        if len(numbers) == 2 * len(ids):  # each id is exactly `ms-seq`
            return numbers.reshape(-1, 2)
    return np.array([_stream_id(i) for i in ids], dtype=np.int64).reshape(-1, 2)


class _Block:
    """Parsed entries: their stream ids (every entry read), how many predictions each logged
    (its `n` field, else 1) and gave as rows (0 for one that does not parse), and those rows.
    """

    def __init__(
        self, ids: np.ndarray, logged: np.ndarray, rows: np.ndarray, frame: pd.DataFrame
    ) -> None:
        self.ids, self.frame = ids, frame  # ids: int64 [n, 2] (ms, seq)
        self.logged, self.rows = logged, rows  # int64 [n]

    @classmethod
    def parse(cls, entries: list, manifest: c.Manifest) -> _Block:
        """Stream entries (`[id, fields]`, fields a flat list or a dict) → a block."""
        fields = list(map(itemgetter(1), entries))
        frame, rows = _parse(fields, manifest)
        logged = np.fromiter(map(entry_rows, fields), np.int64, len(fields))
        return cls(_stream_ids(list(map(itemgetter(0), entries))), logged, rows, frame)

    def newest(self, size: int | None) -> pd.DataFrame:
        """The rows of the last `size` logged predictions (all when None). The block holds
        the fewest entries that logged them (`_keep_newest`), so only the oldest entry's first
        rows can be too many.
        """
        excess = 0 if size is None or not len(self.rows) else int(self.logged.sum()) - size
        cut = min(excess, int(self.rows[0])) if excess > 0 else 0
        return self.frame.iloc[cut:].reset_index(drop=True) if cut else self.frame

    @classmethod
    def concat(
        cls,
        blocks: list[_Block],
        manifest: c.Manifest,
        drop: Callable[[np.ndarray, np.ndarray], int] | None = None,
    ) -> _Block:
        """The blocks one after the other, without the first `drop(ids, logged)` entries (an empty
        block when there are none). Columns are joined with numpy, once: `pd.concat` checked
        every row of the all-None `text` column, seconds on a 1M-row window.
        """
        blocks = [b for b in blocks if len(b.ids)]
        if not blocks:
            none = np.zeros(0, np.int64)
            return cls(np.zeros((0, 2), np.int64), none, none, _empty(manifest))

        def joined(name: str) -> np.ndarray:
            parts = [getattr(b, name) for b in blocks]
            return np.concatenate(parts) if len(parts) > 1 else parts[0]

        ids, logged, rows = joined("ids"), joined("logged"), joined("rows")
        k = max(0, drop(ids, logged)) if drop is not None else 0
        if len(blocks) == 1 and k == 0:
            return blocks[0]
        frames = [b.frame for b in blocks if len(b.frame)]
        skip = int(rows[:k].sum())
        if not frames or skip >= sum(len(f) for f in frames):
            frame = _empty(manifest)
        else:
            names = list(frames[0].columns)
            frame = pd.DataFrame(
                {n: np.concatenate([f[n].to_numpy() for f in frames])[skip:] for n in names},
                columns=names,
                copy=False,  # the arrays are new: no block consolidation (a copy of each)
            )
        return cls(ids[k:], logged[k:], rows[k:], frame)


def _keep_newest(logged: np.ndarray, size: int) -> int:
    """How many of the oldest entries can go while the rest still logged `size` predictions."""
    cum = np.concatenate([[0], np.cumsum(logged)])
    return max(0, int(np.searchsorted(cum, cum[-1] - size, "right")) - 1)


def _count_before(ids: np.ndarray, ms: int, seq: int = 0) -> int:
    """How many of the (ascending) stream ids come before `ms-seq`."""
    lo, hi = np.searchsorted(ids[:, 0], ms, "left"), np.searchsorted(ids[:, 0], ms, "right")
    return int(lo + np.searchsorted(ids[lo:hi, 1], seq, "left"))


FIRST_PAGE = 256  # entries of a backward read's first page


def _pages(
    raw: redis.Redis, start: str, batch: int, forward: bool = True, limit: int | None = None
) -> Iterator[list]:
    """Pages of stream entries, the next one fetched (by a thread) while the caller parses
    this one, so the Redis server's work overlaps the parse.

    Args:
        raw: a `_raw_client`.
        start: forward: an XRANGE min (`-`, `(<id>`, `<ms>-0`), read to the end; backward: an
            XREVRANGE max (`+`), read towards the start.
        batch: entries per call at most.
        forward: XRANGE (ascending pages) or XREVRANGE (descending).
        limit: forward: stop once more than `limit` rows were read; backward: stop once
            `limit` rows were read, asking for about as many entries as should hold them (a
            first page of `FIRST_PAGE` entries tells how many rows an entry holds).
    """

    def fetch(cursor: str, count: int) -> list:
        if forward:
            return raw.xrange(c.PREDICTIONS_STREAM, min=cursor, max="+", count=count)
        return raw.xrevrange(c.PREDICTIONS_STREAM, max=cursor, min="-", count=count)

    def count_after(entries: int, rows: int) -> int:
        if forward or limit is None:
            return batch
        if not entries:
            return min(batch, limit, FIRST_PAGE)
        per_entry = max(1.0, rows / entries)
        return max(0, min(batch, limit - rows, math.ceil((limit - rows) / per_entry) + 16))

    with ThreadPoolExecutor(1, thread_name_prefix="slicewise-window") as pool:
        entries = rows = 0
        count = count_after(0, 0)
        pending: Future | None = pool.submit(fetch, start, count) if count > 0 else None
        while pending is not None:
            chunk = pending.result()
            entries += len(chunk)
            if limit is not None:
                rows += sum(entry_rows(fields) for _, fields in chunk)
            more = len(chunk) == count and (
                limit is None or (rows <= limit if forward else rows < limit)
            )
            if more:
                count = count_after(entries, rows)
                more = count > 0
            pending = pool.submit(fetch, "(" + chunk[-1][0].decode(), count) if more else None
            yield chunk


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a read runs: the replies and parsed rows are
    millions of short-lived objects without cycles, and each collection they set off walked
    every object of the process (a fifth to a third of a whole-window read).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_block(
    client: redis.Redis,
    manifest: c.Manifest,
    size: int,
    minutes: float | None,
    batch: int,
    now: float | None = None,
) -> _Block:
    """The window read whole, page by page (the raw replies of a million entries would take
    gigabytes): the entries of the last `size` predictions, or those of the last `minutes`.
    """
    raw = _raw_client(client)
    if minutes is not None:
        start = _ms_id((time.time() if now is None else now) - minutes * 60)
        blocks = [_Block.parse(chunk, manifest) for chunk in _pages(raw, start, batch)]
        return _Block.concat(blocks, manifest)
    blocks = [
        _Block.parse(chunk[::-1], manifest)
        for chunk in _pages(raw, "+", batch, forward=False, limit=size)
    ]
    return _Block.concat(blocks[::-1], manifest, lambda ids, logged: _keep_newest(logged, size))


def read_window(
    client: redis.Redis,
    manifest: c.Manifest,
    size: int = 5000,
    minutes: float | None = None,
    batch: int = 10_000,
) -> pd.DataFrame:
    """The last `size` predictions, or those of the last `minutes`, as reference-profile columns.

    Entries from other model versions are kept (drift is about traffic); records that do not
    parse are skipped. An empty log gives an empty frame with the right columns.

    Raises:
        WindowError: Redis cannot be read.
    """
    try:
        with _gc_paused():
            block = _read_block(client, manifest, size, minutes, batch)
        return block.newest(None if minutes is not None else size)
    except redis.RedisError as exc:
        raise WindowError(f"cannot read {c.PREDICTIONS_STREAM} from Redis: {exc}") from exc


class Window:
    """The monitor's window kept between passes: each `refresh` reads only the entries logged
    after the last one it holds and drops those that fell out of the window, so a pass on a
    1M-row window reads about what was logged since the previous pass.

    It gives the same rows as a fresh `read_window`: when the entry it saw last is no longer
    in the stream (trimmed past it, the stream deleted or replaced), when more predictions
    than the window holds were logged since, or on the first call, it reads the window whole; a
    trim of older entries drops them here too. Entries deleted from the middle of the stream
    (`XDEL`, which slicewise never does) are not noticed.

    Args:
        manifest: the manifest whose labels and slices give the columns.
        size: the last `size` predictions (ignored when `minutes` is set).
        minutes: or the entries of the last `minutes`.
        batch: entries per Redis call.
    """

    def __init__(
        self,
        manifest: c.Manifest,
        size: int = 5000,
        minutes: float | None = None,
        batch: int = 10_000,
    ) -> None:
        self.manifest, self.size, self.minutes, self.batch = manifest, size, minutes, batch
        self._block: _Block | None = None
        self._raw: redis.Redis | None = None
        self.full_reads = 0  # how many refreshes read the window whole
        self.last_read = 0  # entries read by the last refresh

    def reset(self, manifest: c.Manifest | None = None) -> None:
        """Forget the window (the next refresh reads it whole), e.g. for another manifest."""
        self.manifest = manifest or self.manifest
        self._block = None

    def refresh(self, client: redis.Redis, now: float | None = None) -> pd.DataFrame:
        """Bring the window up to date with the stream and return it.

        Args:
            client: Redis holding the prediction log.
            now: the time the window ends at (`minutes` windows; default: now).

        Raises:
            WindowError: Redis cannot be read.
        """
        now = time.time() if now is None else now
        try:
            with _gc_paused():
                self._block = self._update(client, now)
        except redis.RedisError as exc:
            self._block = None
            raise WindowError(f"cannot read {c.PREDICTIONS_STREAM} from Redis: {exc}") from exc
        return self._block.newest(None if self.minutes is not None else self.size)

    def _full(self, client: redis.Redis, now: float) -> _Block:
        self.full_reads += 1
        block = _read_block(client, self.manifest, self.size, self.minutes, self.batch, now)
        self.last_read = len(block.ids)
        return block

    def _read_last(self, block: _Block, entry: list) -> bool:
        """Whether `entry`, the stream's entry at the block's last id, is the one the block read
        last: a stream deleted and written again within one millisecond can reuse the id.
        """
        now, n = _Block.parse(entry, self.manifest), int(block.rows[-1])
        if now.logged[0] != block.logged[-1] or now.rows[0] != n:
            return False
        tail = block.frame["id"].to_numpy()[len(block.frame) - n :]  # the predictions it logged
        return bool(np.array_equal(now.frame["id"].to_numpy(), tail))

    def _update(self, client: redis.Redis, now: float) -> _Block:
        block = self._block
        if block is None or not len(block.ids):
            return self._full(client, now)
        if self._raw is None or self._raw.connection_pool is not client.connection_pool:
            self._raw = _raw_client(client)
        last = "{}-{}".format(*block.ids[-1])
        pipe = self._raw.pipeline(transaction=False)
        pipe.xrange(c.PREDICTIONS_STREAM, min=last, max=last)
        pipe.xrange(c.PREDICTIONS_STREAM, min="-", max="+", count=1)
        still_there, first = pipe.execute()
        if not still_there or not self._read_last(block, still_there):  # trimmed past it, or
            return self._full(client, now)  # a new stream
        limit = None if self.minutes is not None else self.size
        new = [
            _Block.parse(chunk, self.manifest)
            for chunk in _pages(self._raw, "(" + last, self.batch, limit=limit)
        ]
        self.last_read = sum(len(b.ids) for b in new)
        logged = sum(int(b.logged.sum()) for b in new)  # predictions the new entries logged
        if limit is not None and logged > limit:  # the whole window is new: read only it
            return self._full(client, now)
        first_id = _stream_id(first[0][0])
        cutoff = None if self.minutes is None else int((now - self.minutes * 60) * 1000)

        def drop(ids: np.ndarray, logged: np.ndarray) -> int:  # trimmed, or out of the window
            k = _count_before(ids, *first_id)
            if cutoff is not None:
                return max(k, _count_before(ids, cutoff))
            return max(k, _keep_newest(logged, self.size))

        block = _Block.concat([block, *new], self.manifest, drop)
        return block


def _columns(manifest: c.Manifest) -> list[str]:
    return (
        [
            "id",
            "ts",
            "model_version",
            c.PREDICTED_LABEL_COLUMN,
            c.CONFIDENCE_COLUMN,
            c.TEXT_LENGTH_COLUMN,
            "text",
            c.LEARNED_SLICES_FIELD,
        ]
        + [c.prob_column(x) for x in manifest.labels]
        + [c.slice_score_column(s) for s in manifest.slice_names]
    )


def _empty(manifest: c.Manifest) -> pd.DataFrame:
    return pd.DataFrame([], columns=_columns(manifest))


def records_frame(fields: list[dict], manifest: c.Manifest, chunk: int = 20_000) -> pd.DataFrame:
    """Stream entries → DataFrame (id, ts, model_version + reference-profile columns).

    Parsed `chunk` entries at a time: the one-field entries with one msgspec call, older
    field-by-field entries column by column; entries that do not parse are skipped, as
    `PredictionRecord.from_fields` would reject them. An entry's fields may be a dict or Redis's
    flat `[field, value, ...]` list.
    """
    parts = [_parse(fields[i : i + chunk], manifest)[0] for i in range(0, len(fields), chunk)]
    if not parts:
        return _empty(manifest)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _parse(block: list, manifest: c.Manifest) -> tuple[pd.DataFrame, np.ndarray]:
    """Entries → (frame of the rows that parse, how many rows each entry gave). Entries of
    many predictions (`log_entries`) and one-field entries (`PredictionRecord.to_fields`) are
    decoded a run at a time; entries an older service wrote field by field go column by
    column; a block holding several kinds keeps the entries' order.
    """
    if not block:
        return _empty(manifest), np.zeros(0, np.int64)
    batches = _batch_values(block)
    if batches is not None:
        return _batch_frame(batches, manifest)
    packed = _packed_values(block)
    if packed is not None:
        frame, ok = _packed_frame(packed, manifest)
        return frame, ok.astype(np.int64)
    parts = []
    entries = zip(map(_entry_value, block), block, strict=True)
    for kind, group in groupby(entries, key=lambda x: x[0][0]):
        run = list(group)
        values = [value for (_, value), _ in run] if kind else [f for _, f in run]
        if kind == BATCH_FIELD:
            parts.append(_batch_frame(values, manifest))
            continue
        frame, ok = _packed_frame(values, manifest) if kind else _legacy_parse(values, manifest)
        parts.append((frame, ok.astype(np.int64)))
    rows = np.concatenate([r for _, r in parts])
    frames = [f for f, _ in parts if len(f)]  # an empty part would make columns `object`
    if len(frames) < 2:
        return (frames[0] if frames else _empty(manifest)), rows
    return pd.concat(frames, ignore_index=True), rows


def _batch_values(block: list) -> list | None:
    """The batch payloads when every entry is a raw `[BATCH_FIELD, payload, "n", count]`
    reply (what the service writes); None when not.
    """
    first = block[0]
    if not isinstance(first, list) or not first or first[0] not in (b"b", "b"):
        return None
    key = first[0]
    if not all(isinstance(f, list) and len(f) >= 2 and f[0] == key for f in block):
        return None
    return [f[1] for f in block]


def _packed_values(block: list) -> list | None:
    """The packed values when every entry is a raw `[PREDICTION_FIELD, value]` reply (the
    usual block, checked without a call per entry); None when not.
    """
    if not isinstance(block[0], list) or set(map(len, block)) != {2}:
        return None
    flat = list(chain.from_iterable(block))  # [field, value] of each entry, one after another
    names, name = flat[0::2], flat[0]
    if name not in (c.PREDICTION_FIELD, c.PREDICTION_FIELD.encode()):
        return None
    if names.count(name) < len(block):
        return None
    return flat[1::2]


def _entry_value(fields: dict | list) -> tuple[str | None, bytes | str | None]:
    """An entry's kind and value: (`BATCH_FIELD`, its payload), (`PREDICTION_FIELD`, its
    JSON), or (None, None) for a field-by-field entry of an older service.
    """
    d = _as_dict(fields)
    for name in (BATCH_FIELD, c.PREDICTION_FIELD):  # other fields beside it are ignored
        for key in (name, name.encode()):
            if key in d:
                return name, d[key]
    return None, None


def _batch_frame(values: list, manifest: c.Manifest) -> tuple[pd.DataFrame, np.ndarray]:
    """Batch payloads → (frame, rows per entry): one msgspec call decodes them all, then
    each column is one `frombuffer` over the entries' bytes joined. A payload that does not
    parse gives no rows; rows with a non-finite confidence are skipped.
    """
    batches = decode_batches([v if isinstance(v, bytes) else v.encode() for v in values])
    sizes = np.array([len(b) if b is not None else 0 for b in batches], np.int64)
    good = [b for b in batches if b is not None and len(b)]
    if not good:
        return _empty(manifest), sizes

    def joined(name: str, dtype: str) -> np.ndarray:
        return np.frombuffer(b"".join(map(attrgetter(name), good)), dtype)

    def strings(name: str) -> list:
        return list(chain.from_iterable(map(attrgetter(name), good)))

    def optional(name: str, missing: object) -> list | None:
        columns = list(map(attrgetter(name), good))
        if all(col is None for col in columns):
            return None
        return list(
            chain.from_iterable(
                col or [missing] * len(b) for col, b in zip(columns, good, strict=True)
            )
        )

    counts = [len(b) for b in good]
    frame, finite = _frame(
        manifest,
        ids=strings("ids"),
        ts=joined("ts", "<f8"),
        versions=np.repeat(np.array([b.model_version for b in good], dtype=object), counts),
        labels=_predicted(good),
        confidence=joined("confidence", "<f8"),
        lengths=joined("text_length", "<i8").astype(np.int64),
        texts=optional("texts", None),
        learned=optional("learned_slices", ""),
        probs=_batch_table(good, "labels", "probabilities", manifest.labels, float("nan")),
        slices=_batch_table(good, "slice_names", "slices", manifest.slice_names, 0.0),
    )
    if not finite.all():
        entry = np.repeat(np.arange(len(good)), counts)
        sizes[sizes > 0] = np.bincount(entry, weights=finite, minlength=len(good)).astype(np.int64)
    return frame, sizes


def _predicted(batches: list[LoggedBatch]) -> np.ndarray:
    """The batches' predicted labels, one string object per distinct label."""
    names = sorted({name for b in batches for name in b.predicted_names})
    lookup = np.array(names, dtype=object)
    codes = np.concatenate(
        [
            np.searchsorted(lookup, np.array(b.predicted_names, dtype=object))[
                np.frombuffer(b.predicted, "<u2")
            ]
            for b in batches
        ]
    )
    return lookup[codes]


def _batch_table(
    batches: list[LoggedBatch], names: str, data: str, keys: list[str], default: float
) -> np.ndarray:
    """The batches' `data` matrices (columns named by their `names`) → one float matrix with
    a column per key (`default` where a batch has no such column).
    """

    def mapped(columns: list[str], matrix: np.ndarray) -> np.ndarray:
        if columns == keys:
            return matrix
        out = np.full((len(matrix), len(keys)), default)
        for j, key in enumerate(keys):
            if key in columns:
                out[:, j] = matrix[:, columns.index(key)]
        return out

    first = getattr(batches[0], names)
    if all(getattr(b, names) == first for b in batches):  # the usual case: one layout
        matrix = np.frombuffer(b"".join(map(attrgetter(data), batches)), "<f8")
        return mapped(
            first, matrix.reshape(-1, len(first)) if first else np.zeros((len(matrix), 0))
        )
    return np.concatenate(
        [
            mapped(
                getattr(b, names),
                np.frombuffer(getattr(b, data), "<f8").reshape(len(b), len(getattr(b, names))),
            )
            for b in batches
        ]
    )


def _legacy_parse(block: list, manifest: c.Manifest) -> tuple[pd.DataFrame, np.ndarray]:
    """Entries written field by field (services before the one-field entry)."""
    try:
        columns = _flat_columns(block)
        if columns is None:
            block = [_as_dict(f) for f in block]
            columns = _dict_columns(block)
        return _fast_frame(columns, len(block), manifest)
    except (KeyError, ValueError, TypeError, AttributeError):
        return _slow_frame([_as_dict(f) for f in block], manifest, with_ok=True)


@functools.lru_cache(maxsize=8)
def _entry_decoders(
    labels: tuple[str, ...], slices: tuple[str, ...]
) -> tuple[msgspec.json.Decoder, msgspec.json.Decoder, Callable[[Any], tuple]]:
    """Decoders of packed entries (a JSON array of them, and one) into structs with a field
    per label and slice of the manifest, and a getter of their numbers in column order: ts,
    confidence, text length, probabilities, slice scores.
    """
    nan = float("nan")

    def table(name: str, keys: tuple[str, ...], default: float) -> type:
        names = [f"f{i}" for i in range(len(keys))]
        fields = [(n, float | None, default) for n in names]
        return msgspec.defstruct(name, fields, rename=dict(zip(names, keys, strict=True)), gc=False)

    entry = msgspec.defstruct(
        "Entry",
        [
            ("id", str),
            ("ts", float),
            ("model_version", str),
            ("label", str),
            ("confidence", float | None),
            ("probabilities", table("Probabilities", labels, nan)),
            ("slices", table("Slices", slices, 0.0)),
            ("text_length", int),
            ("text", str | None, None),
            ("learned_slices", list[str] | None, None),
        ],
        gc=False,
    )
    numbers = attrgetter(
        "ts",
        "confidence",
        "text_length",
        *[f"probabilities.f{i}" for i in range(len(labels))],
        *[f"slices.f{i}" for i in range(len(slices))],
    )
    return msgspec.json.Decoder(list[entry]), msgspec.json.Decoder(entry), numbers


def _packed_frame(values: list, manifest: c.Manifest) -> tuple[pd.DataFrame, np.ndarray]:
    """Packed entries → (frame, which parsed): one msgspec call decodes them all into typed
    structs; when any does not decode, each is decoded alone and the bad ones are skipped.
    """
    labels, slices = tuple(manifest.labels), tuple(manifest.slice_names)
    many, one, numbers = _entry_decoders(labels, slices)
    raw = isinstance(values[0], bytes)
    joined = b"[" + b",".join(values) + b"]" if raw else "[" + ",".join(values) + "]"
    try:
        rows = many.decode(joined)
    except (msgspec.DecodeError, UnicodeDecodeError):
        rows = None
    ok = np.ones(len(values), bool)
    if rows is None or len(rows) != len(values):
        rows = []
        for i, v in enumerate(values):
            try:
                rows.append(one.decode(v))
            except (msgspec.DecodeError, UnicodeDecodeError):
                ok[i] = False
    if not rows:
        return _empty(manifest), ok
    n, width = len(rows), 3 + len(labels) + len(slices)
    try:  # numbers straight into one array, without a tuple → row conversion each
        table = np.fromiter(chain.from_iterable(map(numbers, rows)), np.float64, n * width)
    except TypeError:  # a null (a non-finite number was logged): NaN
        table = np.array(list(map(numbers, rows)), dtype=np.float64)
    table = table.reshape(n, width)
    k = 3 + len(labels)
    texts = list(map(attrgetter("text"), rows))
    learned = list(map(attrgetter("learned_slices"), rows))
    frame, finite = _frame(
        manifest,
        ids=list(map(attrgetter("id"), rows)),
        ts=table[:, 0],
        versions=_categories(list(map(attrgetter("model_version"), rows)), raw=False),
        labels=_categories(list(map(attrgetter("label"), rows)), raw=False),
        confidence=table[:, 1],
        lengths=table[:, 2].astype(np.int64),
        texts=texts if texts.count(None) < len(texts) else None,
        learned=[",".join(x) if x else "" for x in learned]
        if learned.count(None) < len(learned)
        else None,
        probs=table[:, 3:k],
        slices=table[:, k:],
    )
    ok[ok] = finite
    return frame, ok


def _as_dict(fields: dict | list) -> dict:
    return (
        fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=False))
    )


def _flat_columns(block: list) -> Callable[[str], Sequence | None] | None:
    """Column access to flat field lists that all name the same fields in the same order
    (what services before the one-field entry wrote); None when they do not.
    """
    first = block[0]
    if not isinstance(first, list) or len(first) % 2 or len(set(map(len, block))) != 1:
        return None
    transposed = list(zip(*block, strict=True))
    names = first[0::2]
    for j, name in enumerate(names):
        if transposed[2 * j].count(name) != len(block):
            return None
    raw = isinstance(names[0], bytes)
    where = {(n.decode() if raw else n): 2 * j + 1 for j, n in enumerate(names)}

    def col(name: str) -> Sequence | None:
        return transposed[where[name]] if name in where else None

    return col


OPTIONAL_FIELDS = ("text", c.LEARNED_SLICES_FIELD)  # written only when there is something


def _dict_columns(block: list[dict]) -> Callable[[str], Sequence | None]:
    raw = bool(block) and isinstance(next(iter(block[0])), bytes)

    def col(name: str) -> Sequence | None:
        k = name.encode() if raw else name
        if name in OPTIONAL_FIELDS:
            values = [f.get(k) for f in block]
            return values if any(v is not None for v in values) else None
        return [f[k] for f in block]

    return col


def _text(x: str | bytes | None) -> str | None:
    return x.decode() if isinstance(x, bytes) else x


def _strings(values: Sequence, raw: bool) -> list[str]:
    """Decode a column of bytes in one call (no separator byte may occur inside a value)."""
    if not raw:
        return list(values)
    joined = b"\x00".join(values)
    out = joined.decode().split("\x00")
    if len(out) != len(values):  # a value held the separator: decode one by one
        return [v.decode() for v in values]
    return out


def _categories(values: Sequence, raw: bool) -> np.ndarray:
    """A column with few distinct values (labels, versions): one string object per value."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    names = np.array([u.decode() if raw else u for u in uniques] + [None], dtype=object)
    return names[codes]


@functools.lru_cache(maxsize=32)
def _table_decoder(keys: tuple[str, ...], default: float) -> msgspec.json.Decoder:
    """A decoder of a JSON array of objects into structs with a float field per key."""
    names = [f"f{i}" for i in range(len(keys))]
    struct = msgspec.defstruct(
        "Fields", [(n, float, default) for n in names], rename=dict(zip(names, keys, strict=True))
    )
    return msgspec.json.Decoder(list[struct])


def _json_table(values: Sequence, raw: bool, keys: list[str], default: float) -> np.ndarray:
    """JSON objects → float matrix [n, len(keys)] (`default` where a key is missing).

    msgspec decodes them into structs, 3× faster than `json.loads` into dicts; values that are
    not all JSON objects of numbers (NaN, strings, null) take `json.loads`'s path instead.
    """
    sep = b"," if raw else ","
    joined = b"[" + sep.join(values) + b"]" if raw else "[" + sep.join(values) + "]"
    if not keys:
        return np.zeros((len(values), 0))
    try:
        rows = _table_decoder(tuple(keys), default).decode(joined)
    except (msgspec.DecodeError, UnicodeDecodeError):
        rows = None
    if rows is not None and len(rows) == len(values):
        fields = attrgetter(*[f"f{i}" for i in range(len(keys))])
        table = np.array(list(map(fields, rows)), dtype=np.float64)
        return table.reshape(len(values), len(keys))
    objects = _json_objects(values, raw)
    return np.array([[d.get(k, default) for k in keys] for d in objects], dtype=np.float64)


def _json_objects(values: Sequence, raw: bool) -> list:
    sep = b"," if raw else ","
    objects = json.loads(b"[" + sep.join(values) + b"]" if raw else "[" + sep.join(values) + "]")
    if len(objects) != len(values) or not all(isinstance(d, dict) for d in objects):
        raise ValueError("a probabilities or slices field is not one JSON object")
    return objects


def _fast_frame(
    col: Callable[[str], Sequence | None], n: int, manifest: c.Manifest
) -> tuple[pd.DataFrame, np.ndarray]:
    """Columnar parse of entries that all parse (raises on the first that does not)."""
    ids = col("id")
    if ids is None:
        raise KeyError("id")
    raw = n > 0 and isinstance(ids[0], bytes)

    def need(name: str) -> Sequence:
        values = col(name)
        if values is None:
            raise KeyError(name)
        return values

    def as_float(values: Sequence) -> np.ndarray:
        return np.array(values).astype(np.float64) if n else np.zeros(0)

    confidence = as_float(need("confidence"))
    lengths = np.array(need("text_length")).astype(np.int64) if n else np.zeros(0, np.int64)
    ts = as_float(need("ts"))
    nan = float("nan")
    probs = _json_table(need("probabilities"), raw, manifest.labels, nan)
    slices = _json_table(need("slices"), raw, manifest.slice_names, 0.0)
    texts, learned = col("text"), col(c.LEARNED_SLICES_FIELD)
    return _frame(
        manifest,
        ids=_strings(ids, raw),
        ts=ts,
        versions=_categories(need("model_version"), raw),
        labels=_categories(need("label"), raw),
        confidence=confidence,
        lengths=lengths,
        texts=[_text(t) for t in texts] if _any_set(texts) else None,
        learned=[_text(x) or "" for x in learned] if _any_set(learned) else None,
        probs=probs,
        slices=slices,
    )


def _any_set(values: Sequence | None) -> bool:
    return values is not None and any(v is not None for v in values)


def _frame(
    manifest: c.Manifest,
    *,
    ids: list[str],
    ts: np.ndarray,
    versions: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    lengths: np.ndarray,
    texts: list | None,
    learned: list | None,
    probs: np.ndarray,
    slices: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The window's columns → (frame of the rows with a finite confidence, which those are).
    `texts`/`learned` None: no entry has one.
    """
    n = len(ids)
    data: dict[str, object] = {
        "id": _objects(ids),
        "ts": ts,
        "model_version": versions,
        c.PREDICTED_LABEL_COLUMN: labels,
        c.CONFIDENCE_COLUMN: confidence,
        c.TEXT_LENGTH_COLUMN: lengths,
        "text": _objects(texts) if texts is not None else np.empty(n, dtype=object),  # all None
        c.LEARNED_SLICES_FIELD: _objects(learned)
        if learned is not None
        else np.full(n, "", dtype=object),
    }
    for i, lab in enumerate(manifest.labels):
        data[c.prob_column(lab)] = probs[:, i]
    for i, name in enumerate(manifest.slice_names):
        data[c.slice_score_column(name)] = slices[:, i]
    # object arrays, not lists, and copy=False: pandas would otherwise convert each list with
    # type inference and copy every column into consolidated blocks (2 of the 3 s a 1M-row
    # frame took)
    frame = pd.DataFrame(data, columns=_columns(manifest), copy=False)
    finite = np.isfinite(confidence)
    return (frame if finite.all() else frame[finite].reset_index(drop=True)), finite


def _objects(values: Sequence) -> np.ndarray:
    """A list as a 1-D object array (each value one element, whatever its type)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _slow_frame(fields: list[dict], manifest: c.Manifest, with_ok: bool = False) -> Any:
    """Entry by entry through `PredictionRecord.from_fields`, skipping those that do not parse
    (with `with_ok`: also which entries parsed).
    """
    rows, ok = [], np.zeros(len(fields), bool)
    for i, f in enumerate(fields):
        try:
            rec = c.PredictionRecord.from_fields(f)
            row = {
                "id": rec.id,
                "ts": rec.ts,
                "model_version": rec.model_version,
                c.PREDICTED_LABEL_COLUMN: rec.label,
                c.CONFIDENCE_COLUMN: rec.confidence,
                c.TEXT_LENGTH_COLUMN: rec.text_length,
                "text": rec.text,
                c.LEARNED_SLICES_FIELD: ",".join(rec.learned_slices),
            }
            for lab in manifest.labels:
                row[c.prob_column(lab)] = float(rec.probabilities.get(lab, float("nan")))
            for s in manifest.slice_names:
                row[c.slice_score_column(s)] = float(rec.slices.get(s, 0.0))
        except (KeyError, ValueError, TypeError, AttributeError):  # e.g. JSON that is no object
            continue
        rows.append(row)
        ok[i] = True
    frame = pd.DataFrame(rows, columns=_columns(manifest))
    return (frame, ok) if with_ok else frame


def read_feedback(
    client: redis.Redis, count: int = 100_000, kept: FeedbackLabels | None = None
) -> pd.DataFrame:
    """The feedback labels: columns `id`, `label` (one row per id: its current label).

    Args:
        client: Redis holding the feedback.
        count: how many of the newest feedback events a whole read takes.
        kept: labels kept between calls: only the events logged since the last call are read.

    Raises:
        WindowError: Redis cannot be read.
    """
    try:
        labels = kept.read(client) if kept is not None else read_feedback_labels(client, count)
    except redis.RedisError as exc:
        raise WindowError(f"cannot read {c.FEEDBACK_STREAM} from Redis: {exc}") from exc
    return pd.DataFrame(list(labels.items()), columns=["id", "label"])
