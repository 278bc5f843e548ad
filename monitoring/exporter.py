"""The monitor's Prometheus metrics (docs/design.md §8), in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily

from slicewise.core.contracts import RETRAIN_OUTCOMES, RETRAIN_OUTCOMES_KEY
from slicewise.core.contracts import MetricNames as M


class RetrainRunsCollector:
    """`slicewise_retrain_runs_total{outcome}` read from the Redis hash the retrain job updates."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[CounterMetricFamily]:  # noqa: D102
        family = CounterMetricFamily(M.RETRAIN_RUNS, "Retrain runs by outcome", labels=["outcome"])
        try:
            counts = self.client.hgetall(RETRAIN_OUTCOMES_KEY)
        except redis.RedisError:
            counts = {}
        seen = {k.decode(): float(v) for k, v in counts.items()}
        for outcome in sorted(set(RETRAIN_OUTCOMES) | set(seen)):
            family.add_metric([outcome], seen.get(outcome, 0.0))
        yield family


class MonitorMetrics:
    """Gauges the monitor sets after each run."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.drift_score = Gauge(
            M.SLICE_DRIFT_SCORE,
            "Drift test score per slice and column",
            ["slice", "column", "method"],
            registry=r,
        )
        self.drift_detected = Gauge(
            M.SLICE_DRIFT_DETECTED, "1 when the slice drifted", ["slice"], registry=r
        )
        self.drifted_share = Gauge(
            M.SLICE_DRIFTED_COLUMNS_SHARE, "Share of drifted columns", ["slice"], registry=r
        )
        self.rows = Gauge(M.SLICE_ROWS, "Rows per slice", ["slice", "window"], registry=r)
        self.traffic_share = Gauge(
            M.SLICE_TRAFFIC_SHARE, "Share of traffic in the slice", ["slice", "window"], registry=r
        )
        self.traffic_explained = Gauge(
            M.SLICE_TRAFFIC_SHIFT_EXPLAINED,
            "1 when the slice's share moved only with another slice's (explained, not shifted)",
            ["slice"],
            registry=r,
        )
        self.insufficient = Gauge(
            M.SLICE_INSUFFICIENT_DATA,
            "1 when the slice has too few rows to judge",
            ["slice"],
            registry=r,
        )
        self.membership_learned = Gauge(
            M.SLICE_MEMBERSHIP_LEARNED,
            "1 when the monitor judged the slice on learned indicator scores, not its rule "
            "(the manifest says learned, or the service fell back for most of the window)",
            ["slice"],
            registry=r,
        )
        self.accuracy = Gauge(
            M.SLICE_ACCURACY, "Accuracy from feedback labels", ["slice"], registry=r
        )
        self.estimated = Gauge(
            M.SLICE_ESTIMATED_ACCURACY, "Label-free accuracy estimate", ["slice"], registry=r
        )
        self.reference_accuracy = Gauge(
            M.SLICE_REFERENCE_ACCURACY, "Accuracy on the reference profile", ["slice"], registry=r
        )
        self.last_run = Gauge(
            M.MONITOR_LAST_RUN, "Unix time of the last completed monitor run", registry=r
        )
        self.duration = Gauge(
            M.MONITOR_RUN_DURATION, "Seconds the last monitor run took", registry=r
        )

    def watch_retrains(self, client: redis.Redis) -> None:
        """Also export the retrain outcome counter (read from Redis at scrape time)."""
        self.registry.register(RetrainRunsCollector(client))  # type: ignore[arg-type]

    def update(self, summary: dict[str, Any]) -> None:
        """Set every gauge from one run's summary (see `monitoring.monitor.run_once`)."""
        for g in (self.drift_score, self.accuracy, self.estimated):
            g.clear()  # a slice that lost its data must not keep an old value
        for s in summary["slices"]:
            name = s["slice"]
            self.drift_detected.labels(name).set(int(s["drift_detected"]))
            self.drifted_share.labels(name).set(s["drifted_columns_share"])
            self.insufficient.labels(name).set(int(s["insufficient_data"]))
            self.rows.labels(name, "current").set(s["current_rows"])
            self.rows.labels(name, "reference").set(s["reference_rows"])
            self.traffic_share.labels(name, "current").set(s["current_share"])
            self.traffic_share.labels(name, "reference").set(s["reference_share"])
            self.traffic_explained.labels(name).set(int(bool(s["traffic_explained_by"])))
            for col in s["columns"]:
                self.drift_score.labels(name, col["column"], col["method"]).set(col["score"])
        for name, mode in summary.get("membership", {}).items():
            self.membership_learned.labels(name).set(int(mode == "learned"))
        for name, v in summary["accuracy"].items():
            self.accuracy.labels(name).set(v)
        for name, v in summary["estimated_accuracy"].items():
            self.estimated.labels(name).set(v)
        for name, v in summary["reference_accuracy"].items():
            self.reference_accuracy.labels(name).set(v)
        self.last_run.set(summary["finished_at"])
        self.duration.set(summary["duration_seconds"])

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve `/metrics` on `port` in a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)
