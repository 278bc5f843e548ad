"""The slicewise BentoML service: `bentoml serve service.service:Slicewise`.

One service does it all: validation, ids, the ONNX Runtime model call with adaptive
batching (`service/batching.py`: concurrent requests share one model call), metrics, the Redis
prediction log, feedback, and the watcher that hot-swaps the model when the production version
in Redis changes (`service/hotswap.py`). Auth, body size, Content-Type, unknown routes and the
one error shape are handled before BentoML parses a request (`service/http_guard.py`,
`service/hardened.py`). It never imports torch or `training`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import time
import uuid
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound
from pydantic import Field, ValidationError

from service import diagnostics, metrics
from service.batching import AdaptiveBatcher
from service.hardened import HardenedService
from service.hotswap import HotSwapWatcher
from service.http_guard import (
    ApiGuard,
    error_body,
    error_response,
    install_log_filter,
    log_client_error,
    validation_message,
)
from service.predict_route import PredictRoute
from service.prediction_log import PredictionLog
from service.responses import decide, predictions
from service.runtime import ModelRuntime
from service.schemas import FeedbackResponse, PredictResponse
from service.settings import Settings
from service.validation import (
    RequestError,
    Unavailable,
    check_feedback_label,
    check_prediction_id,
    validate_texts,
)
from slicewise.core.contracts import (
    MODEL_NAME,
    PREDICTION_ID_PATTERN,
    BundleError,
    PredictionRecord,
    resolve_bundle,
)

log = logging.getLogger("slicewise.service")
log.setLevel(logging.INFO)  # BentoML shows only warnings of foreign loggers otherwise
SAMPLE_TEXTS = ["I would not fly with them again.", "Is my flight delayed?"]
MAX_BATCH_SIZE = 64
MAX_LABEL_CHARS = 100
# Read at import: the request limits are part of the API signature (and so of the OpenAPI
# document), and a missing required token stops `bentoml serve` before it listens.
LIMITS = Settings.from_env()
install_log_filter()
Text = Annotated[
    str,
    Field(
        max_length=LIMITS.max_text_chars,
        description="at least one visible character (not only whitespace, zero-width or "
        "control characters)",
        # documented, not enforced here: validate_texts refuses these with one message
        json_schema_extra={"minLength": 1, "pattern": "\\S"},
    ),
]


API_ROUTES = ("/predict", "/feedback")


@bentoml.service(
    name="slicewise",
    traffic={"timeout": 60, "max_concurrency": 512},
    workers=1,
    logging={"access": {"enabled": LIMITS.access_log}},
    # BentoML's OpenTelemetry middleware skips these paths (a BENTOML_CONFIG `tracing:` section
    # still overrides this default)
    tracing={"excluded_urls": [] if LIMITS.tracing else list(API_ROUTES)},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    service_class=HardenedService,
)
class Slicewise:
    """Public REST API: `/predict`, `/feedback`, plus `/livez`, `/readyz`, `/metrics`."""

    def __init__(self) -> None:
        diagnostics.start_from_env()  # memory snapshots for soak tests, when asked for
        self.settings = Settings.from_env()
        self.runtime: ModelRuntime | None = None
        self.error: str | None = None
        try:
            self._install(self._load(self.settings.model_dir, self.settings.model_tag))
        except (BundleError, OSError, RuntimeError) as exc:
            self.error = f"model not loaded: {exc}"
            log.error("slicewise is NOT ready: %s", self.error)
        self.batcher: AdaptiveBatcher[dict[str, Any]] = AdaptiveBatcher(
            self._infer_batch, MAX_BATCH_SIZE, workers=self.settings.model_workers
        )
        self.embedded_redis = None
        redis_url = self.settings.redis_url
        if redis_url is None:
            from slicewise.core.redis_server import LocalRedis

            password = os.environ.get("SLICEWISE_REDIS_PASSWORD") or secrets.token_hex(16)
            self.embedded_redis = LocalRedis(password=password).start()
            redis_url = self.embedded_redis.url
            log.info(
                "REDIS_URL unset: started an embedded redis-server at %s (%s; password required)",
                self.embedded_redis.url_without_password,
                self.embedded_redis.exe,
            )
        self.redis_url = redis_url
        self.log = PredictionLog(
            redis_url,
            self.settings.stream_maxlen,
            self.settings.log_buffer,
            on_drop=metrics.LOG_DROPPED.inc,
            feedback_ttl_s=self.settings.feedback_ttl_s,
            max_feedback_labels=self.settings.max_feedback_labels,
        )
        self._watcher: asyncio.Task[None] | None = None
        self.hotswap = HotSwapWatcher(self._load_version, self._install)
        if self.settings.gc_freeze:  # full collections stop rescanning the start-up objects
            gc.collect()
            gc.freeze()

    def _load(self, model_dir: str | None, tag: str) -> ModelRuntime:
        """Open a bundle folder, or a model-store tag, and warm it up (blocking)."""
        threads = max(1, len(os.sched_getaffinity(0)) // self.settings.model_workers)
        return ModelRuntime.load(
            resolve_bundle(model_dir, tag),
            self.settings.prefer_int8,
            threads,
            evaluate_rules=self.settings.slice_rules,
            memory=(self.settings.ort_cpu_arena, self.settings.ort_mem_pattern),
            arena_same_as_requested=self.settings.ort_arena_same,
        )

    def _install(self, runtime: ModelRuntime) -> None:
        old = self.runtime
        self.runtime = runtime  # one reference swap: a running batch keeps the runtime it holds
        if old is not None:
            metrics.MODEL_INFO.labels(old.version, old.provider).set(0)
        metrics.MODEL_INFO.labels(runtime.version, runtime.provider).set(1)
        self.error = None

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.batcher.close()
        self.log.close()
        if self.embedded_redis is not None:
            self.embedded_redis.stop()

    async def __is_ready__(self) -> bool:
        if self._watcher is None:  # first readiness probe starts the hot-swap watcher
            self._watcher = asyncio.create_task(self._watch_production_version())
        if self.runtime is None:  # a 503 naming the cause (BentoML's own says only "False")
            from starlette.exceptions import HTTPException

            raise HTTPException(503, f"not ready: {self.error or 'model not loaded yet'}")
        return True

    @staticmethod
    def _unavailable(exc: Exception) -> Any:
        """The 503 response for `exc`, its message naming the cause (BentoML would send a
        generic message for a 5xx exception).
        """
        log.warning("503: %s", exc)
        return error_response(503, str(exc))

    def _load_version(self, version: str) -> ModelRuntime:
        return self._load(None, f"{MODEL_NAME}:{version}")

    async def _watch_production_version(self) -> None:
        """Poll the production-version key; switch to the version it names when it passes the
        checks of `HotSwapWatcher`.
        """
        while True:
            await asyncio.sleep(self.settings.hotswap_interval)
            current = self.runtime.version if self.runtime is not None else None
            try:
                await asyncio.to_thread(self.hotswap.poll, self.log.client, current)
            except Exception as exc:  # keep watching and serving the current model; say why
                log.warning("hot-swap check failed: %s: %s", type(exc).__name__, exc)

    def _infer_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        """Predictions (without ids) for one batch of texts; runs in a model worker thread."""
        runtime = self.runtime
        if runtime is None:
            raise Unavailable(self.error or "model not loaded yet")
        outputs, took = runtime.predict(texts)
        metrics.INFERENCE_SECONDS.labels("tokenize").observe(took.tokenize)
        metrics.INFERENCE_SECONDS.labels("infer").observe(took.infer)
        metrics.INFERENCE_SECONDS.labels("rules").observe(took.rules)
        metrics.BATCH_SIZE.observe(len(texts))
        batch = decide(outputs, runtime.bundle.manifest, runtime.membership.cuts)
        metrics.observe_batch(batch, runtime.version)
        preds = predictions(batch)
        learned = runtime.membership.learned_slices(outputs["rule_failed"])
        for p, fell_back in zip(preds, learned, strict=True):
            p["model_version"] = runtime.version
            p["membership"] = runtime.membership.modes
            p["learned_slices"] = fell_back  # for the prediction log only
        return preds

    @bentoml.api(route="/predict")
    async def predict(
        self,
        texts: Annotated[
            list[Text],
            Field(min_length=1, max_length=LIMITS.max_texts, examples=[SAMPLE_TEXTS]),
        ],
    ) -> PredictResponse:
        """Label, probabilities, slice membership and learned slice scores for each text.

        Example: `curl -X POST localhost:3000/predict -H 'Content-Type: application/json'
        -d '{"texts": ["I would not fly with them again."]}'`
        """
        try:
            return await self._predict(texts)
        except RequestError as exc:
            raise InvalidArgument(str(exc)) from None
        except Unavailable as exc:
            return self._unavailable(exc)

    async def predict_body(self, body: bytes) -> tuple[int, bytes]:
        """`/predict` from its raw JSON body, as `PredictRoute` calls it (service/predict_route.py):
        the API's own input model, the same function, the same errors; `(status, JSON body)`.
        """
        try:
            texts = Slicewise.apis["predict"].input_spec.model_validate_json(body or b"{}").texts
        except ValidationError as exc:
            return _client_error(validation_message(exc.errors(include_context=False)))
        try:
            return 200, (await self._predict(texts)).model_dump_json().encode()
        except RequestError as exc:
            return _client_error(str(exc))
        except Unavailable as exc:
            log.warning("503: %s", exc)
            return 503, error_body(str(exc))

    async def _predict(self, texts: list[str]) -> PredictResponse:
        """Validate, batch and log one request's texts (raises RequestError, Unavailable)."""
        validate_texts(texts, self.settings.max_texts, self.settings.max_text_chars)
        preds = await self.batcher.submit(texts)
        t0 = time.perf_counter()
        version, membership = preds[0]["model_version"], preds[0]["membership"]
        records = []
        for text, p in zip(texts, preds, strict=True):
            p["id"] = uuid.uuid4().hex
            records.append(
                PredictionRecord(
                    version,
                    p["label"],
                    p["confidence"],
                    p["probabilities"],
                    p["slices"],
                    len(text),
                    id=p["id"],
                    text=text if self.settings.log_text else None,
                    learned_slices=p.pop("learned_slices"),
                )
            )
        self.log.append(records)
        metrics.INFERENCE_SECONDS.labels("postprocess").observe(time.perf_counter() - t0)
        return PredictResponse.model_validate(
            {"model_version": version, "membership": membership, "predictions": preds}
        )

    @bentoml.api(route="/feedback")
    async def feedback(
        self,
        id: Annotated[
            str,
            Field(
                min_length=32,
                max_length=32,
                pattern=PREDICTION_ID_PATTERN,
                description="a prediction id from /predict",
                examples=["5f2c0a4e9b1d4c7f8e6a3b2d1c0f9e8d"],
            ),
        ],
        label: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_LABEL_CHARS,
                description="one of the model's labels",
                examples=["negative"],
            ),
        ],
    ) -> FeedbackResponse:
        """Record the true label of an earlier prediction (by its id). One label per id: a
        second label for the same id replaces the first (a correction).
        """
        runtime = self.runtime
        if runtime is None:
            return self._unavailable(Unavailable(self.error or "model not loaded yet"))
        try:
            check_prediction_id(id)
            check_feedback_label(label, runtime.bundle.manifest.labels)
        except RequestError as exc:
            raise InvalidArgument(str(exc)) from None
        try:
            known = await asyncio.to_thread(self.log.known_prediction, id)
            if not known:
                raise NotFound(
                    f"unknown prediction id {id!r}: never served, or older than the feedback "
                    f"window ({_duration(self.settings.feedback_ttl_s)})"
                )
            replaced = await asyncio.to_thread(self.log.record_feedback, id, label)
        except NotFound:
            raise
        except Exception as exc:
            return self._unavailable(Unavailable(f"feedback store unavailable: {exc}"))
        metrics.FEEDBACK.labels("corrected" if replaced is not None else "new").inc()
        return FeedbackResponse(id=id, label=label, stored=True, replaced=replaced)


def _client_error(message: str) -> tuple[int, bytes]:
    log_client_error(400, "/predict", message)
    return 400, error_body(message)


def _duration(seconds: float) -> str:
    """`seconds` in the largest whole unit (7 days, 36 hours, 90 s)."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


Slicewise.add_asgi_middleware(
    ApiGuard,
    paths=API_ROUTES,
    token=LIMITS.api_token,
    max_body_bytes=LIMITS.max_body_bytes,
)
# inside ApiGuard: POST /predict after auth, Content-Type and size checks
Slicewise.add_asgi_middleware(PredictRoute, path="/predict", enabled=LIMITS.fast_predict)
