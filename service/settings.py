"""Service settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass

from slicewise.core.contracts import MODEL_NAME


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
    max_texts: int = 64  # SLICEWISE_MAX_TEXTS per request
    max_text_chars: int = 2000  # SLICEWISE_MAX_TEXT_CHARS per text
    log_text: bool = False  # SLICEWISE_LOG_TEXT: store raw text in the prediction log
    prefer_int8: bool = True  # SLICEWISE_PREFER_INT8: int8 model on CPU when the bundle has one
    stream_maxlen: int = 100_000  # SLICEWISE_STREAM_MAXLEN: approximate length cap of the stream
    log_buffer: int = 10_000  # SLICEWISE_LOG_BUFFER: records held in memory while Redis is away
    hotswap_interval: float = 2.0  # SLICEWISE_HOTSWAP_INTERVAL seconds between version polls
    model_workers: int = 2  # SLICEWISE_MODEL_WORKERS: batches in the model at once
    slice_rules: bool = True  # SLICEWISE_SLICE_RULES: evaluate rule slices exactly (0: learned)

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from `SLICEWISE_*` and `REDIS_URL` environment variables."""
        env = os.environ
        return cls(
            model_dir=env.get("SLICEWISE_MODEL_DIR") or None,
            model_tag=env.get("SLICEWISE_MODEL_TAG", cls.model_tag),
            redis_url=env.get("REDIS_URL") or None,
            api_token=env.get("SLICEWISE_API_TOKEN") or None,
            max_texts=int(env.get("SLICEWISE_MAX_TEXTS", cls.max_texts)),
            max_text_chars=int(env.get("SLICEWISE_MAX_TEXT_CHARS", cls.max_text_chars)),
            log_text=_flag("SLICEWISE_LOG_TEXT", cls.log_text),
            prefer_int8=_flag("SLICEWISE_PREFER_INT8", cls.prefer_int8),
            stream_maxlen=int(env.get("SLICEWISE_STREAM_MAXLEN", cls.stream_maxlen)),
            log_buffer=int(env.get("SLICEWISE_LOG_BUFFER", cls.log_buffer)),
            hotswap_interval=float(env.get("SLICEWISE_HOTSWAP_INTERVAL", cls.hotswap_interval)),
            model_workers=int(env.get("SLICEWISE_MODEL_WORKERS", cls.model_workers)),
            slice_rules=_flag("SLICEWISE_SLICE_RULES", cls.slice_rules),
        )
