"""`slicewise monitor`: one pass (or a loop) of per-slice drift and accuracy (docs/design.md §9)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pandas as pd
import redis

from monitoring.accuracy import (
    ConfidenceCalibrator,
    estimated_accuracy,
    feedback_accuracy,
    reference_accuracy,
)
from monitoring.drift import evidently_report, membership_basis, slice_drift
from monitoring.exporter import MonitorMetrics
from monitoring.window import Window, read_feedback
from slicewise.core import contracts as c
from slicewise.core.feedback import FeedbackLabels
from slicewise.core.settings import MonitorConfig

log = logging.getLogger("slicewise.monitor")


class _Clock:
    """Wall and CPU seconds of a pass's phases (`summary["timings"]`)."""

    def __init__(self) -> None:
        self.laps: dict[str, dict[str, float]] = {}
        self._at = (time.perf_counter(), time.process_time())

    def lap(self, phase: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.laps[phase] = {"wall": now[0] - self._at[0], "cpu": now[1] - self._at[1]}
        self._at = now


class Monitor:
    """Holds the reference profile and the Redis client; `run_once` does one pass.

    Args:
        bundle: the served model's bundle (its manifest and `reference.parquet`).
        client: Redis holding the prediction log and the feedback stream.
        settings: the config's `monitor` section (window, `min_rows`, `drift_share`,
            `report_dir`; `run_forever` also reads `interval_seconds` and `port`).
        metrics: the Prometheus gauges to update after each pass, if any.

    Raises:
        BundleError: the bundle has no reference profile.
    """

    def __init__(
        self,
        bundle: c.Bundle,
        client: redis.Redis,
        settings: MonitorConfig,
        metrics: MonitorMetrics | None = None,
    ) -> None:
        self.client, self.settings, self.metrics = client, settings, metrics
        self.switched = False  # True once follow_production has loaded a promoted version
        self.passes = 0
        self.window = Window(bundle.manifest, settings.window_size, settings.window_minutes)
        self.feedback = FeedbackLabels()  # kept too: only new feedback events are read
        self._use(bundle)

    def _use(self, bundle: c.Bundle) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.window.reset(bundle.manifest)  # its columns follow the manifest: read it anew
        self.reference: pd.DataFrame = bundle.reference()  # BundleError when there is none
        self.calibrator = ConfidenceCalibrator(self.reference)
        self.reference_accuracy = reference_accuracy(self.reference, self.manifest)

    def follow_production(self) -> None:
        """Judge against the production model's reference profile: when a retrain promoted
        another version (`slicewise:production_version`), load it from the model store.

        Without this, the promoted model's predictions would be compared with the old model's
        profile and its slice alerts would never resolve. After a switch, only predictions of
        the version judged are read (the replaced model's rows are not its drift). A version
        that cannot be loaded is logged and the current profile kept.
        """
        try:
            raw = self.client.get(c.PRODUCTION_VERSION_KEY)
            if not raw or raw.decode() == self.manifest.version:
                return
            self._use(c.resolve_bundle(None, f"{c.MODEL_NAME}:{raw.decode()}"))
            self.switched = True
            log.info("monitor: production is now %s; judging against its profile", raw.decode())
        except (redis.RedisError, c.BundleError) as exc:
            log.warning("monitor: keeping the %s profile: %s", self.manifest.version, exc)

    def run_once(self) -> dict[str, Any]:
        """Bring the window up to date (only the entries logged since the last pass are read),
        judge drift and accuracy per slice, export, keep a report.
        """
        started = time.time()
        clock = _Clock()
        self.follow_production()
        s = self.settings
        current = self.window.refresh(self.client)
        if self.switched:
            current = current[current["model_version"] == self.manifest.version]
            current = current.reset_index(drop=True)
        clock.lap("read")
        basis = membership_basis(self.reference, current, self.manifest)
        current, reference = basis.current, basis.reference
        reference_acc = (
            self.reference_accuracy
            if reference is self.reference
            else reference_accuracy(reference, self.manifest)
        )
        drift = slice_drift(reference, current, self.manifest, s.min_rows, s.drift_share)
        clock.lap("drift")
        feedback = read_feedback(self.client, kept=self.feedback)
        accuracy = feedback_accuracy(current, feedback, self.manifest, s.min_rows)
        estimated = estimated_accuracy(current, self.manifest, self.calibrator, s.min_rows)
        clock.lap("accuracy")
        summary: dict[str, Any] = {
            "model_version": self.manifest.version,
            "started_at": started,
            "window_rows": len(current),
            "membership": basis.judged,
            "learned_membership_slices": [n for n, m in basis.judged.items() if m == "learned"],
            "membership_fallback_share": basis.fallback_share,
            "slices": [d.as_dict() for d in drift.values()],
            "drifted_slices": [n for n, d in drift.items() if d.drift_detected],
            "traffic_shifted_slices": [n for n, d in drift.items() if d.traffic_shifted],
            "explained_drift": {n: d.explained_by for n, d in drift.items() if d.explained_by},
            "explained_traffic_shift": {
                n: d.traffic_explained_by for n, d in drift.items() if d.traffic_explained_by
            },
            "insufficient_data": [n for n, d in drift.items() if d.insufficient_data],
            "accuracy": accuracy,
            "estimated_accuracy": estimated,
            "reference_accuracy": reference_acc,
            "entries_read": self.window.last_read,
            "timings": clock.laps,
        }
        summary["finished_at"] = time.time()
        summary["duration_seconds"] = summary["finished_at"] - started
        if self.metrics is not None:
            self.metrics.update(summary)
        if s.report_dir is not None:
            self._write_report(summary, reference, current)
        self.passes += 1
        if basis.fallback_share and max(basis.fallback_share.values()) > 0:
            log.warning(
                "monitor: the service served learned scores for rule slices (share of the "
                "window: %s); judged on learned scores: %s",
                {n: round(v, 3) for n, v in basis.fallback_share.items() if v},
                summary["learned_membership_slices"],
            )
        if current.empty:
            log.warning(
                "monitor: the prediction log is empty; every slice reports insufficient data"
            )
        log.info(
            "monitor pass: %d rows, drifted %s (explained by another slice: %s), "
            "traffic shifted %s (explained by another slice: %s), insufficient data %s (%.2fs)",
            len(current),
            summary["drifted_slices"],
            summary["explained_drift"],
            summary["traffic_shifted_slices"],
            summary["explained_traffic_shift"],
            summary["insufficient_data"],
            summary["duration_seconds"],
        )
        return summary

    def _write_report(
        self, summary: dict[str, Any], reference: pd.DataFrame, current: pd.DataFrame
    ) -> None:
        assert self.settings.report_dir is not None
        folder = self.settings.report_dir
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(summary["started_at"]))
        (folder / f"monitor-{stamp}.json").write_text(json.dumps(summary, indent=2, default=float))
        # the HTML costs more than the whole pass on a large window: every `report_html_every`
        # passes, on the newest `report_html_rows` rows (docs/monitoring.md)
        due = self.passes % self.settings.report_html_every == 0
        if due and len(current) >= self.settings.min_rows:
            try:
                newest = current.iloc[-self.settings.report_html_rows :]
                evidently_report(reference, newest, self.manifest).save_html(
                    str(folder / f"monitor-{stamp}.html")
                )
            except Exception as exc:  # the HTML is a convenience: never fail the pass for it
                log.warning("could not write the Evidently HTML report: %s", exc)

    def run_forever(self) -> None:
        """Serve /metrics on `settings.port` (unless 0), then run a pass every
        `settings.interval_seconds`; a failing pass is logged and the loop goes on.
        """
        interval = self.settings.interval_seconds
        if self.metrics is not None and self.settings.port:
            self.metrics.serve(self.settings.port)
        while True:
            t0 = time.time()
            try:
                self.run_once()
            except Exception as exc:
                log.error("monitor pass failed: %s", exc)
            time.sleep(max(0.0, interval - (time.time() - t0)))


def start_monitor(
    settings: MonitorConfig, redis_url: str, bundle_dir: str | None, tag: str
) -> Monitor:
    """A monitor on the bundle at `bundle_dir` (or the model-store `tag`) with its metrics.

    Args:
        settings: the config's `monitor` section (command-line overrides applied).
        redis_url: Redis holding the prediction log.
        bundle_dir: bundle folder; None: look `tag` up in the BentoML model store.
        tag: model-store tag, e.g. `slicewise-classifier:latest`.

    Returns:
        The `Monitor`, its metrics also exporting the retrain-run counts from Redis.

    Raises:
        BundleError: no such bundle, or it has no reference profile.
    """
    client = redis.Redis.from_url(redis_url)
    metrics = MonitorMetrics()
    metrics.watch_retrains(client)
    return Monitor(c.resolve_bundle(bundle_dir, tag), client, settings, metrics)
