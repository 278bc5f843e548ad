"""The user's journey, with real parts: service → Redis log → monitor → Prometheus →
Alertmanager → webhook → retrain with the per-slice gate → promotion → hot swap; and every
Grafana panel's query returns data.

The planted slice: production was trained on labels that ignore negation (a "not good" text
labelled positive), so it is wrong on the `negation` slice. Traffic shifts inside that slice,
users send feedback with the true labels on negated statements, the drift alert fires for
`negation` only (the accuracy alert for `negation`, and for `all`, since the feedback came from
there), Alertmanager groups every retrain alert into one notification, the webhook starts one
retrain on the labelled data plus the logged texts (feedback + weak labels), and the candidate,
right on negation, passes the gate with its real limits. A shuffled-label candidate
is rejected. Traffic returns to normal and the alert resolves.

Prometheus evaluates a copy of the real rules with every `for:` set to 4s (the shipped durations
are tested by `promtool test rules`, tests/unit/test_rules.py); Alertmanager uses the real routing
with 1-2s waits; both are written by `slicewise.alerting`, as `demo-run --alert-for` does.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from slicewise.alerting import AlertingStack, missing_binaries
from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis, free_port
from slicewise.processes import REPO, BentoServer, spawn_monitor
from tests.conftest import FLIP, TINY_LFS, make_tiny_dataset, tiny_config_dict, true_label

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(missing_binaries()), reason=f"not installed: {missing_binaries()} (make test installs)"
    ),
]
MON = REPO / "monitoring"
TIMINGS: dict[str, float] = {}
# A reference split of 120 rows (~30 of them in negation, exact rule membership): the monitor
# judges a slice only with >= min_rows rows in the reference too
SPLIT = {"train": 0.6, "validation": 0.1, "test": 0.1, "reference": 0.2}


def shifted_traffic(n: int = 300) -> list[str]:
    """Texts drawn like the training data, except that every negation text becomes the same
    words (its form, and so its slice membership, is kept; its content shifts). Negated
    questions stay as they are: replacing them would change the question slice too."""
    texts = make_tiny_dataset(n, seed=7)["text"].tolist()
    return [
        "not hate hate hate" if t.startswith("not ") and not t.endswith("?") else t for t in texts
    ]


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def fixable(text: str) -> bool:
    """A negated statement: what users send feedback on (the planted slice's mistakes)."""
    return text.startswith("not ") and not text.endswith("?")


def send(url: str, texts: list[str], feedback_every: int = 0) -> int:
    """POST `texts` in batches of 10, 4 at a time; then feedback with the true label on every
    n-th negated statement. Returns how many feedback labels were sent."""

    def post(batch: list[str]) -> list[dict]:
        r = httpx.post(url + "/predict", json={"texts": batch}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["predictions"]

    with ThreadPoolExecutor(4) as pool:
        batches = [texts[i : i + 10] for i in range(0, len(texts), 10)]
        preds = [p for ps in pool.map(post, batches) for p in ps]
    negated = [i for i, t in enumerate(texts) if fixable(t)]
    chosen = negated[::feedback_every] if feedback_every else []
    for i in chosen:
        fb = {"id": preds[i]["id"], "label": true_label(texts[i])}
        assert httpx.post(url + "/feedback", json=fb, timeout=10).status_code == 200
    return len(chosen)


@pytest.fixture(scope="module")
def planted_bundle(tiny_backbone_dir, bentoml_home, tmp_path_factory) -> Path:
    """Production: the tiny model trained on labels that ignore negation."""
    from training.config import parse_config
    from training.export import export_bundle
    from training.train import prepare_data, train_model

    work = tmp_path_factory.mktemp("planted")
    df = make_tiny_dataset()
    df["label"] = [
        FLIP[y] if t.startswith("not ") else y for t, y in zip(df.text, df.label, strict=True)
    ]
    df.to_csv(work / "data.csv", index=False)
    raw = tiny_config_dict(tiny_backbone_dir, work / "data.csv", work)
    raw["dataset"]["split"] = SPLIT
    raw["export"] = {"output_dir": str(work / "bundle"), "quantize": False}
    cfg = parse_config(raw, "planted")
    prepared = prepare_data(cfg, progress=False)
    trained = train_model(cfg, prepared=prepared, progress=False)
    return export_bundle(
        cfg, trained, prepared, work / "bundle", register=True, progress=False
    ).path


@pytest.fixture(scope="module")
def stack(planted_bundle, tiny_backbone_dir, tiny_config, bentoml_home, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    rds = LocalRedis().start()
    cfg_dict = tiny_config_dict(tiny_backbone_dir, Path(tiny_config.dataset.path), work)
    cfg_dict["dataset"]["split"] = SPLIT
    cfg_dict["labeling_functions"] = TINY_LFS  # the promotion gate keeps its real limits
    cfg_dict["export"] = {"output_dir": str(work / "bundle"), "quantize": False}  # saves a minute
    cfg_file = work / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg_dict))
    env = {"BENTOML_HOME": str(bentoml_home), "HF_HUB_OFFLINE": "1"}
    service = BentoServer(
        {
            **env,
            "SLICEWISE_MODEL_DIR": str(planted_bundle),
            "REDIS_URL": rds.url,
            "SLICEWISE_LOG_TEXT": "1",
            "SLICEWISE_HOTSWAP_INTERVAL": "1",
        },
        log_file=work / "service.log",
    ).start()
    monitor_port = free_port()
    # a window of 300 texts
    monitor = spawn_monitor(
        planted_bundle,
        rds.url,
        monitor_port,
        work / "monitor.log",
        interval=2,
        window_size=300,
        min_rows=10,
        report_dir=work / "reports",
        env=env,
    )
    alerting = AlertingStack(
        work / "alerting",
        service=f"127.0.0.1:{service.port}",
        monitor=f"127.0.0.1:{monitor_port}",
        redis_url=rds.url,
        config=cfg_file,
        production=planted_bundle,
        alert_for="4s",
        interval="1s",
        group_wait="1s",
        group_interval="2s",
        env=env,
    ).start()
    yield {
        "service": service,
        "redis": rds,
        "client": redis.Redis.from_url(rds.url),
        "alerting": alerting,
        "prom": alerting.prometheus_url,
        "work": work,
        "cfg_file": cfg_file,
        "planted": c.Bundle.load(planted_bundle).manifest.version,
        "planted_dir": planted_bundle,
    }
    alerting.stop()
    os.killpg(monitor.pid, 15)
    monitor.wait(timeout=10)
    service.stop()
    rds.stop()


def query(prom: str, expr: str) -> list:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


def retrain_alerts_ever(prom: str) -> set[tuple[str, str]]:
    """(alertname, slice) of every `action="retrain"` alert that fired during the test."""
    res = query(prom, 'max_over_time(ALERTS{alertstate="firing",action="retrain"}[30m])')
    return {(x["metric"]["alertname"], x["metric"]["slice"]) for x in res}


def runs(client: redis.Redis) -> list[dict]:
    return [json.loads(r) for r in client.lrange(c.RETRAIN_RUNS_KEY, 0, -1)]


def served_version(url: str) -> str:
    return httpx.post(url + "/predict", json={"texts": ["good"]}, timeout=10).json()[
        "model_version"
    ]


def test_shift_alert_retrain_promote_hot_swap_resolve(stack) -> None:
    url, prom, client = stack["service"].url, stack["prom"], stack["client"]
    assert served_version(url) == stack["planted"]
    t0 = time.monotonic()

    # 1. shift the negation slice (feedback with true labels on every 2nd negated statement):
    #    SliceDriftDetected fires for negation (no alert ever fires for another slice: below)
    feedback = send(url, shifted_traffic(), feedback_every=2)
    wait_for(
        lambda: query(prom, 'slicewise_slice_rows{slice="all",window="current"} >= 300'),
        60,
        "a full window",
    )
    wait_for(
        lambda: "negation" in stack["alerting"].firing("SliceDriftDetected"),
        60,
        "SliceDriftDetected{negation}",
    )
    TIMINGS["alert_fired_s"] = time.monotonic() - t0

    # 2. Alertmanager -> webhook -> one retrain, on the labelled data + the logged texts
    # (a retrain took 190 s at load 23, over 240 s at load 33, on the shared 2 cores)
    run = wait_for(lambda: runs(client), 900, "the retrain the webhook started", step=1)[0]
    TIMINGS["retrain_done_s"] = time.monotonic() - t0
    reason = json.loads(run["reason"])  # the alerts in Alertmanager's first notification
    assert "negation" in reason["slices"] and set(reason["slices"]) <= {"negation", "all"}
    assert set(reason["alerts"]) <= {"SliceDriftDetected", "SliceAccuracyDrop"}
    assert run["data"]["feedback"] == feedback and run["data"]["weak"] > 0, run["data"]

    # 3. the candidate is right on the planted slice: better on negation, promoted
    assert run["outcome"] == "promoted", (run["error"], run["decision"])
    assert run["decision"]["deltas"]["negation"] > 0.2, run["decision"]
    assert client.get(c.PRODUCTION_VERSION_KEY).decode() == run["candidate_version"]

    # Alertmanager's notification again (as after a webhook restart): acknowledged, not queued
    token = (stack["work"] / "alerting" / "webhook-token").read_text()
    note = {
        "version": "4",
        "groupKey": reason["group_key"],
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "SliceDriftDetected",
                    "slice": "negation",
                    "action": "retrain",
                },
            }
        ],
    }
    hook = f"http://127.0.0.1:{stack['alerting'].ports['webhook']}/alerts"
    again = httpx.post(hook, json=note, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert again.status_code == 202 and again.json()["queued"] is False, again.text

    # 5. the service switches to the promoted model within 30 s
    wait_for(lambda: served_version(url) == run["candidate_version"], 30, "the hot swap")
    TIMINGS["new_version_served_s"] = time.monotonic() - t0

    # 6. traffic returns to normal: the alerts resolve, judged on enough rows. No feedback here:
    #    feedback on negated statements alone would measure `all` on the negation slice only (a
    #    biased sample: it kept SliceAccuracyDrop{all} firing in one CI run), and a few feedback
    #    rows per slice are too noisy for a 5-point limit; the label-free estimate judges instead.
    send(url, make_tiny_dataset(300, seed=11)["text"].tolist())
    negation_ok = (
        'slicewise_slice_drift_detected{slice="negation"} == 0 and '
        'slicewise_slice_insufficient_data{slice="negation"} == 0'
    )

    def resolved() -> bool:
        alerting = stack["alerting"]
        return bool(query(prom, negation_ok)) and not (
            alerting.firing("SliceDriftDetected") or alerting.firing("SliceAccuracyDrop")
        )

    try:
        wait_for(resolved, 90, "the alerts to resolve")
    except AssertionError:
        gauges = "{__name__=~'slicewise_slice_(reference_|estimated_)?accuracy'}"
        values = [(x["metric"], x["value"][1]) for x in query(prom, gauges)]
        raise AssertionError(
            f"still firing: SliceDriftDetected {stack['alerting'].firing('SliceDriftDetected')}, "
            f"SliceAccuracyDrop {stack['alerting'].firing('SliceAccuracyDrop')}; {values}"
        ) from None
    TIMINGS["alert_resolved_s"] = time.monotonic() - t0

    # of the alerts that retrain: drift fired for negation only; measured accuracy dropped on
    # negation, and so overall ("all": the feedback came from negation rows); one retrain ran
    # for all of them. (SliceTrafficShift, a warning that retrains nothing, is not asserted: the
    # share is measured on the tiny model's predicted membership, which the shifted text moves.)
    assert retrain_alerts_ever(prom) == {
        ("SliceDriftDetected", "negation"),
        ("SliceAccuracyDrop", "negation"),
        ("SliceAccuracyDrop", "all"),
    }, retrain_alerts_ever(prom)
    assert len(runs(client)) == 1 and client.llen(c.RETRAIN_QUEUE) == 0
    wait_for(
        lambda: query(prom, 'slicewise_retrain_runs_total{outcome="promoted"} == 1'),
        30,
        "the counter",
    )
    print("scenario timings (s):", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def test_a_shuffled_label_candidate_is_rejected(stack) -> None:
    from training.config import load_config
    from training.retrain import retrain

    client = stack["client"]
    production = client.get(c.PRODUCTION_VERSION_KEY)
    cfg = load_config(stack["cfg_file"])
    report = retrain(
        cfg,
        stack["redis"].url,
        production_dir=stack["planted_dir"],  # when run alone: nothing promoted yet
        report_dir=stack["work"] / "reports",
        shuffle_labels=True,
        progress=False,
    )
    assert report.outcome == "rejected", report.error
    assert any("drops" in r for r in report.decision["reasons"])
    assert (
        report.production_metrics["overall"]["macro_f1"]
        > report.candidate_metrics["overall"]["macro_f1"]
    )
    assert client.get(c.PRODUCTION_VERSION_KEY) == production  # production untouched
    assert served_version(stack["service"].url) == report.production_version


def test_every_grafana_panel_query_returns_data(stack) -> None:
    prom = stack["prom"]
    # feedback of its own (the scenario's last traffic has none), so the accuracy panels have data
    send(stack["service"].url, make_tiny_dataset(100, seed=13)["text"].tolist(), feedback_every=1)
    wait_for(lambda: query(prom, "slicewise_slice_accuracy"), 30, "feedback accuracy in Prometheus")
    empty = []
    for dash in sorted((MON / "grafana/dashboards").glob("*.json")):
        for panel in json.loads(dash.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$slice", "negation")
                try:
                    wait_for(lambda e=expr: query(prom, e), 20, f"{dash.name}: {panel['title']}")
                except AssertionError:
                    empty.append(panel["title"])
    assert not empty
