"""Shared contracts: bundle validation errors and the prediction-log record round trip."""

from __future__ import annotations

import json
import math

import pytest

from slicewise.core.contracts import Bundle, BundleError, PredictionRecord
from tests.conftest import legacy_fields


def _manifest(**over) -> dict:
    m = {
        "version": "v1",
        "created_at": "2026-01-01T00:00:00+00:00",
        "labels": ["a", "b"],
        "slices": [{"name": "neg", "threshold": 0.4, "monitored": True}],
        "max_length": 32,
        "backbone": "tiny",
    }
    m.update(over)
    return m


def _bundle(tmp_path, manifest) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_loads_and_exposes_slices(tmp_path) -> None:
    _bundle(tmp_path, _manifest())
    b = Bundle.load(tmp_path)
    assert b.manifest.thresholds == {"neg": 0.4}
    assert b.manifest.monitored_slices == ["neg"]
    assert b.model_file(prefer_int8=True).name == "model.onnx"  # no int8 file: falls back


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: (p / "model.onnx").unlink(), "model.onnx is missing"),
        (lambda p: (p / "manifest.json").write_text("{"), "is not valid JSON"),
        (
            lambda p: (p / "manifest.json").write_text(json.dumps(_manifest(labels=["a"]))),
            "field 'labels'",
        ),
        (
            lambda p: (p / "manifest.json").write_text(json.dumps(_manifest(schema_version=9))),
            "schema_version 9",
        ),
    ],
)
def test_bad_bundle_names_the_problem(tmp_path, mutate, message) -> None:
    _bundle(tmp_path, _manifest())
    mutate(tmp_path)
    with pytest.raises(BundleError, match=message):
        Bundle.load(tmp_path)


def test_missing_reference_profile_is_a_clear_error(tmp_path) -> None:
    _bundle(tmp_path, _manifest())
    with pytest.raises(BundleError, match=r"no reference\.parquet"):
        Bundle.load(tmp_path).reference()


def test_prediction_record_is_one_json_field_and_round_trips_through_bytes() -> None:
    rec = PredictionRecord("v1", "neg", 0.9, {"neg": 0.9, "pos": 0.1}, {"neg": 0.7}, 12, text="hi")
    fields = rec.to_fields()
    assert list(fields) == ["r"]  # one stream field: the record as a self-describing JSON object
    assert json.loads(fields["r"]) == {
        "id": rec.id,
        "ts": rec.ts,
        "model_version": "v1",
        "label": "neg",
        "confidence": 0.9,
        "probabilities": {"neg": 0.9, "pos": 0.1},
        "slices": {"neg": 0.7},
        "text_length": 12,
        "text": "hi",
    }
    raw = {k.encode(): v for k, v in fields.items()}  # as Redis returns it
    assert PredictionRecord.from_fields(raw) == rec
    assert PredictionRecord.from_fields({"r": fields["r"].decode()}) == rec


def test_entries_of_an_older_service_still_parse() -> None:
    """A stream written field by field (before the one-field entry) during an upgrade."""
    rec = PredictionRecord(
        "v0", "pos", 0.6, {"neg": 0.4, "pos": 0.6}, {"a": 1.0}, 7, text="é", learned_slices=["a"]
    )
    old = legacy_fields(rec)
    assert PredictionRecord.from_fields(old) == rec
    assert PredictionRecord.from_fields({k.encode(): v.encode() for k, v in old.items()}) == rec
    with pytest.raises(KeyError):
        PredictionRecord.from_fields({k: v for k, v in old.items() if k != "label"})


def test_prediction_record_carries_the_slices_served_on_learned_scores() -> None:
    rec = PredictionRecord("v1", "neg", 0.9, {}, {"a": 0.7, "b": 1.0}, 3, learned_slices=["a"])
    assert json.loads(rec.to_fields()["r"])["learned_slices"] == ["a"]
    assert PredictionRecord.from_fields(rec.to_fields()).learned_slices == ["a"]
    plain = PredictionRecord("v1", "neg", 0.9, {}, {"a": 1.0}, 3)
    assert "learned_slices" not in json.loads(plain.to_fields()["r"])  # the usual case: no key
    assert PredictionRecord.from_fields(plain.to_fields()).learned_slices == []


@pytest.mark.parametrize("write", [PredictionRecord.to_fields, legacy_fields])
def test_prediction_record_rejects_nan_confidence(write) -> None:
    rec = PredictionRecord("v1", "neg", math.nan, {}, {}, 1)
    with pytest.raises(ValueError, match="non-finite confidence"):
        PredictionRecord.from_fields(write(rec))


def test_non_finite_probabilities_are_logged_as_null_and_read_as_nan() -> None:
    rec = PredictionRecord("v1", "neg", 0.5, {"neg": math.nan, "pos": 0.5}, {"a": math.inf}, 1)
    assert json.loads(rec.to_fields()["r"])["probabilities"] == {"neg": None, "pos": 0.5}
    back = PredictionRecord.from_fields(rec.to_fields())
    assert math.isnan(back.probabilities["neg"]) and math.isnan(back.slices["a"])


@pytest.mark.parametrize(
    "value", [b"{not json", b'{"id": "x"}', b'{"id":"x","ts":1,"model_version":"v","label":"n",'
    b'"confidence":"high","probabilities":{},"slices":{},"text_length":1}'],
)  # fmt: skip
def test_a_packed_entry_that_does_not_parse_is_a_value_error(value) -> None:
    with pytest.raises(ValueError, match="prediction-log entry does not parse"):
        PredictionRecord.from_fields({b"r": value})
