"""The slicewise BentoML service: `bentoml serve service.service:Slicewise`.

One service does it all: validation, auth, ids, the ONNX Runtime model call with adaptive
batching (`service/batching.py`: concurrent requests share one model call), metrics, the Redis
prediction log, feedback, and the watcher that hot-swaps the model when the production version
in Redis changes. It never imports torch or `training`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from http import HTTPStatus
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from pydantic import Field

from service import metrics
from service.batching import AdaptiveBatcher
from service.prediction_log import PredictionLog
from service.responses import RequestError, build_predictions, check_feedback_label, validate_texts
from service.runtime import ModelRuntime
from service.schemas import FeedbackResponse, PredictResponse
from service.settings import Settings
from slicewise.core.contracts import (
    MODEL_NAME,
    PRODUCTION_VERSION_KEY,
    BundleError,
    PredictionRecord,
    resolve_bundle,
)

log = logging.getLogger("slicewise.service")
log.setLevel(logging.INFO)  # BentoML shows only warnings of foreign loggers otherwise
SAMPLE_TEXTS = ["I would not fly with them again.", "Is my flight delayed?"]
MAX_BATCH_SIZE = 64


class Unauthorized(BentoMLException):
    """Missing or wrong bearer token."""

    error_code = HTTPStatus.UNAUTHORIZED


@bentoml.service(
    name="slicewise",
    traffic={"timeout": 60, "max_concurrency": 512},
    workers=1,
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)
class Slicewise:
    """Public REST API: `/predict`, `/feedback`, plus `/livez`, `/readyz`, `/metrics`."""

    def __init__(self) -> None:
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

            self.embedded_redis = LocalRedis().start()
            redis_url = self.embedded_redis.url
            log.info(
                "REDIS_URL unset: started an embedded redis-server at %s (%s)",
                redis_url,
                self.embedded_redis.exe,
            )
        self.redis_url = redis_url
        self.log = PredictionLog(
            redis_url,
            self.settings.stream_maxlen,
            self.settings.log_buffer,
            on_drop=metrics.LOG_DROPPED.inc,
        )
        self._watcher: asyncio.Task[None] | None = None

    def _load(self, model_dir: str | None, tag: str) -> ModelRuntime:
        """Open a bundle folder, or a model-store tag, and warm it up (blocking)."""
        threads = max(1, len(os.sched_getaffinity(0)) // self.settings.model_workers)
        return ModelRuntime.load(resolve_bundle(model_dir, tag), self.settings.prefer_int8, threads)

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
        return self.runtime is not None

    async def _watch_production_version(self) -> None:
        """Poll the production-version key; load and switch to the version it names."""
        while True:
            await asyncio.sleep(self.settings.hotswap_interval)
            try:
                raw = await asyncio.to_thread(self.log.client.get, PRODUCTION_VERSION_KEY)
                wanted = raw.decode() if raw else None
                if wanted and (self.runtime is None or wanted != self.runtime.version):
                    runtime = await asyncio.to_thread(self._load, None, f"{MODEL_NAME}:{wanted}")
                    self._install(runtime)
                    log.info("hot-swapped to model %s", wanted)
            except Exception as exc:  # keep serving the current model; say why
                log.warning("hot-swap check failed: %s", exc)

    def _infer_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        """Predictions (without ids) for one batch of texts; runs in a model worker thread."""
        runtime = self.runtime
        if runtime is None:
            raise ServiceUnavailable(self.error or "model not loaded")
        outputs, took = runtime.predict(texts)
        metrics.INFERENCE_SECONDS.labels("tokenize").observe(took.tokenize)
        metrics.INFERENCE_SECONDS.labels("infer").observe(took.infer)
        metrics.BATCH_SIZE.observe(len(texts))
        preds = build_predictions(outputs, runtime.bundle.manifest)
        for p in preds:
            p["model_version"] = runtime.version
        return preds

    def _authorize(self, ctx: bentoml.Context) -> None:
        token = self.settings.api_token
        if token and ctx.request.headers.get("authorization", "") != f"Bearer {token}":
            raise Unauthorized("missing or wrong bearer token")

    @bentoml.api(route="/predict")
    async def predict(
        self,
        texts: Annotated[list[str], Field(examples=[SAMPLE_TEXTS])],
        ctx: bentoml.Context = None,
    ) -> PredictResponse:  # type: ignore[assignment]
        """Label, probabilities and slice membership scores for each text.

        Example: `curl -X POST localhost:3000/predict -H 'Content-Type: application/json'
        -d '{"texts": ["I would not fly with them again."]}'`
        """
        self._authorize(ctx)
        try:
            validate_texts(texts, self.settings.max_texts, self.settings.max_text_chars)
        except RequestError as exc:
            raise InvalidArgument(str(exc)) from None
        preds = await self.batcher.submit(texts)
        t0 = time.perf_counter()
        version = preds[0]["model_version"]
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
                )
            )
        self.log.append(records)
        metrics.observe_predictions(preds, version)
        metrics.INFERENCE_SECONDS.labels("postprocess").observe(time.perf_counter() - t0)
        return PredictResponse.model_validate({"model_version": version, "predictions": preds})

    @bentoml.api(route="/feedback")
    async def feedback(
        self,
        id: Annotated[str, Field(examples=["5f2c…"])],
        label: Annotated[str, Field(examples=["negative"])],
        ctx: bentoml.Context = None,
    ) -> FeedbackResponse:  # type: ignore[assignment]
        """Record the true label of an earlier prediction (by its id)."""
        self._authorize(ctx)
        try:
            check_feedback_label(label, self.runtime.bundle.manifest.labels if self.runtime else [])
        except RequestError as exc:
            raise InvalidArgument(str(exc)) from None
        try:
            known = await asyncio.to_thread(self.log.known_prediction, id)
            if not known:
                raise NotFound(f"unknown prediction id {id!r}")
            await asyncio.to_thread(self.log.record_feedback, id, label)
        except NotFound:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"feedback store unavailable: {exc}") from None
        return FeedbackResponse(id=id, label=label, stored=True)
