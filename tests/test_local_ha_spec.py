"""Which GCS store a local cluster gets: `--ha` or gcsFaultToleranceOptions (no Ray started)."""

from __future__ import annotations

from typing import Any

import pytest

from rayscale.local.cluster import ClusterError, gcs_storage
from rayscale.local.provider import GCS_RECONNECT_TIMEOUT_S, ha_env
from rayscale.local.redisstore import StoreError, redis_store
from rayscale.local.store import ClusterRecord
from rayscale.spec import parse_cluster_spec


def _spec(ft: dict[str, Any] | None = None) -> Any:
    doc: dict[str, Any] = {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
        "spec": {"headGroupSpec": {"rayStartParams": {},
                                   "template": {"spec": {"containers": [{"name": "h"}]}}}},
    }
    if ft is not None:
        doc["spec"]["gcsFaultToleranceOptions"] = ft
    return parse_cluster_spec(doc)


def test_in_memory_by_default_embedded_with_the_flag_or_the_field() -> None:
    assert gcs_storage(_spec()) is None
    assert gcs_storage(_spec(), ha=True) == "rocksdb"
    assert gcs_storage(_spec({"backend": "rocksdb"})) == "rocksdb"


def test_redis_backend_from_the_options() -> None:
    ft = {"redisAddress": "127.0.0.9:6380", "redisPassword": {"value": "pw"},
          "redisUsername": {"value": "u"}}
    assert gcs_storage(_spec(ft)) == "redis"
    store = redis_store(_spec(ft), "abc123")
    assert store is not None
    assert (store.host, store.port, store.ssl, store.namespace) == ("127.0.0.9", 6380, False,
                                                                   "abc123")
    assert store.head_env() == {"RAY_REDIS_ADDRESS": "127.0.0.9:6380",
                                "RAY_external_storage_namespace": "abc123"}
    assert store.start_params() == {"redis-password": "pw", "redis-username": "u"}
    assert "pw" not in repr(store)
    named = redis_store(_spec({**ft, "externalStorageNamespace": "mine"}), "abc123")
    assert named is not None and named.namespace == "mine" and named.key_pattern == "RAYmine@*"
    tls = redis_store(_spec({"redisAddress": "rediss://r.example:7000"}), "n")
    assert tls is not None and tls.ssl and tls.address == "rediss://r.example:7000"


def test_redis_with_ha_flag_or_bad_fields_is_refused() -> None:
    with pytest.raises(ClusterError, match="--ha"):
        gcs_storage(_spec({"redisAddress": "127.0.0.9:6379"}), ha=True)
    with pytest.raises(ClusterError, match=r"gcsFaultToleranceOptions\.redisAddress"):
        gcs_storage(_spec({"backend": "redis"}))
    with pytest.raises(ClusterError, match=r"redisAddress: expected host:port"):
        gcs_storage(_spec({"redisAddress": "127.0.0.9"}))
    secret = {"valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}}
    with pytest.raises(ClusterError, match=r"redisPassword\.valueFrom: local mode has no"):
        gcs_storage(_spec({"redisAddress": "127.0.0.9:6379", "redisPassword": secret}))
    with pytest.raises(StoreError, match="must not contain '@'"):
        redis_store(_spec({"redisAddress": "h:1", "externalStorageNamespace": "a@b"}), "n")


def test_redis_from_the_annotation_form() -> None:
    doc = _spec().to_manifest()
    doc["metadata"]["annotations"] = {"ray.io/ft-enabled": "true",
                                      "ray.io/external-storage-namespace": "ns1"}
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "RAY_REDIS_ADDRESS", "value": "redis://127.0.0.9:6379"},
        {"name": "REDIS_PASSWORD", "value": "pw"}]
    doc["spec"]["headGroupSpec"]["rayStartParams"] = {"redis-password": "$REDIS_PASSWORD"}
    spec = parse_cluster_spec(doc)
    assert gcs_storage(spec) == "redis"
    store = redis_store(spec, "default")
    assert store is not None and store.address == "127.0.0.9:6379" and store.namespace == "ns1"
    assert store.start_params() == {"redis-password": "pw"}
    del doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    with pytest.raises(ClusterError, match="RAY_REDIS_ADDRESS"):
        gcs_storage(parse_cluster_spec(doc))


def _record(**extra: Any) -> ClusterRecord:
    return ClusterRecord(name="c", id="m", spec_file="f", slot=10, head_ip="127.10.0.2",
                         gcs_port=1, dashboard_port=2, client_port=3, temp_dir="/t",
                         created=0.0, **extra)


def test_workers_wait_for_the_gcs_only_with_ha_and_a_restarted_head_gets_a_fresh_temp_dir() -> None:
    assert ha_env(_record()) == {}
    ha = _record(gcs_storage="rocksdb")
    assert ha.ha and ha_env(ha) == {
        "RAY_gcs_rpc_server_reconnect_timeout_s": str(GCS_RECONNECT_TIMEOUT_S)}
    assert ha.head_temp_dir() == "/t/head"
    assert _record(gcs_storage="rocksdb", head_restarts=2).head_temp_dir() == "/t/head2"
