"""Token authentication on Kubernetes (``authOptions``): the pods, the Secret and the
sidecar as KubeRay v1.7 builds them, and the sidecar's dashboard headers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale import rayauth
from rayscale.api import RayCluster
from rayscale.operator import auth
from rayscale.operator.desired import PodSettings, head_pod, worker_pod
from rayscale.operator.handlers import SidecarSettings, _add_autoscaler_sidecar
from rayscale.spec import parse_cluster_spec

EXAMPLE = Path(__file__).parent.parent / "examples" / "seeds-autoscaler.yaml"
SETTINGS = PodSettings(shared_network=True)
OWNER = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "raycluster-autoscaler",
         "uid": "u-1", "controller": True, "blockOwnerDeletion": True}


def cluster(auth_options: dict[str, Any] | None, **spec: Any) -> RayCluster:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["namespace"] = "ns1"
    if auth_options is None:
        doc["spec"].pop("authOptions", None)
    else:
        doc["spec"]["authOptions"] = auth_options
    doc["spec"].update(spec)
    return parse_cluster_spec(doc)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pods_of(spec: RayCluster) -> list[dict[str, Any]]:
    return [head_pod(spec, SETTINGS), worker_pod(spec, spec.worker_groups[0], SETTINGS)]


TOKEN_REF = {"secretKeyRef": {"name": "raycluster-autoscaler", "key": "auth_token"}}


@pytest.mark.parametrize("path", sorted(EXAMPLE.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_turn_token_auth_on(path: Path) -> None:
    # the ray.io object of the file (a RayService example has its app's ConfigMap too)
    doc = next(d for d in yaml.safe_load_all(path.read_text())
               if d["apiVersion"].startswith("ray.io/"))
    if doc["kind"] == "RayService":  # its cluster's spec
        doc = {"apiVersion": doc["apiVersion"], "kind": "RayCluster",
               "metadata": {"name": doc["metadata"]["name"]},
               "spec": doc["spec"]["rayClusterConfig"]}
    if doc["kind"] == "RayJob":  # the cluster it brings along
        doc = {"apiVersion": doc["apiVersion"], "kind": "RayCluster",
               "metadata": {"name": doc["metadata"]["name"]},
               "spec": doc["spec"]["rayClusterSpec"]}
    spec = parse_cluster_spec(doc)
    assert spec.spec.token_auth and auth.generated_secret_name(spec) == spec.name


def test_token_mode_pods_read_the_token_from_the_secret() -> None:
    spec = cluster({"mode": "token"})
    for pod in pods_of(spec):
        env = env_of(pod["spec"]["containers"][0])
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"] == TOKEN_REF  # a reference, never the value
        assert "RAY_ENABLE_K8S_TOKEN_AUTH" not in env
        assert env["RAY_CLUSTER_NAME"] == {
            "fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}}
        assert env["RAY_CLUSTER_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert not [v for v in pod["spec"].get("volumes", []) if v["name"] == "ray-token"]


def test_secret_name_is_the_users_secret() -> None:
    spec = cluster({"mode": "token", "secretName": "team-token"})
    env = env_of(head_pod(spec, SETTINGS)["spec"]["containers"][0])
    assert env["RAY_AUTH_TOKEN"] == {"secretKeyRef": {"name": "team-token", "key": "auth_token"}}
    assert auth.secret_name(spec) == "team-token"
    assert auth.generated_secret_name(spec) is None


@pytest.mark.parametrize("options", [None, {}, {"mode": "disabled"}])
def test_without_token_mode_ray_runs_with_auth_disabled(options: dict[str, Any] | None) -> None:
    spec = cluster(options)
    assert auth.generated_secret_name(spec) is None and auth.secret_name(spec) is None
    for pod in pods_of(spec):
        env = env_of(pod["spec"]["containers"][0])
        assert env["RAY_AUTH_MODE"] == "disabled"
        assert "RAY_AUTH_TOKEN" not in env


def test_k8s_token_auth_mounts_the_service_account_token() -> None:
    spec = cluster({"mode": "token", "enableK8sTokenAuth": True})
    assert auth.generated_secret_name(spec) is None
    for pod in pods_of(spec):
        ray = pod["spec"]["containers"][0]
        env = env_of(ray)
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_ENABLE_K8S_TOKEN_AUTH"] == "true"
        assert "RAY_AUTH_TOKEN" not in env
        assert {"name": "ray-token", "mountPath": "/var/run/secrets/ray.io/serviceaccount",
                "readOnly": True} in ray["volumeMounts"]
        assert {"name": "ray-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}]}} in pod["spec"]["volumes"]
        # a token volume needs an account; without ServiceAccount admission nobody names it
        auth.name_service_account(pod["spec"], spec)
        assert pod["spec"]["serviceAccountName"] == "default"
    named = {"serviceAccountName": "mine"}
    auth.name_service_account(named, spec)
    assert named == {"serviceAccountName": "mine"}
    plain: dict[str, Any] = {}
    auth.name_service_account(plain, cluster({"mode": "token"}))
    assert plain == {}


def test_what_the_template_sets_wins_and_wait_gcs_ready_gets_auth_too() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["authOptions"] = {"mode": "token", "enableK8sTokenAuth": True}
    template = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    template["containers"][0]["env"] = [{"name": "RAY_ENABLE_K8S_TOKEN_AUTH", "value": "false"}]
    template["initContainers"] = [{"name": "wait-gcs-ready", "image": "x", "command": ["true"]},
                                  {"name": "other", "image": "x", "command": ["true"]}]
    template["volumes"] = [{"name": "ray-token", "emptyDir": {}}]
    spec = parse_cluster_spec(doc)
    pod = worker_pod(spec, spec.worker_groups[0], SETTINGS)["spec"]
    assert env_of(pod["containers"][0])["RAY_ENABLE_K8S_TOKEN_AUTH"] == "false"
    assert [v for v in pod["volumes"] if v["name"] == "ray-token"] == [
        {"name": "ray-token", "emptyDir": {}}]
    wait, other = pod["initContainers"]
    assert env_of(wait) == {"RAY_AUTH_MODE": "token", "RAY_ENABLE_K8S_TOKEN_AUTH": "true"}
    assert wait["volumeMounts"][0]["name"] == "ray-token"
    assert "env" not in other


def test_the_sidecar_authenticates_like_the_ray_container() -> None:
    for options, expected in [
        ({"mode": "token"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN_REF}),
        ({"mode": "token", "enableK8sTokenAuth": True},
         {"RAY_AUTH_MODE": "token", "RAY_ENABLE_K8S_TOKEN_AUTH": "true"}),
        (None, {"RAY_AUTH_MODE": "disabled"}),
    ]:
        spec = cluster(options)
        pod = head_pod(spec, SETTINGS)
        _add_autoscaler_sidecar(pod, spec, SidecarSettings(), 6379)
        sidecar = pod["spec"]["containers"][-1]
        assert sidecar["name"] == "autoscaler"
        env = env_of(sidecar)
        assert {k: v for k, v in env.items() if k.startswith("RAY_")} == expected
        mounts = [m["name"] for m in sidecar.get("volumeMounts", [])]
        assert mounts == (["ray-token"] if "RAY_ENABLE_K8S_TOKEN_AUTH" in expected else [])


def test_the_generated_secret() -> None:
    spec = cluster({"mode": "token"})
    token = auth.new_token()
    assert len(token) == 44 and len(base64.b64decode(token)) == 32
    assert auth.new_token() != token
    secret = auth.secret_manifest(spec, OWNER, token)
    assert secret["metadata"] == {"name": "raycluster-autoscaler", "namespace": "ns1",
                                  "labels": {"ray.io/cluster": "raycluster-autoscaler"},
                                  "ownerReferences": [OWNER]}
    assert secret["stringData"] == {"auth_token": token} and secret["type"] == "Opaque"


def test_check_name_is_kuberays() -> None:
    assert auth.check_name("short") == "short"
    long = "a" * 20 + "b" * 43
    assert auth.check_name(long) == long[-50:]
    assert auth.check_name("x" * 13 + "-" + "y" * 49) == "r" + "y" * 49


# ----------------------------------------------------------- rayauth: the sidecar's side


def test_headers_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rayauth.headers_from_env({}) == {}
    assert rayauth.headers_from_env({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "t"}) == {}
    assert rayauth.headers_from_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t0k"}) == {
        "x-ray-authorization": "Bearer t0k"}
    file = tmp_path / "tok"
    file.write_text("from-file\n")
    assert rayauth.headers_from_env({"RAY_AUTH_MODE": "TOKEN",
                                     "RAY_AUTH_TOKEN_PATH": str(file)}) == {
        "x-ray-authorization": "Bearer from-file"}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home")
    assert rayauth.headers_from_env({"RAY_AUTH_MODE": "token", "HOME": str(tmp_path)}) == {
        "x-ray-authorization": "Bearer home"}
    assert rayauth.headers_from_env({"RAY_AUTH_MODE": "token",
                                     "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}) == {}
    sa = tmp_path / "sa-token"
    sa.write_text("sa")
    monkeypatch.setattr(rayauth, "K8S_TOKEN_FILE", str(sa))
    k8s = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_K8S_TOKEN_AUTH": "true",
           "RAY_AUTH_TOKEN": "ignored"}
    assert rayauth.headers_from_env(k8s) == {"x-ray-authorization": "Bearer sa"}
    sa.write_text("renewed")  # read again per call
    assert rayauth.headers_from_env(k8s) == {"x-ray-authorization": "Bearer renewed"}


def test_memory_probe_sends_the_headers_per_request() -> None:
    from rayscale.observe.memory import DashboardMemoryProbe

    seen: list[dict[str, str]] = []
    calls = iter(["a", "b"])
    probe = DashboardMemoryProbe("http://127.0.0.9:1", headers=lambda: {"x": next(calls)})

    def fake_open(request: Any, timeout: float) -> Any:
        seen.append(dict(request.header_items()))
        raise OSError("not really")

    import rayscale.observe.memory as memory

    original = memory._OPENER.open
    memory._OPENER.open = fake_open  # type: ignore[method-assign]
    try:
        for _ in range(2):
            with pytest.raises(OSError):
                probe._get("/nodes?view=summary")
    finally:
        memory._OPENER.open = original  # type: ignore[method-assign]
    assert seen == [{"X": "a"}, {"X": "b"}]
    fixed = DashboardMemoryProbe("http://127.0.0.9:1", headers={"x-ray-authorization": "B"})
    assert fixed.headers == {"x-ray-authorization": "B"}
