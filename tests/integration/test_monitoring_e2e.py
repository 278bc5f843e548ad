"""The whole loop with real parts: service → Redis log → monitor → Prometheus → Alertmanager →
webhook → retrain with the per-slice gate. Also: every Grafana panel's query returns data.

Prometheus evaluates the real rules file with `for:` shortened to 0s (the durations themselves
are covered by `promtool test rules`); Alertmanager uses the real routing with short waits.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis, free_port
from slicewise.processes import REPO, BentoServer
from tests.conftest import tiny_config_dict

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MON = REPO / "monitoring"
TOKEN = "e2e-token"
# The shifted traffic: the negation slice gets long, uniform texts; other slices stay as trained.


def shifted_traffic(n: int = 300) -> list[str]:
    """Texts drawn like the training data, except that every negation text becomes the same
    three words (its form, and so its slice membership, is kept; its content shifts)."""
    from tests.conftest import make_tiny_dataset

    texts = make_tiny_dataset(n, seed=7)["text"].tolist()
    # negation texts that are also questions stay as they are: replacing them would change the
    # make-up of the question slice too (real drift there, not what this test injects)
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


def spawn(args: list[str], log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, **kw
    )


@pytest.fixture(scope="module")
def stack(tiny_bundle, tiny_backbone_dir, tiny_config, bentoml_home, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    procs: list[subprocess.Popen] = []
    rds = LocalRedis().start()
    cfg_file = work / "tiny.yaml"
    cfg_dict = tiny_config_dict(tiny_backbone_dir, Path(tiny_config.dataset.path), work)
    cfg_dict["export"] = {"output_dir": str(work / "bundle"), "quantize": False}
    cfg_dict["promotion"] = {
        "max_overall_drop": 0.2,
        "max_slice_drop": 0.3,
    }  # a normal retrain passes
    cfg_file.write_text(yaml.safe_dump(cfg_dict))
    env = {"BENTOML_HOME": str(bentoml_home), "HF_HUB_OFFLINE": "1"}
    service = BentoServer(
        {
            **env,
            "SLICEWISE_MODEL_DIR": str(tiny_bundle),
            "REDIS_URL": rds.url,
            "SLICEWISE_LOG_TEXT": "1",
        },
        log_file=work / "service.log",
    ).start()
    ports = {"monitor": free_port(), "webhook": free_port(), "prom": free_port(), "am": free_port()}
    slicewise = [sys.executable, "-m", "slicewise.cli"]
    import os

    penv = {**os.environ, **env, "SLICEWISE_WEBHOOK_TOKEN": TOKEN}
    procs.append(
        spawn(
            [
                *slicewise,
                "monitor",
                "--bundle",
                str(tiny_bundle),
                "--redis-url",
                rds.url,
                "--window-size",
                "300",
                "--min-rows",
                "8",
                "--interval",
                "2",
                "--port",
                str(ports["monitor"]),
                "--report-dir",
                str(work / "reports"),
            ],
            work / "monitor.log",
            env=penv,
            cwd=REPO,
        )
    )
    procs.append(
        spawn(
            [
                *slicewise,
                "webhook",
                "--redis-url",
                rds.url,
                "--port",
                str(ports["webhook"]),
                "--run-retrains",
                "--config",
                str(cfg_file),
            ],
            work / "webhook.log",
            env=penv,
            cwd=work,
        )
    )
    # Alertmanager: the real routing tree, short waits, our webhook URL and token file
    token_file = work / "token"
    token_file.write_text(TOKEN)
    am = yaml.safe_load((MON / "alertmanager/alertmanager.yml").read_text())
    am["route"]["group_wait"] = am["route"]["routes"][0]["group_wait"] = "1s"
    am["route"]["group_interval"] = "2s"
    hook = am["receivers"][1]["webhook_configs"][0]
    hook["url"] = f"http://127.0.0.1:{ports['webhook']}/alerts"
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    (work / "am.yml").write_text(yaml.safe_dump(am))
    procs.append(
        spawn(
            [
                shutil.which("prometheus-alertmanager") or "alertmanager",
                f"--config.file={work / 'am.yml'}",
                f"--storage.path={work / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{ports['am']}",
                "--cluster.listen-address=",
            ],
            work / "am.log",
        )
    )
    # Prometheus: the real rules with for: 0s, 1s scrapes of service and monitor
    rules = re.sub(r"for: \d+[smh]", "for: 0s", (MON / "prometheus/rules.yml").read_text())
    (work / "rules.yml").write_text(rules)
    prom_cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['am']}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "slicewise-service",
                "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}],
            },
            {
                "job_name": "slicewise-monitor",
                "static_configs": [{"targets": [f"127.0.0.1:{ports['monitor']}"]}],
            },
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
    procs.append(
        spawn(
            [
                "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'prom'}",
                f"--web.listen-address=127.0.0.1:{ports['prom']}",
            ],
            work / "prom.log",
        )
    )
    prom = f"http://127.0.0.1:{ports['prom']}"
    wait_for(lambda: _ok(prom + "/-/ready"), 60, "prometheus")
    yield {
        "service": service,
        "redis": rds,
        "prom": prom,
        "work": work,
        "cfg_file": cfg_file,
        "ports": ports,
    }
    for p in procs:
        if p.poll() is None:
            import os as _os

            _os.killpg(p.pid, 15)
            p.wait(timeout=10)
    service.stop()
    rds.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(prom: str, expr: str) -> list:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


def firing(prom: str, alertname: str) -> set[str]:
    res = query(prom, f'ALERTS{{alertname="{alertname}",alertstate="firing"}}')
    return {x["metric"].get("slice", "") for x in res}


def test_drift_in_one_slice_alerts_retrains_and_gates(stack, tiny_config) -> None:
    url, prom = stack["service"].url, stack["prom"]
    texts = shifted_traffic()
    ids = []
    for i in range(0, len(texts), 10):
        r = httpx.post(url + "/predict", json={"texts": texts[i : i + 10]}, timeout=30)
        assert r.status_code == 200
        ids += [p["id"] for p in r.json()["predictions"]]
    time.sleep(1)
    for pid, _text in list(zip(ids, texts, strict=True))[
        ::5
    ]:  # some feedback, for the accuracy panels
        label = "neutral"
        assert (
            httpx.post(url + "/feedback", json={"id": pid, "label": label}, timeout=10).status_code
            == 200
        )

    # judge the full window: a monitor pass over a half-sent window is a different sample
    wait_for(
        lambda: query(prom, 'slicewise_slice_rows{slice="all",window="current"} >= 300'),
        60,
        "a full window",
    )
    wait_for(
        lambda: "negation" in firing(prom, "SliceDriftDetected"), 60, "SliceDriftDetected to fire"
    )
    time.sleep(
        4
    )  # alerts from partial windows (for: 0s here) resolve within a couple of evaluations
    drifted = firing(prom, "SliceDriftDetected")
    assert drifted == {"negation"}, drifted
    # Alertmanager -> webhook -> queued retrain -> outcome recorded in Redis
    client = redis.Redis.from_url(stack["redis"].url)

    def drift_run():
        for raw in client.lrange("slicewise:retrain:runs", 0, -1):
            run = json.loads(raw)
            if "SliceDriftDetected" in (run["reason"] or ""):
                return run
        return None

    run = wait_for(drift_run, 150, "the retrain queued by SliceDriftDetected")
    assert json.loads(run["reason"])["slices"] == ["negation"]
    assert run["outcome"] in {"promoted", "rejected"}, run.get("error")
    assert set(run["decision"]["deltas"]) >= {"overall", *tiny_config.monitored_slices}
    outcomes = {k.decode(): int(v) for k, v in client.hgetall("slicewise:retrain:outcomes").items()}
    assert outcomes.get(run["outcome"], 0) >= 1
    runs = [run]
    # Alertmanager re-sends the group every group_interval; the webhook collapses it on groupKey
    time.sleep(5)
    group_keys = [
        json.loads(r["reason"])["group_key"]
        for r in map(json.loads, client.lrange("slicewise:retrain:runs", 0, -1))
    ]
    assert len(group_keys) == len(set(group_keys)), group_keys
    if runs[0]["outcome"] == "promoted":
        versions = client.get(c.PRODUCTION_VERSION_KEY)
        assert versions is not None
    # the retrain outcome shows up in Prometheus through the monitor
    wait_for(
        lambda: query(
            prom, 'slicewise_retrain_runs_total{{outcome="{}"}} >= 1'.format(runs[0]["outcome"])
        ),
        30,
        "the retrain counter in Prometheus",
    )


def test_a_worse_candidate_is_rejected(stack) -> None:
    from training.config import load_config
    from training.retrain import retrain

    cfg = load_config(stack["cfg_file"])
    cfg.promotion.max_overall_drop, cfg.promotion.max_slice_drop = 0.005, 0.01  # the real defaults
    client = redis.Redis.from_url(stack["redis"].url)
    report = retrain(
        cfg,
        stack["redis"].url,
        report_dir=stack["work"] / "reports",
        shuffle_labels=True,
        progress=False,
    )
    assert report.outcome == "rejected", report.error
    assert any("drops" in r for r in report.decision["reasons"])
    assert (
        client.get(c.PRODUCTION_VERSION_KEY) != report.candidate_version.encode()
    )  # never promoted
    assert (
        report.production_metrics["overall"]["macro_f1"]
        > report.candidate_metrics["overall"]["macro_f1"]
    )


def test_every_grafana_panel_query_returns_data(stack) -> None:
    prom = stack["prom"]
    wait_for(lambda: query(prom, "slicewise_slice_accuracy"), 30, "feedback accuracy in Prometheus")
    empty = []
    for dash in sorted((MON / "grafana/dashboards").glob("*.json")):
        for panel in json.loads(dash.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$slice", "negation")
                if not wait_for(
                    lambda e=expr: query(prom, e), 20, f"{dash.name}: {panel['title']}"
                ):
                    empty.append(panel["title"])
    assert not empty
