"""Service settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from slicewise.core.contracts import MODEL_NAME
from slicewise.core.errors import SlicewiseError


class SettingsError(SlicewiseError, ValueError):
    """A service setting is missing or invalid; the message names the variable."""


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Every knob of the service; `from_env` documents the variable names."""

    model_dir: str | None = None  # SLICEWISE_MODEL_DIR: serve this bundle folder
    model_tag: str = f"{MODEL_NAME}:latest"  # SLICEWISE_MODEL_TAG: else this store model
    redis_url: str | None = None  # REDIS_URL; unset: an embedded redis-server is started
    api_token: str | None = None  # SLICEWISE_API_TOKEN: require `Authorization: Bearer …`
    require_token: bool = False  # SLICEWISE_REQUIRE_TOKEN: refuse to start without a token
    max_body_bytes: int = 1 << 20  # SLICEWISE_MAX_BODY_BYTES: larger request bodies get a 413
    max_texts: int = 64  # SLICEWISE_MAX_TEXTS per request
    max_text_chars: int = 2000  # SLICEWISE_MAX_TEXT_CHARS per text
    log_text: bool = False  # SLICEWISE_LOG_TEXT: store raw text in the prediction log
    prefer_int8: bool = True  # SLICEWISE_PREFER_INT8: int8 model on CPU when the bundle has one
    stream_maxlen: int = 100_000  # SLICEWISE_STREAM_MAXLEN: predictions the log stream keeps
    log_buffer: int = 10_000  # SLICEWISE_LOG_BUFFER: records held in memory while Redis is away
    # SLICEWISE_FEEDBACK_TTL_S: a prediction takes feedback, and its label is kept, this long
    feedback_ttl_s: float = 7 * 24 * 3600.0
    max_feedback_labels: int = 100_000  # SLICEWISE_FEEDBACK_MAX_LABELS: the oldest go past it
    hotswap_interval: float = 2.0  # SLICEWISE_HOTSWAP_INTERVAL seconds between version polls
    model_workers: int = 2  # SLICEWISE_MODEL_WORKERS: batches in the model at once
    slice_rules: bool = True  # SLICEWISE_SLICE_RULES: evaluate rule slices exactly (0: learned)
    # SLICEWISE_ACCESS_LOG: BentoML's access log, one line per request (off: at 300 req/s it was
    # 7% of the event loop's time; /metrics counts requests by status and endpoint either way)
    access_log: bool = False
    # SLICEWISE_TRACING: BentoML's OpenTelemetry spans on /predict and /feedback (off: no
    # exporter is configured by default, and the span bookkeeping was 20% of the event loop's time)
    tracing: bool = False
    # SLICEWISE_GC_FREEZE: after start-up, move every object into the garbage collector's
    # permanent generation (gc.freeze): a full collection over the ~100k start-up objects took
    # ~190 ms on 2 busy cores, a pause every request in flight waited for
    gc_freeze: bool = True
    # SLICEWISE_FAST_PREDICT: POST /predict below BentoML's router, same validation and responses
    # (service/predict_route.py; 0: through BentoML's router and IO descriptors)
    fast_predict: bool = True
    ort_cpu_arena: bool = True  # SLICEWISE_ORT_CPU_ARENA: ONNX Runtime's CPU memory arena
    ort_mem_pattern: bool = True  # SLICEWISE_ORT_MEM_PATTERN: its per-shape memory patterns
    ort_arena_same: bool = False  # SLICEWISE_ORT_ARENA_SAME_AS_REQUESTED: grow it, not double it

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from `SLICEWISE_*` and `REDIS_URL` environment variables."""
        env = os.environ

        def num(name: str, default: float, kind: type = int) -> Any:
            raw = env.get(name)
            if raw is None or not raw.strip():
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None
            if value <= 0:
                raise SettingsError(f"{name}={raw!r} must be positive")
            return value

        settings = cls(
            model_dir=env.get("SLICEWISE_MODEL_DIR") or None,
            model_tag=env.get("SLICEWISE_MODEL_TAG", cls.model_tag),
            redis_url=env.get("REDIS_URL") or None,
            api_token=env.get("SLICEWISE_API_TOKEN") or None,
            require_token=_flag("SLICEWISE_REQUIRE_TOKEN", cls.require_token),
            max_body_bytes=num("SLICEWISE_MAX_BODY_BYTES", cls.max_body_bytes),
            max_texts=num("SLICEWISE_MAX_TEXTS", cls.max_texts),
            max_text_chars=num("SLICEWISE_MAX_TEXT_CHARS", cls.max_text_chars),
            log_text=_flag("SLICEWISE_LOG_TEXT", cls.log_text),
            prefer_int8=_flag("SLICEWISE_PREFER_INT8", cls.prefer_int8),
            stream_maxlen=num("SLICEWISE_STREAM_MAXLEN", cls.stream_maxlen),
            log_buffer=num("SLICEWISE_LOG_BUFFER", cls.log_buffer),
            feedback_ttl_s=num("SLICEWISE_FEEDBACK_TTL_S", cls.feedback_ttl_s, float),
            max_feedback_labels=num("SLICEWISE_FEEDBACK_MAX_LABELS", cls.max_feedback_labels),
            hotswap_interval=num("SLICEWISE_HOTSWAP_INTERVAL", cls.hotswap_interval, float),
            model_workers=num("SLICEWISE_MODEL_WORKERS", cls.model_workers),
            slice_rules=_flag("SLICEWISE_SLICE_RULES", cls.slice_rules),
            access_log=_flag("SLICEWISE_ACCESS_LOG", cls.access_log),
            tracing=_flag("SLICEWISE_TRACING", cls.tracing),
            gc_freeze=_flag("SLICEWISE_GC_FREEZE", cls.gc_freeze),
            fast_predict=_flag("SLICEWISE_FAST_PREDICT", cls.fast_predict),
            ort_cpu_arena=_flag("SLICEWISE_ORT_CPU_ARENA", cls.ort_cpu_arena),
            ort_mem_pattern=_flag("SLICEWISE_ORT_MEM_PATTERN", cls.ort_mem_pattern),
            ort_arena_same=_flag("SLICEWISE_ORT_ARENA_SAME_AS_REQUESTED", cls.ort_arena_same),
        )
        if settings.require_token and not settings.api_token:
            raise SettingsError(
                "SLICEWISE_REQUIRE_TOKEN is set but SLICEWISE_API_TOKEN is empty: refusing to "
                "start an open API; set the token (on Kubernetes: the `api-token` key of the "
                "`slicewise-secrets` Secret)"
            )
        return settings
