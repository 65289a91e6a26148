"""Which GCS store a local cluster gets: `--ha` or gcsFaultToleranceOptions (no Ray started)."""

from __future__ import annotations

from typing import Any

import pytest

from rayscale.local.cluster import ClusterError, gcs_storage
from rayscale.local.provider import GCS_RECONNECT_TIMEOUT_S, ha_env
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


@pytest.mark.parametrize("ft", [{"backend": "redis", "redisAddress": "127.0.0.9:6379"},
                                {"redisAddress": "127.0.0.9:6379"}])
def test_redis_is_refused_in_local_mode_for_now(ft: dict[str, Any]) -> None:
    with pytest.raises(ClusterError, match="Redis is not supported in local mode"):
        gcs_storage(_spec(ft), ha=True)


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
