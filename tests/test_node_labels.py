"""A group's Ray node labels, from the spec to `ray start --labels`, pods and the planner.

KubeRay v1.5+ gives a group top-level ``labels``; v1.7 passes them to ``ray
start --labels`` and merges them into the pod's labels (``mergeLabels``).
rayscale does the same, next to its own two labels, and hands the planner the
labels Ray will give each group's nodes. KubeRay's own sample is the test case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rayscale.api import RayCluster
from rayscale.autoscaler.snapshot import cluster_state, join
from rayscale.local.cluster import head_argv
from rayscale.local.provider import LocalProvider, labels_arg
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord
from rayscale.observe.ray_state import Observation, RayNode
from rayscale.operator.desired import PodSettings, head_pod, worker_pod
from rayscale.providers.base import ProviderNode
from rayscale.raystart import labels_flag, node_labels
from rayscale.spec import parse_cluster_spec

SAMPLE = Path(__file__).parent / "k8s" / "operator" / "kuberay" / "ray-cluster-label-selector.yaml"


def sample_doc() -> dict[str, Any]:
    """The RayCluster of KubeRay's sample (the file also holds a ConfigMap)."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    (cluster,) = [d for d in docs if d.get("kind") == "RayCluster"]
    assert isinstance(cluster, dict)
    return cluster


def sample() -> RayCluster:
    return parse_cluster_spec(sample_doc())


def command(pod: dict[str, Any]) -> list[str]:
    argv: list[str] = pod["spec"]["containers"][0]["command"]
    return argv


def labels_of(argv: list[str]) -> str:
    (flag,) = [a for a in argv if a.startswith("--labels=")]
    return flag


def test_kuberay_label_selector_sample_parses_with_its_group_labels() -> None:
    spec = sample()
    assert spec.head.labels == {"ray.io/region": "us-central2"}
    groups = {g.group_name: g for g in spec.worker_groups}
    assert groups["large-cpu-group"].labels == {"cpu-family": "intel",
                                                "ray.io/market-type": "on-demand"}
    assert groups["accelerator-group"].ray_labels == {
        "ray.io/node-group": "accelerator-group", "ray.io/accelerator-type": "A100",
        "ray.io/market-type": "on-demand", "ray.io/region": "us-central2",
    }
    assert groups["spot-group"].ray_labels == {
        "ray.io/node-group": "spot-group", "cpu-family": "amd", "ray.io/market-type": "spot",
    }


def test_kuberay_sample_pods_carry_the_group_labels_in_ray_start_and_metadata() -> None:
    spec = sample()
    head = head_pod(spec, PodSettings())
    assert labels_of(command(head)) == (
        "--labels=ray.io/region=us-central2,rayscale.io/group=headgroup"
    )
    assert head["metadata"]["labels"]["ray.io/region"] == "us-central2"
    assert head["metadata"]["labels"]["ray.io/node-type"] == "head"
    for group in spec.worker_groups:
        pod = worker_pod(spec, group, PodSettings())
        expected = {**group.labels, "rayscale.io/group": group.group_name,
                    "rayscale.io/node": "$(POD_NAME)"}
        assert labels_of(command(pod)) == "--labels=" + ",".join(
            f"{k}={v}" for k, v in sorted(expected.items()))
        meta = pod["metadata"]["labels"]
        assert {k: meta[k] for k in group.labels} == group.labels
        assert meta["ray.io/group"] == group.group_name
    spot = worker_pod(spec, spec.group("spot-group"), PodSettings())
    assert labels_of(command(spot)) == (
        "--labels=cpu-family=amd,ray.io/market-type=spot,rayscale.io/group=spot-group,"
        "rayscale.io/node=$(POD_NAME)"
    )


def test_pod_labels_merge_template_then_group_then_rayscales_own() -> None:
    doc = sample_doc()
    group = doc["spec"]["workerGroupSpecs"][0]
    group["template"]["metadata"] = {"labels": {"cpu-family": "template", "team": "a",
                                                "ray.io/group": "mine"}}
    group["labels"] = {"cpu-family": "intel"}
    spec = parse_cluster_spec(doc)
    meta = worker_pod(spec, spec.worker_groups[0], PodSettings())["metadata"]["labels"]
    # KubeRay's mergeLabels: the group's labels win over the template's; the
    # operator's own (ray.io/group ...) win over both
    assert meta["cpu-family"] == "intel" and meta["team"] == "a"
    assert meta["ray.io/group"] == "large-cpu-group"
    # the template's labels are pod labels only, never Ray labels
    assert "team" not in labels_of(command(worker_pod(spec, spec.worker_groups[0],
                                                      PodSettings())))


def test_rayscale_labels_win_and_the_flag_is_sorted() -> None:
    merged = node_labels({"b": "1", "a": "2"}, {"rayscale.io/group": "g"})
    assert labels_flag(merged) == "--labels=a=2,b=1,rayscale.io/group=g"
    assert node_labels({"x": "1"}, {"x": "2"}) == {"x": "2"}


def local_record(tmp_path: Path) -> ClusterRecord:
    return ClusterRecord(name="lab", id="abc", spec_file=str(tmp_path / "c.yaml"), slot=30,
                         head_ip="127.30.0.2", gcs_port=6390, dashboard_port=8266,
                         client_port=10002, temp_dir=str(tmp_path / "t"), created=0.0)


def test_local_nodes_start_with_their_group_labels_and_are_found_by_them(
        tmp_path: Path) -> None:
    spec = sample()
    record = local_record(tmp_path)
    provider = LocalProvider(spec, ClusterDir("lab", home=tmp_path))
    node = NodeRecord(id="spot-group-3", index=3, group="spot-group", ip="127.30.1.5",
                      launched_at=0.0)
    argv = provider._argv(record, node)
    flag = labels_arg({"cpu-family": "amd", "ray.io/market-type": "spot"}, "spot-group",
                      "spot-group-3")
    assert flag == ("--labels=cpu-family=amd,ray.io/market-type=spot,"
                    "rayscale.io/group=spot-group,rayscale.io/node=spot-group-3")
    assert flag in argv  # the argument that identifies the node's process
    assert provider._labels_arg(node) == flag
    # a record of a group the spec does not have: only rayscale's own labels
    stray = node.model_copy(update={"group": "gone", "id": "gone-1"})
    assert provider._labels_arg(stray) == (
        "--labels=rayscale.io/group=gone,rayscale.io/node=gone-1")
    head = head_argv(spec, record)
    assert labels_of(head) == "--labels=ray.io/region=us-central2,rayscale.io/group=headgroup"


def ray_node(node_id: str, ip: str, labels: dict[str, str]) -> RayNode:
    return RayNode(node_id, ip, "running", 0.0, {"CPU": 2.0}, {"CPU": 2.0}, labels)


def test_the_planner_gets_ray_labels_of_groups_and_nodes_not_pod_labels() -> None:
    doc = sample_doc()
    doc["spec"]["workerGroupSpecs"][0]["template"]["metadata"] = {"labels": {"team": "a"}}
    spec = parse_cluster_spec(doc)
    running = {"rayscale.io/node": "large-cpu-group-0", "rayscale.io/group": "large-cpu-group",
               "ray.io/node-id": "bb" * 28, "ray.io/node-group": "large-cpu-group",
               "cpu-family": "intel", "ray.io/market-type": "on-demand"}
    observation = Observation(nodes=[
        ray_node("aa" * 28, "127.30.0.2", {"ray.io/node-id": "aa" * 28,
                                           "ray.io/node-group": "headgroup"}),
        ray_node("bb" * 28, "127.30.1.2", running),
        # a key outside the label syntax (none expected from Ray) is one no selector names
        ray_node("cc" * 28, "127.30.9.9", {"bad key!": "x", "zone": "a"}),
    ])
    provider = [
        ProviderNode("large-cpu-group-0", "large-cpu-group", "started", 1.0, "127.30.1.2", 10),
        ProviderNode("spot-group-1", "spot-group", "started", 2.0, "127.30.1.3", 11),
    ]
    state = cluster_state(spec, join(provider, observation, head_ip="127.30.0.2"), set())
    assert state.groups["large-cpu-group"].labels == {
        "ray.io/node-group": "large-cpu-group", "cpu-family": "intel",
        "ray.io/market-type": "on-demand",
    }
    assert state.groups["spot-group"].labels["ray.io/market-type"] == "spot"
    nodes = {n.id: n for n in state.nodes}
    assert nodes["large-cpu-group-0"].labels == running  # what Ray reports, node id included
    assert nodes["aa" * 28].labels == {"ray.io/node-id": "aa" * 28,
                                      "ray.io/node-group": "headgroup"}
    assert nodes["cc" * 28].labels == {"zone": "a"}
    assert nodes["spot-group-1"].status == "pending"
    assert nodes["spot-group-1"].labels is None  # its group's labels
