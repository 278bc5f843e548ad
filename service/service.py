"""The slicewise BentoML service: `bentoml serve service.service:Slicewise`.

Two services, the shape BentoML's adaptive batching takes:

- `SliceModel` holds the ONNX Runtime session; its `infer` is batchable, so concurrent
  requests are merged into one model call. It swaps models when told to.
- `Slicewise` is the public API: validation, auth, ids, metrics, the Redis prediction log,
  feedback, and the watcher that hot-swaps the model when the production version in Redis
  changes.

Neither imports torch or `training`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from http import HTTPStatus
from typing import Annotated, Any

import aiohttp
import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from pydantic import Field

from service import metrics
from service.prediction_log import PredictionLog
from service.responses import RequestError, build_predictions, check_feedback_label, validate_texts
from service.runtime import ModelRuntime, resolve_bundle
from service.schemas import FeedbackResponse, PredictResponse
from service.settings import Settings
from slicewise.contracts import MODEL_NAME, PRODUCTION_VERSION_KEY, BundleError, PredictionRecord

log = logging.getLogger("slicewise.service")
log.setLevel(logging.INFO)  # BentoML shows only warnings of foreign loggers otherwise
# BentoML's batch dispatcher cancels (drops the connection of) any request that waited longer
# than max_latency_ms; a short value turns a load spike or a model swap into failed requests.
# The batching window itself is learned by the dispatcher, not set by this bound.
MAX_LATENCY_MS = 30_000
SAMPLE_TEXTS = ["I would not fly with them again.", "Is my flight delayed?"]


class Unauthorized(BentoMLException):
    """Missing or wrong bearer token."""

    error_code = HTTPStatus.UNAUTHORIZED


# BentoML ≥ 1.4.31 closes its client session to a dependency every `max_requests` requests
# (default 100) while other requests are still in flight on it: under load that drops
# connections and can leave a request hanging (bentoml/BentoML#5540). One model worker needs
# no connection rotation, so the session lives on.
@bentoml.service(
    name="slicewise-model",
    traffic={"timeout": 60},
    workers=1,
    runner_connection={"max_requests": 2**31 - 1, "max_age": 10.0 * 365 * 24 * 3600},
)
class SliceModel:
    """The model call: batched, swappable."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.runtime: ModelRuntime | None = None
        self.error: str | None = None
        self._swap_lock = threading.Lock()
        try:
            self._install(
                ModelRuntime.load(
                    resolve_bundle(self.settings.model_dir, self.settings.model_tag),
                    self.settings.prefer_int8,
                )
            )
        except (BundleError, OSError, RuntimeError) as exc:
            self.error = f"model not loaded: {exc}"
            log.error("slicewise is NOT ready: %s", self.error)

    def _install(self, runtime: ModelRuntime) -> None:
        old = self.runtime
        self.runtime = runtime  # one reference swap: in-flight calls keep the runtime they hold
        if old is not None:
            metrics.MODEL_INFO.labels(old.version, old.provider).set(0)
        metrics.MODEL_INFO.labels(runtime.version, runtime.provider).set(1)
        self.error = None

    def __is_ready__(self) -> bool:
        return self.runtime is not None

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=MAX_LATENCY_MS)
    def infer(self, texts: list[str]) -> list[dict[str, Any]]:
        """Predictions (without ids) for a batch of texts; each carries the model version."""
        runtime = self.runtime
        if runtime is None:
            raise ServiceUnavailable(self.error or "model not loaded")
        outputs = runtime.predict(texts)
        metrics.INFERENCE_SECONDS.labels("tokenize").observe(runtime.last.tokenize)
        metrics.INFERENCE_SECONDS.labels("infer").observe(runtime.last.infer)
        metrics.BATCH_SIZE.observe(len(texts))
        preds = build_predictions(outputs, runtime.bundle.manifest)
        for p in preds:
            p["model_version"] = runtime.version
        return preds

    @bentoml.api(route="/internal/swap")
    def swap(self, version: str) -> dict[str, str]:
        """Load `slicewise-classifier:<version>` from the model store and switch to it."""
        with self._swap_lock:
            if self.runtime is not None and self.runtime.version == version:
                return {"model_version": version, "provider": self.runtime.provider}
            try:
                runtime = ModelRuntime.load(
                    resolve_bundle(None, f"{MODEL_NAME}:{version}"), self.settings.prefer_int8
                )
            except BundleError as exc:
                raise NotFound(str(exc)) from None
            self._install(runtime)
            log.info("hot-swapped to model %s", version)
            return {"model_version": version, "provider": runtime.provider}

    @bentoml.api(route="/internal/info")
    def info(self) -> dict[str, Any]:
        """The served version, provider and labels (for the API service)."""
        if self.runtime is None:
            raise ServiceUnavailable(self.error or "model not loaded")
        m = self.runtime.bundle.manifest
        return {
            "model_version": m.version,
            "provider": self.runtime.provider,
            "labels": m.labels,
            "model_file": self.runtime.model_file.name,
        }


@bentoml.service(
    name="slicewise",
    traffic={"timeout": 60, "max_concurrency": 512},
    workers=1,
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)
class Slicewise:
    """Public REST API: `/predict`, `/feedback`, plus `/livez`, `/readyz`, `/metrics`."""

    model = bentoml.depends(SliceModel)

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.embedded_redis = None
        redis_url = self.settings.redis_url
        if redis_url is None:
            from slicewise.redis_server import LocalRedis

            self.embedded_redis = LocalRedis().start()
            redis_url = self.embedded_redis.url
            log.info("REDIS_URL unset: started an embedded redis-server at %s", redis_url)
        self.redis_url = redis_url
        self.log = PredictionLog(
            redis_url,
            self.settings.stream_maxlen,
            self.settings.log_buffer,
            on_drop=metrics.LOG_DROPPED.inc,
        )
        self.labels: list[str] = []
        self.served_version: str | None = None
        self._watcher: asyncio.Task[None] | None = None

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.log.close()
        if self.embedded_redis is not None:
            self.embedded_redis.stop()

    async def __is_ready__(self) -> bool:
        if self._watcher is None:  # first readiness probe starts the hot-swap watcher
            self._watcher = asyncio.create_task(self._watch_production_version())
        if not self.labels:
            try:
                info = await self.model.to_async.info()
            except Exception:  # the model service says why in its own log
                return False
            self.labels, self.served_version = info["labels"], info["model_version"]
        return True

    async def _watch_production_version(self) -> None:
        """Poll the production-version key; swap the model when it names another version."""
        while True:
            await asyncio.sleep(self.settings.hotswap_interval)
            try:
                raw = await asyncio.to_thread(self.log.client.get, PRODUCTION_VERSION_KEY)
                wanted = raw.decode() if raw else None
                if wanted and wanted != self.served_version:
                    info = await self.model.to_async.swap(version=wanted)
                    self.served_version = info["model_version"]
                    self.labels = (await self.model.to_async.info())["labels"]
            except Exception as exc:  # keep serving the current model; say why
                log.warning("hot-swap check failed: %s", exc)

    async def _infer(self, texts: list[str]) -> list[dict[str, Any]]:
        """Call the batched model service, retrying once on a dropped connection.

        The client reuses keep-alive connections that the model service may have just closed
        (seen as `ServerDisconnectedError` after idle gaps); inference is idempotent, so one
        retry on a fresh connection is safe.
        """
        try:
            return await self.model.to_async.infer(texts)
        except aiohttp.ClientConnectionError as exc:
            log.info("model service connection dropped (%s); retrying once", exc)
            return await self.model.to_async.infer(texts)

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
        preds = await self._infer(texts)
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
            check_feedback_label(label, self.labels)
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
