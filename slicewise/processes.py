"""Start and stop `bentoml serve` as a child process (used by `make run`, tests, benches)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from slicewise.core.errors import SlicewiseError
from slicewise.core.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


def spawn_cli(
    args: list[str], log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m slicewise.cli <args>` in its own session (stop it with `os.killpg`), output
    appended to `log_file`, environment = this process's plus `env`.
    """
    log = open(log_file, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "slicewise.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def spawn_monitor(
    bundle: Path,
    redis_url: str,
    port: int,
    log_file: Path,
    *,
    interval: float = 30.0,
    window_size: int | None = None,
    min_rows: int | None = None,
    report_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`slicewise monitor` on `bundle`, serving /metrics on `port` (see `spawn_cli`). The Redis
    URL travels in the environment (`REDIS_URL`), so its password is not on a command line.
    """
    args = ["monitor", "--bundle", str(bundle)]
    args += ["--interval", str(interval), "--port", str(port)]
    args += ["--window-size", str(window_size)] if window_size else []
    args += ["--min-rows", str(min_rows)] if min_rows else []
    args += ["--report-dir", str(report_dir)] if report_dir else []
    return spawn_cli(args, log_file, {**(env or {}), "REDIS_URL": redis_url})


class ServerError(SlicewiseError, RuntimeError):
    """The service did not become ready."""


class BentoServer:
    """`bentoml serve service.service:Slicewise` on 127.0.0.1 with the given environment."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The server's command line."""
        script = Path(sys.executable).with_name("bentoml")
        # `python -m bentoml` where the script is elsewhere (a `pip install --target` on the GPU box)
        bentoml = [str(script)] if script.exists() else [sys.executable, "-m", "bentoml"]
        serve = ["serve", "service.service:Slicewise", "--host", "127.0.0.1"]
        return [*bentoml, *serve, "--port", str(self.port)]

    def start(self, timeout: float = 120.0, wait_for: str = "/readyz") -> BentoServer:
        """Start the server and wait until `wait_for` (`/readyz`, or `/livez`) answers 200."""
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"bentoml serve exited with code {self.proc.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            try:
                if httpx.get(self.url + wait_for, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise ServerError(f"bentoml serve was not ready within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server and its workers."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> BentoServer:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
