"""Prediction-log entries that hold many predictions each (docs/design.md §7).

The service writes each flush of its log buffer as one `slicewise:predictions` entry (one per
run of records with the same model version, labels and slices): field `b` holds the records
column by column (`LoggedBatch`, msgpack; numbers as little-endian arrays), field `n` their
count. A reader turns a million predictions into columns with a few `numpy.frombuffer` calls
instead of a million JSON objects (bench/results/monitor_scale.md).

The stream is capped in *predictions*, not entries: `log_script` adds an entry and drops the
oldest entries while the stream would still hold `max_rows` predictions without them; the count
is kept in `PREDICTION_ROWS_KEY`. Entries written one prediction each (`PredictionRecord.to_fields`,
and the field-by-field entries of older services) count one prediction and are still read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import groupby

import msgspec
import numpy as np
import redis

from slicewise.core.contracts import PREDICTIONS_STREAM, PredictionRecord

BATCH_FIELD = "b"  # the records, column by column (`LoggedBatch`, msgpack)
ROWS_FIELD = "n"  # how many records the entry holds


class LoggedBatch(msgspec.Struct, array_like=True, gc=False):
    """The records of one entry. Numbers are little-endian arrays: `ts`, `confidence` float64
    [n]; `text_length` int64 [n]; `probabilities` float64 [n, len(labels)] and `slices` float64
    [n, len(slice_names)], row-major, columns in the order of `labels` / `slice_names`; each
    record's label is `predicted_names[predicted[i]]` (`predicted` uint16 [n]).
    """

    model_version: str
    labels: list[str]  # the probabilities' labels
    slice_names: list[str]
    ids: list[str]
    predicted_names: list[str]
    predicted: bytes
    ts: bytes
    confidence: bytes
    text_length: bytes
    probabilities: bytes
    slices: bytes
    texts: list[str | None] | None = None  # only when a record has its text logged
    learned_slices: list[str] | None = None  # per record, comma-joined; only when one is set

    def __len__(self) -> int:
        return len(self.ids)

    def predicted_labels(self) -> list[str]:
        """Each record's label."""
        names = np.array(self.predicted_names, dtype=object)
        return names[np.frombuffer(self.predicted, "<u2")].tolist()

    def valid(self) -> bool:
        """Whether every column holds `len(self)` values."""
        n = len(self.ids)
        return (
            len(self.predicted) == 2 * n
            and len(self.ts) == len(self.confidence) == len(self.text_length) == 8 * n
            and len(self.probabilities) == 8 * n * len(self.labels)
            and len(self.slices) == 8 * n * len(self.slice_names)
            and (
                n == 0
                or int(np.frombuffer(self.predicted, "<u2").max()) < len(self.predicted_names)
            )
            and (self.texts is None or len(self.texts) == n)
            and (self.learned_slices is None or len(self.learned_slices) == n)
        )


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(LoggedBatch)
_MANY = msgspec.msgpack.Decoder(list[LoggedBatch])


def _f8(values: Sequence[float]) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


def encode_batches(records: Sequence[PredictionRecord]) -> list[tuple[bytes, int]]:
    """Records → (`LoggedBatch` payload, record count) per run of records with the same model
    version, labels and slices, in the records' order.
    """

    def key(r: PredictionRecord) -> tuple:
        return r.model_version, tuple(r.probabilities), tuple(r.slices)

    out = []
    for (version, labels, slice_names), group in groupby(records, key):
        rs = list(group)
        names = list(dict.fromkeys(r.label for r in rs))
        texts = [r.text for r in rs]
        learned = [",".join(r.learned_slices) for r in rs]
        batch = LoggedBatch(
            model_version=version,
            labels=list(labels),
            slice_names=list(slice_names),
            ids=[r.id for r in rs],
            predicted_names=names,
            predicted=np.asarray([names.index(r.label) for r in rs], "<u2").tobytes(),
            ts=_f8([r.ts for r in rs]),
            confidence=_f8([r.confidence for r in rs]),
            text_length=np.asarray([r.text_length for r in rs], dtype="<i8").tobytes(),
            probabilities=_f8([r.probabilities[k] for r in rs for k in labels]),
            slices=_f8([r.slices[k] for r in rs for k in slice_names]),
            texts=texts if texts.count(None) < len(texts) else None,
            learned_slices=learned if any(learned) else None,
        )
        out.append((_ENCODER.encode(batch), len(rs)))
    return out


def decode_batch(payload: bytes | str) -> LoggedBatch:
    """One `BATCH_FIELD` value → its batch.

    Raises:
        ValueError: the payload is no `LoggedBatch`, or its columns disagree in length.
    """
    try:
        batch = _DECODER.decode(payload.encode() if isinstance(payload, str) else payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"prediction-log batch does not parse: {exc}") from None
    if not batch.valid():
        raise ValueError("prediction-log batch: columns of different lengths")
    return batch


def decode_batches(payloads: Sequence[bytes]) -> list[LoggedBatch | None]:
    """Many payloads → their batches in one msgspec call (None for one that does not parse)."""
    if not payloads:
        return []
    joined = b"\xdd" + len(payloads).to_bytes(4, "big") + b"".join(payloads)  # msgpack array32
    try:
        batches: list[LoggedBatch | None] = list(_MANY.decode(joined))
    except (msgspec.DecodeError, TypeError):
        batches = []
    if len(batches) != len(payloads):  # one did not parse: each alone
        batches = []
        for p in payloads:
            try:
                batches.append(decode_batch(p))
            except (ValueError, TypeError):
                batches.append(None)
    return [b if b is not None and b.valid() else None for b in batches]


def batch_records(batch: LoggedBatch) -> list[PredictionRecord]:
    """The records of a batch, in logged order."""
    n = len(batch)
    ts = np.frombuffer(batch.ts, "<f8")
    conf = np.frombuffer(batch.confidence, "<f8")
    lengths = np.frombuffer(batch.text_length, "<i8")
    probs = np.frombuffer(batch.probabilities, "<f8").reshape(n, len(batch.labels))
    slices = np.frombuffer(batch.slices, "<f8").reshape(n, len(batch.slice_names))
    predicted = batch.predicted_labels()
    return [
        PredictionRecord(
            id=batch.ids[i],
            ts=float(ts[i]),
            model_version=batch.model_version,
            label=predicted[i],
            confidence=float(conf[i]),
            probabilities=dict(zip(batch.labels, probs[i].tolist(), strict=True)),
            slices=dict(zip(batch.slice_names, slices[i].tolist(), strict=True)),
            text_length=int(lengths[i]),
            text=batch.texts[i] if batch.texts is not None else None,
            learned_slices=[
                s for s in (batch.learned_slices[i] if batch.learned_slices else "").split(",") if s
            ],
        )
        for i in range(n)
    ]


def _field(fields: Mapping, name: str) -> bytes | str | None:
    for key in (name, name.encode()):
        if key in fields:
            return fields[key]
    return None


def entry_records(fields: Mapping[str | bytes, str | bytes]) -> list[PredictionRecord]:
    """The records of one stream entry, whichever format wrote it.

    Raises:
        KeyError, ValueError: the entry does not parse (as `PredictionRecord.from_fields`).
    """
    payload = _field(fields, BATCH_FIELD)
    if payload is None:
        return [PredictionRecord.from_fields(fields)]
    return [r for r in batch_records(decode_batch(payload)) if math.isfinite(r.confidence)]


def entry_rows(fields: Mapping | list) -> int:
    """How many predictions an entry logged, as its `ROWS_FIELD` says (1 without one). `fields`:
    a mapping, or Redis's flat `[field, value, ...]` reply (the service's `[b, …, n, …]` is
    read without building a dict).
    """
    if isinstance(fields, list):
        if len(fields) == 2:  # [r, json]: one prediction
            return 1
        if len(fields) == 4 and fields[2] in (b"n", "n"):
            n = fields[3]
        else:
            n = _field(dict(zip(fields[::2], fields[1::2], strict=False)), ROWS_FIELD)
    else:
        n = _field(fields, ROWS_FIELD)
    try:
        return max(1, int(n)) if n is not None else 1
    except (TypeError, ValueError):
        return 1


def _entries(client: redis.Redis, newest_first: bool, page: int = 1000) -> Iterator[Mapping]:
    """The fields of every entry of the prediction stream, read a page at a time."""
    cursor = "+" if newest_first else "-"
    while True:
        if newest_first:
            chunk = client.xrevrange(PREDICTIONS_STREAM, max=cursor, min="-", count=page)
        else:
            chunk = client.xrange(PREDICTIONS_STREAM, min=cursor, max="+", count=page)
        yield from (fields for _, fields in chunk)
        if len(chunk) < page:
            return
        last = chunk[-1][0]
        cursor = "(" + (last.decode() if isinstance(last, bytes) else last)


def logged_records(client: redis.Redis, count: int | None = None) -> Iterator[PredictionRecord]:
    """The newest `count` logged predictions (all when None), newest first; entries that do not
    parse are skipped.
    """
    seen = 0
    for fields in _entries(client, newest_first=True):
        try:
            records = entry_records(fields)
        except (KeyError, ValueError):
            continue
        for rec in reversed(records):
            if count is not None and seen >= count:
                return
            seen += 1
            yield rec


def logged_count(client: redis.Redis) -> int:
    """How many predictions the stream holds (entries read one by one: for tests and tools)."""
    return sum(map(entry_rows, _entries(client, newest_first=False)))


# KEYS: stream, rows counter. ARGV: payload, record count, most predictions kept.
# The counter starts from the stream's length when it is missing or the stream is new (entries
# of older services hold one prediction each). The oldest entries go while the stream keeps
# `max_rows` predictions without them, so it holds max_rows .. max_rows + one entry's rows.
_LOG_LUA = """
local stream, counter = KEYS[1], KEYS[2]
local n, max_rows = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', counter) == 0 or redis.call('EXISTS', stream) == 0 then
  redis.call('SET', counter, redis.call('XLEN', stream))
end
local id = redis.call('XADD', stream, '*', 'b', ARGV[1], 'n', ARGV[2])
local rows = redis.call('INCRBY', counter, n)
while rows > max_rows do
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local f, k = first[2], 1
  for i = 1, #f, 2 do
    if f[i] == 'n' then k = tonumber(f[i + 1]) or 1 end
  end
  if first[1] == id or rows - k < max_rows then break end
  redis.call('XTRIM', stream, 'MAXLEN', redis.call('XLEN', stream) - 1)
  rows = redis.call('DECRBY', counter, k)
end
return id
"""


def log_script(client: redis.Redis) -> redis.commands.core.Script:
    """The script that logs one batch: call it with `keys=[PREDICTIONS_STREAM,
    PREDICTION_ROWS_KEY]`, `args=[payload, count, max_rows]` (also inside a pipeline).
    """
    return client.register_script(_LOG_LUA)
