"""The monitor reads the real Redis log: window, feedback accuracy, estimated accuracy, metrics."""

from __future__ import annotations

import time

import pytest
import redis
from prometheus_client import generate_latest

from monitoring.exporter import MonitorMetrics
from monitoring.monitor import Monitor
from monitoring.window import read_feedback, read_window
from slicewise.core import contracts as c
from slicewise.core.settings import MonitorConfig


def _log(
    client: redis.Redis, bundle: c.Bundle, n: int, seed: int = 0, learned: tuple[str, ...] = ()
) -> list[str]:
    """Log `n` reference rows as the service would; slices in `learned` as a service that fell
    back to the learned score for them logs them (the score, named in `learned_slices`)."""
    ref = bundle.reference().sample(n, replace=True, random_state=seed)
    m = bundle.manifest
    ids = []
    pipe = client.pipeline()
    for _, row in ref.iterrows():
        rec = c.PredictionRecord(
            m.version,
            row[c.PREDICTED_LABEL_COLUMN],
            row[c.CONFIDENCE_COLUMN],
            {lab: row[c.prob_column(lab)] for lab in m.labels},
            {
                s: row[c.learned_score_column(s) if s in learned else c.slice_score_column(s)]
                for s in m.slice_names
            },
            int(row[c.TEXT_LENGTH_COLUMN]),
            learned_slices=list(learned),
        )
        pipe.xadd(c.PREDICTIONS_STREAM, rec.to_fields())
        ids.append(rec.id)
    pipe.execute()
    return ids


def test_window_by_count_and_by_time(redis_server, tiny_bundle) -> None:
    client = redis.Redis.from_url(redis_server.url)
    bundle = c.Bundle.load(tiny_bundle)
    assert read_window(client, bundle.manifest).empty  # empty log: empty frame, right columns
    ids = _log(client, bundle, 120)
    w = read_window(client, bundle.manifest, size=50, batch=16)
    assert len(w) == 50 and w["id"].tolist() == ids[-50:]
    assert list(w.filter(like="slice_").columns) == [
        c.slice_score_column(s) for s in bundle.manifest.slice_names
    ]
    assert len(read_window(client, bundle.manifest, minutes=1)) == 120
    client.xadd(c.PREDICTIONS_STREAM, {"id": "broken"})  # unparsable entries are skipped
    assert len(read_window(client, bundle.manifest, size=500)) == 120


def test_monitor_pass_exports_gauges_and_reports(redis_server, tiny_bundle, tmp_path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    bundle = c.Bundle.load(tiny_bundle)
    ids = _log(client, bundle, 300)
    for pid in ids[:100]:  # feedback: every label "neutral"
        client.xadd(c.FEEDBACK_STREAM, {"id": pid, "label": "neutral", "ts": str(time.time())})
    assert len(read_feedback(client)) == 100
    metrics = MonitorMetrics()
    metrics.watch_retrains(client)
    client.hincrby("slicewise:retrain:outcomes", "rejected", 2)
    mon = Monitor(
        bundle, client, MonitorConfig(window_size=1000, min_rows=20, report_dir=tmp_path), metrics
    )
    summary = mon.run_once()
    assert summary["window_rows"] == 300 and summary["drifted_slices"] == []
    rows = {s["slice"]: s for s in summary["slices"]}
    assert rows["all"]["current_rows"] == 300 and not rows["all"]["insufficient_data"]
    # feedback accuracy = share of predictions that said "neutral" among the first 100
    window = read_window(client, bundle.manifest, 1000)
    expected = float(
        (window.set_index("id").loc[ids[:100], c.PREDICTED_LABEL_COLUMN] == "neutral").mean()
    )
    assert summary["accuracy"]["all"] == pytest.approx(expected)
    # the calibrator is fitted on the reference and the window is drawn from it: the label-free
    # estimate must land near the window's true accuracy (±0.08, ~3 standard errors at n=300)
    drawn = bundle.reference().sample(300, replace=True, random_state=0)
    true_acc = float((drawn[c.PREDICTED_LABEL_COLUMN] == drawn[c.TRUE_LABEL_COLUMN]).mean())
    assert summary["estimated_accuracy"]["all"] == pytest.approx(true_acc, abs=0.08)
    text = generate_latest(metrics.registry).decode()
    assert 'slicewise_slice_drift_detected{slice="all"} 0.0' in text
    assert 'slicewise_slice_rows{slice="all",window="current"} 300.0' in text
    assert 'slicewise_retrain_runs_total{outcome="rejected"} 2.0' in text
    assert "slicewise_monitor_last_run_timestamp_seconds" in text
    assert (
        len(list(tmp_path.glob("monitor-*.json"))) == 1
        and len(list(tmp_path.glob("monitor-*.html"))) == 1
    )


def test_slices_the_service_served_on_learned_scores_are_judged_on_learned_scores(
    redis_server, tiny_bundle
) -> None:
    """The service fell back to the learned score for `question` (its module not importable
    there, say): the log says so per record, the monitor judges `question` on learned scores
    on both sides (the reference's `score_question`), reports it and exports it."""
    from monitoring.drift import slice_drift

    client = redis.Redis.from_url(redis_server.url)
    bundle = c.Bundle.load(tiny_bundle)
    _log(client, bundle, 600, seed=1, learned=("question",))
    metrics = MonitorMetrics()
    settings = MonitorConfig(window_size=1000, min_rows=20, report_dir=None)
    summary = Monitor(bundle, client, settings, metrics).run_once()
    assert summary["learned_membership_slices"] == ["question"]
    assert summary["membership"] == {"negation": "rule", "question": "learned", "short": "rule"}
    assert summary["membership_fallback_share"]["question"] == 1.0
    assert summary["membership_fallback_share"]["negation"] == 0.0
    assert summary["drifted_slices"] == []  # same model, same texts: nothing moved
    text = generate_latest(metrics.registry).decode()
    assert 'slicewise_slice_membership_learned{slice="question"} 1.0' in text
    assert 'slicewise_slice_membership_learned{slice="negation"} 0.0' in text
    # judged as before (learned scores against the reference's exact membership), the
    # `question` column differs in every slice although nothing changed
    window = read_window(client, bundle.manifest, 1000)
    naive = slice_drift(bundle.reference(), window, bundle.manifest, 20)
    assert any(
        col.drifted
        for r in naive.values()
        for col in r.columns
        if col.column == c.slice_score_column("question")
    )


def test_bundle_without_reference_is_a_clear_error(redis_server, tiny_bundle, tmp_path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    (copy / c.REFERENCE_PARQUET).unlink()
    with pytest.raises(c.BundleError, match=r"has no reference\.parquet"):
        Monitor(
            c.Bundle.load(copy),
            redis.Redis.from_url(redis_server.url),
            MonitorConfig(report_dir=None),
        )


def test_redis_down_is_a_window_error(tiny_bundle) -> None:
    from monitoring.window import WindowError

    client = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(WindowError, match="cannot read slicewise:predictions"):
        read_window(client, c.Bundle.load(tiny_bundle).manifest)


def test_monitor_keeps_its_profile_when_production_names_an_unknown_version(
    redis_server, tiny_bundle, bentoml_home, caplog
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    bundle = c.Bundle.load(tiny_bundle)
    mon = Monitor(bundle, client, MonitorConfig(window_size=100, min_rows=5, report_dir=None))
    client.set(c.PRODUCTION_VERSION_KEY, bundle.manifest.version)
    mon.follow_production()  # the version it already judges: nothing to do
    assert not mon.switched
    client.set(c.PRODUCTION_VERSION_KEY, "no-such-version")
    with caplog.at_level("WARNING", logger="slicewise.monitor"):
        mon.follow_production()
    assert not mon.switched and mon.manifest.version == bundle.manifest.version
    assert "keeping the" in caplog.text and "no-such-version" in caplog.text
