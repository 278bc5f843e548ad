"""`slicewise demo-run` (what `make run` runs) on the tiny bundle, with no `redis-server` on PATH:
it serves, and starts Prometheus, Alertmanager and the retrain webhook wired to each other."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis
import yaml

from slicewise.alerting import missing_binaries
from slicewise.core.redis_server import free_port
from tests.conftest import tiny_config_dict

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def path_without_redis_server(tmp_path: Path) -> str:
    """A PATH with this venv's scripts and the monitoring binaries, but no redis-server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("prometheus", "promtool", "prometheus-alertmanager", "alertmanager"):
        if found := shutil.which(name):
            (bin_dir / name).symlink_to(found)
    path = f"{Path(sys.executable).parent}:{bin_dir}"
    assert shutil.which("redis-server", path=path) is None
    return path


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.skipif(bool(missing_binaries()), reason=f"not installed: {missing_binaries()}")
def test_demo_run_serves_without_redis_server_and_starts_alerting(
    tiny_bundle, tiny_config, tiny_backbone_dir, bentoml_home, tmp_path
) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            tiny_config_dict(tiny_backbone_dir, Path(tiny_config.dataset.path), tmp_path)
        )
    )
    ports = {k: free_port() for k in ("port", "monitor", "redis", "prom", "am", "hook")}
    args = [sys.executable, "-m", "slicewise.cli", "demo-run", "--config", str(cfg)]
    args += ["--bundle", str(tiny_bundle), "--port", str(ports["port"])]
    args += ["--monitor-port", str(ports["monitor"]), "--redis-port", str(ports["redis"])]
    args += ["--prometheus-port", str(ports["prom"]), "--alertmanager-port", str(ports["am"])]
    args += ["--webhook-port", str(ports["hook"]), "--alert-for", "30s"]
    env = {
        **os.environ,
        "PATH": path_without_redis_server(tmp_path),
        "BENTOML_HOME": str(bentoml_home),
    }
    out = tmp_path / "demo.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in out.read_text(), 180, "demo-run to be up")
        text = out.read_text()
        assert f"http://127.0.0.1:{ports['prom']}/alerts" in text, text
        base = f"http://127.0.0.1:{ports['port']}"
        r = httpx.post(base + "/predict", json={"texts": ["not good good good"]}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] in tiny_config.labels
        prom = f"http://127.0.0.1:{ports['prom']}"

        def targets_up():
            got = httpx.get(prom + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return {t["labels"]["job"] for t in got if t["health"] == "up"} == {
                "slicewise-service",
                "slicewise-monitor",
            }

        wait_for(targets_up, 60, "Prometheus scraping the service and the monitor")
        rules = httpx.get(prom + "/api/v1/rules", timeout=5).json()["data"]["groups"]
        fors = {r["name"]: r.get("duration") for g in rules for r in g["rules"]}
        assert fors["SliceDriftDetected"] == 30  # --alert-for, in the demo's copy only
        am = f"http://127.0.0.1:{ports['am']}/api/v2/status"
        assert (
            f"127.0.0.1:{ports['hook']}/alerts"
            in httpx.get(am, timeout=5).json()["config"]["original"]
        )
        assert httpx.get(f"http://127.0.0.1:{ports['hook']}/healthz", timeout=5).status_code == 200
        # its Redis has a generated password, kept in a file only this user can read
        pw_file = tmp_path / ".slicewise" / "redis-password"
        assert pw_file.stat().st_mode & 0o777 == 0o600
        password = pw_file.read_text().strip()
        assert len(password) >= 32
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=ports["redis"]).ping()  # a client without it is refused
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=ports["redis"], password="wrong").ping()
        client = redis.Redis(port=ports["redis"], password=password)
        assert client.xlen("slicewise:predictions") >= 1  # the service logged with it
        assert password not in out.read_text()  # the URL is printed masked
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert not any(password in " ".join(p.cmdline()) for p in tree)  # nor on a command line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # everything it started went with it
    for port in (ports["port"], ports["prom"], ports["am"], ports["hook"]):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
