"""The test Redis is real, guarded by its password, on loopback, and gone after."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rayscale import procs
from tests.redisfix import redis_server


def test_redis_server_is_real_password_guarded_and_stopped(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        redis.cli("SET", "k", "v")
        assert redis.dbsize() == 1
        assert redis.keys("k*") == ["k"]
        with pytest.raises(subprocess.CalledProcessError):
            redis.cli("-e", "GET", "k", password="wrong")
        pid = redis.pid
    assert not procs.is_alive(pid)
