"""Probing and cleaning a cluster's Redis, against a real redis-server (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayscale.local.redisstore import RedisStore, StoreError, count_keys, delete_keys, probe
from rayscale.ports import free_port
from tests.redisfix import redis_server


def test_probe_counts_and_delete_only_the_namespace(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(host=server.host, port=server.port, namespace="ns*1",
                           password=server.password)
        assert probe(store) == 0
        server.cli("HSET", "RAYns*1@NODE", "a", "1")
        server.cli("HSET", "RAYns*1@JOB", "a", "1")
        server.cli("HSET", "RAYns*12@JOB", "a", "1")  # another namespace: kept
        server.cli("HSET", "RAYnsX1@JOB", "a", "1")   # '*' is not a wildcard here
        assert probe(store) == 2 and count_keys(store) == 2
        assert delete_keys(store) == 2
        assert sorted(server.keys()) == ["RAYns*12@JOB", "RAYnsX1@JOB"]


def test_probe_names_the_field_at_fault(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        wrong = RedisStore(host=server.host, port=server.port, namespace="n", password="nope")
        with pytest.raises(StoreError, match=r"^spec\.gcsFaultToleranceOptions\.redisPassword: "
                           "the Redis at 127.0.0.9:.* refused it") as exc:
            probe(wrong)
        assert "nope" not in str(exc.value)
        none = RedisStore(host=server.host, port=server.port, namespace="n")
        with pytest.raises(StoreError, match=r"redisPassword: the Redis .* refused it"):
            probe(none)
    gone = RedisStore(host="127.0.0.9", port=free_port(), namespace="n", password="x")
    with pytest.raises(StoreError, match=r"^spec\.gcsFaultToleranceOptions\.redisAddress: "
                       "cannot reach the Redis at 127.0.0.9:"):
        probe(gone, timeout_s=1.0)
