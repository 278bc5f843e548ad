"""Which production version the service may switch to (the hot-swap watcher's checks).

The value of `slicewise:production_version` is trusted only as far as it goes: the service
loads a version only when it has the form of a model version (`contracts.VERSION_PATTERN`),
the promotion gate wrote a promotion record for it (`contracts.promotion_record_key`, written
by `training.retrain.promote`), and the model store has it. A value that fails is logged once
and not tried again until the key changes; a Redis error is logged once per outage.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import redis

from service.http_guard import clip
from slicewise.core.contracts import (
    PRODUCTION_VERSION_KEY,
    VERSION_PATTERN,
    BundleError,
    promotion_record_key,
)

log = logging.getLogger("slicewise.service")
_VERSION = re.compile(VERSION_PATTERN)


class HotSwapWatcher:
    """Decides on each poll whether to load and install the version named in Redis.

    Args:
        load: loads a version from the model store (raises `BundleError` when it is missing).
        install: makes a loaded runtime the served one.
    """

    def __init__(self, load: Callable[[str], Any], install: Callable[[Any], None]) -> None:
        self.load, self.install = load, install
        self.rejected: str | None = None  # the last value refused (not retried while it stays)
        self.redis_ok = True

    def reject_reason(self, client: redis.Redis, wanted: str) -> str | None:
        """Why `wanted` may not be loaded, or None when it may."""
        if not _VERSION.fullmatch(wanted):
            return "not a model version (expected YYYYMMDD-HHMMSS-xxxxxx)"
        if not client.exists(promotion_record_key(wanted)):
            return "no promotion record: the promotion gate did not promote it"
        return None

    def poll(self, client: redis.Redis, current: str | None) -> str | None:
        """One check of the production key; returns the version installed, if any."""
        try:
            raw = client.get(PRODUCTION_VERSION_KEY)
            wanted = raw.decode("utf-8", "replace") if raw else None
            if not wanted or wanted == current or wanted == self.rejected:
                self._redis_back()
                return None
            reason = self.reject_reason(client, wanted)
            self._redis_back()
        except redis.RedisError as exc:
            if self.redis_ok:
                log.warning("hot-swap check failed: Redis unavailable (%s); will retry", exc)
            self.redis_ok = False
            return None
        if reason is None:
            try:
                runtime = self.load(wanted)
            except (BundleError, OSError, RuntimeError) as exc:
                reason = f"cannot load it: {exc}"
        if reason is not None:
            self.rejected = wanted
            log.warning(
                "hot-swap: ignoring production version %r: %s (not retried until the key changes)",
                clip(wanted, 60),
                reason,
            )
            return None
        self.install(runtime)
        self.rejected = None
        log.info("hot-swapped to model %s", wanted)
        return wanted

    def _redis_back(self) -> None:
        if not self.redis_ok:
            log.info("hot-swap check: Redis is back")
        self.redis_ok = True
