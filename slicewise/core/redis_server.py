"""Start a real local `redis-server` process (DESIGN §7: no Python imitation).

Used by the service when `REDIS_URL` is unset, by `make run`, and by the tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis

from slicewise.core.errors import SlicewiseError


class RedisServerError(SlicewiseError, RuntimeError):
    """redis-server is not installed or did not start."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """A `redis-server` child process on 127.0.0.1, without persistence by default.

    `stop()` and `start()` may be called repeatedly (the same port is reused), which lets
    tests and benchmarks take Redis away and bring it back. With a `password` the server
    requires it (`--requirepass`) and `url` carries it.
    """

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, password: str | None = None
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisServerError(
                "redis-server is not installed; install the Debian package `redis-server` "
                "or set REDIS_URL to a running Redis"
            )
        self.exe = exe
        self.port = port or free_port()
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="slicewise-redis-"))
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server (with the password, when it has one)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def url_without_password(self) -> str:
        """`url` with the password masked, for logs."""
        return self.url.replace(quote(self.password, safe=""), "***") if self.password else self.url

    def server_args(self) -> list[str]:
        """Command-line arguments of the server process. The password goes into a config file
        readable only by this user (its path comes first), not onto the command line.
        """
        conf: list[str] = []
        if self.password:
            path = self.data_dir / "auth.conf"
            path.touch(mode=0o600)
            escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
            path.write_text(f'requirepass "{escaped}"\n')
            conf = [str(path)]
        args = [
            *conf,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            "--protected-mode",
            "no",
        ]
        return args

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(
            [self.exe, *self.server_args()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisServerError(f"redis-server exited with code {self.proc.returncode}")
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        """Stop the server (no-op when it is not running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
