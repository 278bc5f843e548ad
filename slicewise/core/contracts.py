"""Contracts shared by training (writer), service and monitoring (readers).

This module fixes the artifact bundle layout, the manifest schema, the reference-profile
columns, the Redis prediction-log record and the Redis keys (docs/design.md §5, §7). It imports
neither torch nor pandas, so the serving image can use it.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slicewise.core.errors import SlicewiseError

SCHEMA_VERSION = 1
MODEL_NAME = "slicewise-classifier"

# Files of the artifact bundle.
MODEL_ONNX = "model.onnx"
MODEL_INT8_ONNX = "model.int8.onnx"
MODEL_FP16_ONNX = "model.fp16.onnx"  # optional: fp16 for the CUDA provider
TOKENIZER_DIR = "tokenizer"
MANIFEST_JSON = "manifest.json"
REFERENCE_PARQUET = "reference.parquet"
EVAL_JSON = "eval.json"
REQUIRED_FILES = (MODEL_ONNX, TOKENIZER_DIR, MANIFEST_JSON)

# ONNX graph I/O names.
INPUT_NAMES = ("input_ids", "attention_mask")
# Extra input of a model that routes on rule membership (`train.membership: rules`): float32
# [batch, k], 1/0 per user slice, NaN where the rule was not evaluated (the model then uses its
# learned indicator for that slice). Listed in `Manifest.inputs` when the model takes it.
SLICE_RULES_INPUT = "slice_rules"
OUTPUT_NAMES = ("probabilities", "slice_membership", "slice_attention")
BASE_SLICE = "base"

# Redis keys (docs/design.md §7, §9).
PREDICTIONS_STREAM = "slicewise:predictions"
PREDICTION_ROWS_KEY = "slicewise:predictions:rows"  # predictions the stream holds (its cap's count)
FEEDBACK_STREAM = "slicewise:feedback"
PRODUCTION_VERSION_KEY = "slicewise:production_version"
FEEDBACK_LABELS_KEY = "slicewise:feedback:labels"  # hash: prediction id -> its one label
FEEDBACK_TIMES_KEY = "slicewise:feedback:times"  # sorted set: prediction id -> label time
PROMOTION_RECORD_PREFIX = "slicewise:promotion:"  # + version -> JSON record of the gate's decision
RETRAIN_QUEUE = "slicewise:retrain:queue"
RETRAIN_OUTCOMES_KEY = "slicewise:retrain:outcomes"  # hash outcome -> count (retrain writes)
RETRAIN_RUNS_KEY = "slicewise:retrain:runs"  # list of the last 100 run reports (JSON)
ALERT_DEDUP_PREFIX = "slicewise:alert:"
# `slicewise_retrain_runs_total{outcome}`: what `slicewise retrain` ends with (promoted, rejected,
# failed: an error it caught, production untouched), and what the webhook's worker counts when
# no run could report itself: crashed (the run died or its Job failed), invalid_job (a queue
# entry that is not a job), invalid_alert (a retrain alert without a `slice` label).
RETRAIN_OUTCOMES = ("promoted", "rejected", "failed", "crashed", "invalid_job", "invalid_alert")


class BundleError(SlicewiseError, ValueError):
    """The artifact bundle is missing, incomplete or inconsistent."""


class HasSlices:
    """Slice-name helpers for models with a `slices` list (the manifest, the project config)."""

    slices: list[Any]

    @property
    def slice_names(self) -> list[str]:
        """User slice names in model-output order (no `base`)."""
        return [s.name for s in self.slices]

    @property
    def monitored_slices(self) -> list[str]:
        """Names of the slices the monitor and the promotion gate watch."""
        return [s.name for s in self.slices if s.monitored]


class SliceRule(BaseModel):
    """A slice's definition as the bundle carries it: exactly one of the four rule kinds.

    `slicewise.core.slice_rules.compile_rule` compiles it (the service does, at start-up).
    """

    model_config = ConfigDict(extra="forbid")

    keywords: list[str] | None = None
    regex: str | None = None
    word_count: dict[Literal["min", "max"], int] | None = None
    function: str | None = Field(
        None, description="a registered name (see `plugins`) or `package.module:function`"
    )


class SliceInfo(BaseModel):
    """One user slice as the service and monitor see it.

    `membership` says how the service decides who is in the slice: `rule` = it evaluates `rule`
    exactly on every text (0/1); `learned` = the model's indicator score against `threshold`.
    Bundles exported before slice definitions existed have no `rule` and are `learned`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    monitored: bool = False
    rule: SliceRule | None = None
    membership: Literal["rule", "learned"] = "learned"

    @model_validator(mode="after")
    def _rule_needs_definition(self) -> SliceInfo:
        if self.membership == "rule" and self.rule is None:
            raise ValueError(f"slice {self.name!r} has membership 'rule' but no rule")
        return self


class Manifest(HasSlices, BaseModel):
    """`manifest.json` of an artifact bundle."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    name: str = MODEL_NAME
    version: str
    created_at: str
    labels: list[str] = Field(min_length=2)
    slices: list[SliceInfo]
    max_length: int = Field(gt=0)
    backbone: str
    model_kind: str = "moa"
    inputs: list[str] = Field(default_factory=lambda: list(INPUT_NAMES))
    outputs: list[str] = Field(default_factory=lambda: list(OUTPUT_NAMES))
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    dataset_fingerprint: str = ""
    plugins: list[str] = Field(
        default_factory=list,
        description="modules the service imports so registered slicing functions resolve",
    )

    @property
    def thresholds(self) -> dict[str, float]:
        """Membership threshold per slice name."""
        return {s.name: s.threshold for s in self.slices}

    @property
    def membership_cuts(self) -> dict[str, float]:
        """The value at or above which a row is in a slice: 0.5 on exact 0/1 membership
        (`rule` slices), the tuned threshold on learned scores.
        """
        return {s.name: 0.5 if s.membership == "rule" else s.threshold for s in self.slices}


# A prediction id (uuid4 hex) and a model version (`new_version`), as regular expressions.
PREDICTION_ID_PATTERN = r"^[0-9a-f]{32}$"
VERSION_PATTERN = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$"


def promotion_record_key(version: str) -> str:
    """Redis key of the promotion record the gate writes for `version`."""
    return PROMOTION_RECORD_PREFIX + version


def new_version() -> str:
    """A sortable, unique model version: UTC timestamp plus a short random suffix."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def utc_now_iso() -> str:
    """The current UTC time in ISO 8601, seconds precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Bundle:
    """A validated artifact bundle directory (docs/design.md §5)."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Open and validate a bundle directory.

        Args:
            path: the bundle folder (docs/design.md §5).

        Returns:
            The bundle with its validated manifest.

        Raises:
            BundleError: naming the missing file or the invalid manifest field.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"model bundle {root} does not exist or is not a directory")
        for name in REQUIRED_FILES:
            if not (root / name).exists():
                raise BundleError(f"model bundle {root} is incomplete: {name} is missing")
        try:
            raw = json.loads((root / MANIFEST_JSON).read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{root / MANIFEST_JSON} is not valid JSON: {exc}") from exc
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BundleError(f"{root / MANIFEST_JSON}: field {where!r}: {first['msg']}") from exc
        if manifest.schema_version != SCHEMA_VERSION:
            raise BundleError(
                f"{root / MANIFEST_JSON} has schema_version {manifest.schema_version}; "
                f"this slicewise reads {SCHEMA_VERSION}"
            )
        return cls(root, manifest)

    def model_file(self, prefer_int8: bool = False, prefer_fp16: bool = False) -> Path:
        """The ONNX file to serve.

        Args:
            prefer_int8: take `model.int8.onnx` when the bundle has it.
            prefer_fp16: take `model.fp16.onnx` when the bundle has it (and int8 is not taken).

        Returns:
            The int8 (or fp16) file when asked for and present, else `model.onnx`.
        """
        for wanted, name in ((prefer_int8, MODEL_INT8_ONNX), (prefer_fp16, MODEL_FP16_ONNX)):
            if wanted and (self.path / name).exists():
                return self.path / name
        return self.path / MODEL_ONNX

    @property
    def tokenizer_dir(self) -> Path:
        """Directory holding the tokenizer files."""
        return self.path / TOKENIZER_DIR

    @property
    def reference_file(self) -> Path:
        """Path of the reference profile (may not exist)."""
        return self.path / REFERENCE_PARQUET

    def reference(self) -> Any:
        """The reference profile as a pandas DataFrame.

        Raises:
            BundleError: when the bundle has no reference profile.
        """
        if not self.reference_file.exists():
            raise BundleError(
                f"model bundle {self.path} has no {REFERENCE_PARQUET}; "
                "re-export it with `slicewise export` to get a reference profile"
            )
        import pandas as pd  # lazy: the serving image does not need pandas

        return pd.read_parquet(self.reference_file)

    def evaluation(self) -> dict[str, Any]:
        """The per-slice evaluation table (`eval.json`), or {} when absent."""
        f = self.path / EVAL_JSON
        return json.loads(f.read_text()) if f.exists() else {}


def resolve_bundle(model_dir: str | None, tag: str) -> Bundle:
    """The bundle in `model_dir`, else the BentoML store model `tag`: the one place a bundle
    is looked up in the model store (service, monitor, retrain).

    Args:
        model_dir: a bundle folder, or None / empty to use the model store.
        tag: a model-store tag, `slicewise-classifier:<version>` or `slicewise-classifier:latest`.

    Returns:
        The loaded bundle (manifest validated, required files present).

    Raises:
        BundleError: naming the folder or tag and what is wrong with it.
    """
    if model_dir:
        return Bundle.load(model_dir)
    import bentoml  # lazy: training and monitoring read bundles without the model store

    try:
        model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise BundleError(
            f"no model {tag} in the BentoML model store and SLICEWISE_MODEL_DIR is unset; "
            "run `slicewise export` or point SLICEWISE_MODEL_DIR at a bundle"
        ) from None
    return Bundle.load(model.path)


# Reference-profile column names (reference.parquet). Production windows read from the
# prediction log are converted to the same columns so the monitor compares like with like.
def prob_column(label: str) -> str:
    """Column with the predicted probability of `label`."""
    return f"prob_{label}"


def slice_score_column(slice_name: str) -> str:
    """Column with a slice's membership as the service returns it in `slices`: exact 0/1 for
    `rule` slices, the learned score for `learned` ones.
    """
    return f"slice_{slice_name}"


def learned_score_column(slice_name: str) -> str:
    """Column with the model's learned indicator score of a slice (reference data only)."""
    return f"score_{slice_name}"


def slice_fn_column(slice_name: str) -> str:
    """Column with the slicing function's 0/1 membership (reference data only)."""
    return f"sf_{slice_name}"


PREDICTED_LABEL_COLUMN = "predicted_label"
CONFIDENCE_COLUMN = "confidence"
TEXT_LENGTH_COLUMN = "text_length"
TRUE_LABEL_COLUMN = "true_label"


LEARNED_SLICES_FIELD = "learned_slices"  # prediction-log field (and window column), comma-separated
# The one field of a one-prediction log entry: the record as one JSON object (`LoggedPrediction`).
# The service writes entries of many predictions (`slicewise.core.log_entries`); entries of one
# are what services before wrote, this one or the record's fields one by one (`id`, `ts`, ...,
# `probabilities` and `slices` as JSON, `learned_slices` comma-separated); `from_fields` reads both.
PREDICTION_FIELD = "r"


class LoggedPrediction(msgspec.Struct, omit_defaults=True, gc=False):
    """The JSON object a prediction-log entry holds (`PREDICTION_FIELD`). Keys are the record's
    field names; labels and slice names are keys of `probabilities` and `slices`. Non-finite
    numbers are written as `null` (JSON has no NaN) and read back as NaN.
    """

    id: str
    ts: float
    model_version: str
    label: str
    confidence: float | None
    probabilities: dict[str, float | None]
    slices: dict[str, float | None]
    text_length: int
    text: str | None = None
    learned_slices: list[str] | None = None  # only when not empty


_LOGGED_DECODER = msgspec.json.Decoder(LoggedPrediction)
_NAN = float("nan")


def _finite_or_nan(values: dict[str, float | None]) -> dict[str, float]:
    return {k: _NAN if v is None else v for k, v in values.items()}


@dataclass
class PredictionRecord:
    """One logged prediction of the `slicewise:predictions` Redis stream (docs/design.md §7)."""

    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    slices: dict[str, float]
    text_length: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = field(default_factory=time.time)
    text: str | None = None
    # slices whose `slices` value is the learned score although the manifest declares `rule`
    # membership (the service could not evaluate the rule: module not importable, rules off,
    # or the slicing function raised on this text); written only when not empty
    learned_slices: list[str] = field(default_factory=list)

    def to_fields(self) -> dict[str, bytes]:
        """A one-prediction stream entry for `XADD`: one field, `PREDICTION_FIELD`, the record
        as JSON (the service logs `log_entries` batches; this format is still read).
        """
        logged = LoggedPrediction(
            id=self.id,
            ts=float(self.ts),
            model_version=self.model_version,
            label=self.label,
            confidence=float(self.confidence),
            probabilities={k: float(v) for k, v in self.probabilities.items()},
            slices={k: float(v) for k, v in self.slices.items()},
            text_length=int(self.text_length),
            text=self.text,
            learned_slices=list(self.learned_slices) or None,
        )
        return {PREDICTION_FIELD: msgspec.json.encode(logged)}

    @classmethod
    def from_fields(cls, fields: Mapping[str | bytes, str | bytes]) -> PredictionRecord:
        """Parse a stream entry: the one-field entry `to_fields` writes, or the flat fields
        that services before it wrote (one field per record field).

        Args:
            fields: the entry's fields as Redis returns them (bytes or str keys and values).

        Returns:
            The record.

        Raises:
            KeyError: a required field is missing.
            ValueError: a field does not parse, or the confidence is not finite.
        """
        f = {_s(k): v for k, v in fields.items()}
        if PREDICTION_FIELD in f:
            try:
                logged = _LOGGED_DECODER.decode(f[PREDICTION_FIELD])
            except msgspec.DecodeError as exc:
                raise ValueError(f"prediction-log entry does not parse: {exc}") from None
            rec = cls(
                id=logged.id,
                ts=logged.ts,
                model_version=logged.model_version,
                label=logged.label,
                confidence=_NAN if logged.confidence is None else logged.confidence,
                probabilities=_finite_or_nan(logged.probabilities),
                slices=_finite_or_nan(logged.slices),
                text_length=logged.text_length,
                text=logged.text,
                learned_slices=logged.learned_slices or [],
            )
        else:
            f = {k: _s(v) for k, v in f.items()}
            rec = cls(
                id=f["id"],
                ts=float(f["ts"]),
                model_version=f["model_version"],
                label=f["label"],
                confidence=float(f["confidence"]),
                probabilities=json.loads(f["probabilities"]),
                slices=json.loads(f["slices"]),
                text_length=int(f["text_length"]),
                text=f.get("text"),
                learned_slices=[n for n in f.get(LEARNED_SLICES_FIELD, "").split(",") if n],
            )
        if not math.isfinite(rec.confidence):
            raise ValueError(f"prediction {rec.id} has a non-finite confidence")
        return rec


def _s(x: str | bytes) -> str:
    return x.decode() if isinstance(x, bytes) else x


# Prometheus metric names (docs/design.md §8). Service and monitor declare their metrics with these;
# alert rules and dashboards in monitoring/ query them.
class MetricNames:
    """Names of every slicewise metric (Prometheus client names, without `_total` suffixes
    that the client adds for counters).
    """

    # service
    PREDICTIONS = "slicewise_predictions"  # counter -> slicewise_predictions_total
    SLICE_PREDICTIONS = "slicewise_slice_predictions"  # counter
    SLICE_MEMBERSHIP_SCORE = "slicewise_slice_membership_score"  # histogram
    PREDICTION_CONFIDENCE = "slicewise_prediction_confidence"  # histogram
    INFERENCE_SECONDS = "slicewise_inference_seconds"  # histogram {stage}
    PREDICTION_LOG_DROPPED = "slicewise_prediction_log_dropped"  # counter
    MODEL_INFO = "slicewise_model_info"  # gauge {model_version, provider}
    FEEDBACK = "slicewise_feedback"  # counter {outcome: new | corrected}
    # monitor
    SLICE_DRIFT_SCORE = "slicewise_slice_drift_score"
    SLICE_DRIFT_DETECTED = "slicewise_slice_drift_detected"
    SLICE_DRIFTED_COLUMNS_SHARE = "slicewise_slice_drifted_columns_share"
    SLICE_ROWS = "slicewise_slice_rows"
    SLICE_TRAFFIC_SHARE = "slicewise_slice_traffic_share"
    # 1 = the slice's share moved only with another slice's (SliceTrafficShift stays quiet)
    SLICE_TRAFFIC_SHIFT_EXPLAINED = "slicewise_slice_traffic_shift_explained"
    SLICE_ACCURACY = "slicewise_slice_accuracy"
    SLICE_ESTIMATED_ACCURACY = "slicewise_slice_estimated_accuracy"
    SLICE_REFERENCE_ACCURACY = (
        "slicewise_slice_reference_accuracy"  # accuracy on the reference split
    )
    SLICE_INSUFFICIENT_DATA = "slicewise_slice_insufficient_data"  # 1 = too few rows to judge
    # 1 = judged on learned indicator scores (manifest `learned`, or the service fell back)
    SLICE_MEMBERSHIP_LEARNED = "slicewise_slice_membership_learned"
    MONITOR_LAST_RUN = "slicewise_monitor_last_run_timestamp_seconds"
    MONITOR_RUN_DURATION = "slicewise_monitor_run_duration_seconds"
    RETRAIN_RUNS = "slicewise_retrain_runs"  # counter {outcome}
