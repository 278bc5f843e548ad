"""Prometheus, Alertmanager and the retrain webhook as local child processes, wired to a running
service and monitor: used by `slicewise demo-run`, the scenario test and bench/bench_scenario.py.

Each run writes its own configs into a work folder: Prometheus with the project's rules
(`monitoring/prometheus/rules.yml`) scraping the service and the monitor, Alertmanager with the
project's routing (`monitoring/alertmanager/alertmanager.yml`) pointed at the webhook, and a
fresh bearer token. Shorter `for:` durations (`alert_for`) and waits are applied to those copies
only; the shipped files keep theirs (promtool tests them as shipped).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from slicewise.core.errors import SlicewiseError
from slicewise.core.redis_server import free_port
from slicewise.processes import spawn_cli

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
INSTALL_LINE = "sudo apt-get install prometheus prometheus-alertmanager"


class AlertingError(SlicewiseError, RuntimeError):
    """Prometheus or Alertmanager is missing, or a process of the stack did not start."""


def alertmanager_binary() -> str | None:
    """The Alertmanager executable (Debian names it `prometheus-alertmanager`), or None."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def missing_binaries() -> list[str]:
    """Which of prometheus / alertmanager are not installed."""
    missing = [] if shutil.which("prometheus") else ["prometheus"]
    return missing + ([] if alertmanager_binary() else ["alertmanager"])


def rules_copy(dest: Path, alert_for: str | None = None) -> Path:
    """Write the project's rules to `dest`; with `alert_for` (e.g. `0s`, `30s`) every rule's
    `for:` becomes that duration in the copy.
    """
    text = (MONITORING / "prometheus" / "rules.yml").read_text()
    if alert_for is not None:
        if not re.fullmatch(r"\d+[smh]", alert_for):
            raise ValueError(f"alert_for must look like 30s, 2m or 1h, not {alert_for!r}")
        text = re.sub(r"(?m)^(\s+for: )\d+[smh]$", rf"\g<1>{alert_for}", text)
    dest.write_text(text)
    return dest


@dataclass
class AlertingStack:
    """Prometheus + Alertmanager + `slicewise webhook --run-retrains` on 127.0.0.1.

    Args:
        work: folder for configs, data and logs.
        service: `host:port` of the service's /metrics; monitor: the monitor's.
        redis_url: the Redis the webhook queues in and the retrains read.
        config: project YAML for the retrains (None: the demo's).
        production: the production bundle folder, for retrains while Redis names no version.
        report_dir: where the retrains write their run reports (None: `work`/reports).
        alert_for: `for:` of every rule in Prometheus' copy (None: as shipped).
        interval: scrape and evaluation interval; group_wait / group_interval: Alertmanager's.
        env: extra environment for the webhook (and so for the retrains it starts).
    """

    work: Path
    service: str
    monitor: str
    redis_url: str
    config: Path | None = None
    production: Path | None = None
    report_dir: Path | None = None
    alert_for: str | None = None
    interval: str = "15s"
    group_wait: str | None = None
    group_interval: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def prometheus_url(self) -> str:
        """Prometheus' base URL."""
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        """Alertmanager's base URL."""
        return f"http://127.0.0.1:{self.ports['alertmanager']}"

    def _port(self, name: str, default: int | None) -> int:
        return self.ports.setdefault(name, default or free_port())

    def write_configs(self) -> None:
        """Prometheus, Alertmanager and token files in `work` (ports decided here)."""
        w = self.work = self.work.resolve()  # Prometheus reads rule_files relative to its config
        w.mkdir(parents=True, exist_ok=True)
        am_port, hook_port = self._port("alertmanager", None), self._port("webhook", None)
        self._port("prometheus", None)
        rules = rules_copy(w / "rules.yml", self.alert_for)
        prom = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(rules)],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {"job_name": "slicewise-service", "static_configs": [{"targets": [self.service]}]},
                {"job_name": "slicewise-monitor", "static_configs": [{"targets": [self.monitor]}]},
            ],
        }
        (w / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
        token = w / "webhook-token"
        token.write_text(secrets.token_hex(24))
        token.chmod(0o600)
        am = yaml.safe_load((MONITORING / "alertmanager" / "alertmanager.yml").read_text())
        for route in [am["route"], *am["route"].get("routes", [])]:
            if self.group_wait:
                route["group_wait"] = self.group_wait
            if self.group_interval:
                route["group_interval"] = self.group_interval
        for receiver in am["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = f"http://127.0.0.1:{hook_port}/alerts"
                hook["http_config"]["authorization"]["credentials_file"] = str(token)
        (w / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self, timeout: float = 60.0) -> AlertingStack:
        """Write the configs, start the three processes, wait until each answers.

        Raises:
            AlertingError: a binary is missing, or a process exited or did not get ready.
        """
        if missing := missing_binaries():
            raise AlertingError(f"{', '.join(missing)} not installed: {INSTALL_LINE}")
        self.write_configs()
        w, p = self.work, self.ports
        self._spawn(
            "prometheus",
            [
                "prometheus",
                f"--config.file={w / 'prometheus.yml'}",
                f"--storage.tsdb.path={w / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{p['prometheus']}",
            ],
        )
        self._spawn(
            "alertmanager",
            [
                str(alertmanager_binary()),
                f"--config.file={w / 'alertmanager.yml'}",
                f"--storage.path={w / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{p['alertmanager']}",
                "--cluster.listen-address=",
            ],
        )
        webhook = ["webhook", "--run-retrains"]  # REDIS_URL in the environment, not in `ps`
        webhook += ["--port", str(p["webhook"])]
        webhook += ["--config", str(self.config.resolve())] if self.config else []
        webhook += ["--production", str(self.production.resolve())] if self.production else []
        webhook += ["--report-dir", str((self.report_dir or w / "reports").resolve())]
        token = (w / "webhook-token").read_text()
        env = {**self.env, "SLICEWISE_WEBHOOK_TOKEN": token, "REDIS_URL": self.redis_url}
        self.procs["webhook"] = spawn_cli(webhook, w / "webhook.log", env)
        checks = {
            "prometheus": self.prometheus_url + "/-/ready",
            "alertmanager": self.alertmanager_url + "/-/ready",
            "webhook": f"http://127.0.0.1:{p['webhook']}/healthz",
        }
        deadline = time.monotonic() + timeout
        while checks:
            for name, url in list(checks.items()):
                if self.procs[name].poll() is not None:
                    self.stop()
                    raise AlertingError(f"{name} exited; see {w / (name + '.log')}")
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        del checks[name]
                except httpx.HTTPError:
                    pass
            if checks and time.monotonic() > deadline:
                self.stop()
                raise AlertingError(f"{sorted(checks)} not ready in {timeout:.0f}s; logs in {w}")
            time.sleep(0.3)
        return self

    def firing(self, alertname: str) -> set[str]:
        """Slices for which Prometheus has `alertname` firing now."""
        r = httpx.get(
            self.prometheus_url + "/api/v1/query",
            params={"query": f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'},
            timeout=10,
        ).json()
        return {x["metric"].get("slice", "") for x in r["data"]["result"]}

    def stop(self) -> None:
        """Stop every process this stack started."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> AlertingStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
