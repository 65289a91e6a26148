"""Probing and cleaning a cluster's Redis, against a real redis-server (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayscale.local.cluster import down
from rayscale.local.redisstore import RedisStore, StoreError, count_keys, delete_keys, probe
from rayscale.local.store import ClusterDir, ClusterRecord
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


def _recorded_cluster(home: Path, address: str, password: str) -> ClusterDir:
    """A stopped local cluster's record whose GCS was in the Redis at ``address``."""
    cluster = ClusterDir("gone", home)
    cluster.create()
    cluster.spec_copy.write_text(yaml.safe_dump({
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "gone"},
        "spec": {"gcsFaultToleranceOptions": {"redisAddress": address,
                                              "redisPassword": {"value": password}},
                 "headGroupSpec": {"rayStartParams": {},
                                   "template": {"spec": {"containers": [{"name": "h"}]}}}}}))
    cluster.save(ClusterRecord(name="gone", id="0123456789ab", spec_file="f", slot=10,
                               head_ip="127.10.0.2", gcs_port=1, dashboard_port=2,
                               client_port=3, temp_dir=str(home / "tmp"), created=0.0,
                               gcs_storage="redis", redis_address=address,
                               redis_namespace="0123456789ab"))
    return cluster


def test_down_deletes_the_keys_and_warns_when_the_redis_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYSCALE_HOME", str(tmp_path / "home"))
    with redis_server(tmp_path / "redis") as server:
        cluster = _recorded_cluster(tmp_path / "home", server.address, server.password)
        server.cli("HSET", "RAY0123456789ab@NODE", "a", "1")
        said: list[str] = []
        assert down("gone", report=said.append) == []
        assert said == [f"deleted 1 GCS key(s) from the Redis at {server.address}, "
                        "namespace '0123456789ab'"]
        assert server.dbsize() == 0 and cluster.load().redis_namespace is None
    gone = _recorded_cluster(tmp_path / "home", f"127.0.0.9:{free_port()}", "s3cr3t-gone")
    said = []
    assert down("gone", report=said.append) == []
    assert len(said) == 1 and said[0].startswith("warning: could not delete the GCS keys")
    assert "RAY0123456789ab@*" in said[0] and "s3cr3t-gone" not in said[0]
    assert gone.load().redis_namespace == "0123456789ab"  # a later down tries again
