"""Shared contracts: bundle validation errors and the prediction-log record round trip."""

from __future__ import annotations

import json
import math

import pytest

from slicewise.core.contracts import Bundle, BundleError, PredictionRecord


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


def test_prediction_record_round_trips_through_bytes() -> None:
    rec = PredictionRecord("v1", "neg", 0.9, {"neg": 0.9, "pos": 0.1}, {"neg": 0.7}, 12, text="hi")
    raw = {k.encode(): v.encode() for k, v in rec.to_fields().items()}
    assert PredictionRecord.from_fields(raw) == rec


def test_prediction_record_carries_the_slices_served_on_learned_scores() -> None:
    rec = PredictionRecord("v1", "neg", 0.9, {}, {"a": 0.7, "b": 1.0}, 3, learned_slices=["a"])
    assert rec.to_fields()["learned_slices"] == "a"
    assert PredictionRecord.from_fields(rec.to_fields()).learned_slices == ["a"]
    plain = PredictionRecord("v1", "neg", 0.9, {}, {"a": 1.0}, 3)
    assert "learned_slices" not in plain.to_fields()  # the usual case costs nothing
    assert PredictionRecord.from_fields(plain.to_fields()).learned_slices == []


def test_prediction_record_rejects_nan_confidence() -> None:
    rec = PredictionRecord("v1", "neg", math.nan, {}, {}, 1)
    with pytest.raises(ValueError, match="non-finite confidence"):
        PredictionRecord.from_fields(rec.to_fields())
