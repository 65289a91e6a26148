"""Ray token authentication on Kubernetes (``spec.authOptions``), on the real control plane.

KubeRay's own sample (``kuberay/ray-cluster.auth.yaml``, shrunk to fit this
machine) becomes a Ray cluster that answers only with its token: the head is
ready, the sidecar autoscales it, a job API client without the token is
refused and one with it succeeds. The token is in its Secret (owned by the
RayCluster, labelled, collected with it) and nowhere else: not in the
RayCluster, an Event, the operator's log or a pod spec. Bad ``authOptions``
are refused with the field's name and create nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Event, Namespace, Pod, Secret

from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import pod_log
from tests.k8s.operator.conftest import (
    RayCluster,
    auth_headers,
    cluster_token,
    dashboard_url,
    gcs_address,
    manifest,
    pods,
    ray_env,
    ray_node_count,
    run_job,
    running,
    without_shutdown_drain,
)

SAMPLE = Path(__file__).parent / "kuberay" / "ray-cluster.auth.yaml"
NAME = "ray-cluster-with-auth"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def kuberay_auth_sample() -> dict[str, Any]:
    """KubeRay's sample as written, shrunk: 4 CPU / 8 GiB pods would fill the test
    machine's virtual nodes, and a head that takes no tasks makes demand scale workers
    (and no 30 s drain on deletion: conftest.NO_DRAIN)."""
    doc = yaml.safe_load(SAMPLE.read_text())
    spec = doc["spec"]
    head = spec["headGroupSpec"]
    head["rayStartParams"] = {"num-cpus": "0"}
    small = {"cpu": "1", "memory": "2Gi"}
    head["template"]["spec"]["containers"][0]["resources"] = {"limits": small,
                                                               "requests": small}
    worker = spec["workerGroupSpecs"][0]
    worker["maxReplicas"] = 2
    worker["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}
    without_shutdown_drain(spec)
    return dict(doc)


@pytest.fixture(scope="module")
def auth_ns(kube: Client, vnode: VNodeProcess, operator: Any) -> Iterator[str]:
    """One namespace, with the sample applied, for the tests that share its cluster."""
    name = f"t-auth-{uuid.uuid4().hex[:6]}"
    kube.create(Namespace.from_dict({"metadata": {"name": name}}))  # type: ignore[arg-type]
    try:
        kube.create(RayCluster.from_dict(kuberay_auth_sample()),  # type: ignore[arg-type]
                    namespace=name)
        yield name
    finally:
        for obj in kube.list(RayCluster, namespace=name):
            kube.delete(RayCluster, obj["metadata"]["name"], namespace=name)
        wait_for(lambda: not list(kube.list(Pod, namespace=name)), 120,
                 "the sample's pods collected")
        kube.delete(Namespace, name)


@pytest.fixture(scope="module")
def head_ip(kube: Client, auth_ns: str) -> str:
    head = wait_for(lambda: next((p for p in pods(kube, auth_ns, NAME, "head")
                                  if p.status and p.status.phase == "Running"
                                  and p.status.podIP), None), 180, "the head pod")
    assert head.status is not None and head.status.podIP
    return head.status.podIP


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_the_auth_sample_forms_a_cluster_that_answers_only_with_its_token(
    kube: Client, auth_ns: str, head_ip: str
) -> None:
    wait_for(lambda: (kube.get(RayCluster, NAME, namespace=auth_ns).get("status") or {})
             .get("state") == "ready", 240, "the sample ready (head and its worker)")
    token = cluster_token(kube, auth_ns, NAME)
    assert token is not None
    url = dashboard_url(kube, auth_ns, NAME, head_ip)
    nodes = f"{url}/nodes?view=summary"
    wait_for(lambda: _status(nodes, auth_headers(token)) == 200, 120, "the dashboard")
    assert _status(nodes) == 401  # no token
    assert _status(nodes, auth_headers("not-the-token")) == 403
    assert _status(nodes, {"Authorization": f"Bearer {token}"}) == 200

    gcs = gcs_address(kube, auth_ns, NAME, head_ip)
    wait_for(lambda: ray_node_count(gcs, token) == 2, 120, "head and worker in Ray's GCS")
    refused = _gcs_client(gcs, None)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower(), refused.stderr[-2000:]


def _gcs_client(gcs: str, token: str | None) -> subprocess.CompletedProcess[str]:
    code = ("import sys\nfrom ray._raylet import GcsClient\n"
            "print(GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return subprocess.run([sys.executable, "-c", code, gcs], env={**env, **ray_env(token)},
                          capture_output=True, text=True, timeout=120)


def test_jobs_need_the_token_and_demand_scales_the_sample_through_the_sidecar(
    kube: Client, auth_ns: str, head_ip: str
) -> None:
    token = cluster_token(kube, auth_ns, NAME)
    assert token is not None
    url = dashboard_url(kube, auth_ns, NAME, head_ip)
    wait_for(lambda: _status(f"{url}/api/jobs/", auth_headers(token)) == 200, 120,
             "the job API")
    assert _status(f"{url}/api/jobs/") == 401

    # Ray's CLI, as KubeRay's e2e test submits: the token comes from the environment
    ray = str(Path(sys.executable).parent / "ray")
    submit = [ray, "job", "submit", "--address", url, "--no-wait", "--",
              sys.executable, "-c", "print('hello')"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    for wrong in (None, "incorrect-token-12345"):
        out = subprocess.run(submit, env={**env, **ray_env(wrong)}, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode != 0, out.stdout
        said = (out.stdout + out.stderr).lower()
        assert "401" in said or "403" in said or "auth" in said, said[-2000:]
    out = subprocess.run(submit, env={**env, **ray_env(token)}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr

    # demand for two 1-CPU workers at once (a gang: one bundle per node): the sample has
    # one worker, the sidecar adds the other
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], running(kube, auth_ns, NAME, "worker"))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        logs = run_job(kube, auth_ns, NAME, head_ip, """
            from ray.util.placement_group import placement_group
            pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
            ray.get(pg.ready(), timeout=400)
            table = ray.util.placement_group_table(pg)
            print("PLACED", len(set(table["bundles_to_node_id"].values())))
        """, timeout_s=480)
    finally:
        stop.set()
        watcher.join()
    assert "PLACED 2" in logs and peak[0] == 2, (peak, logs[-2000:])
    groups = kube.get(RayCluster, NAME, namespace=auth_ns)["spec"]["workerGroupSpecs"]
    assert groups[0]["replicas"] >= 1


def test_the_token_is_only_in_its_secret(
    kube: Client, auth_ns: str, head_ip: str, operator: Any, vnode: VNodeProcess
) -> None:
    token = cluster_token(kube, auth_ns, NAME)
    assert token is not None and len(base64.b64decode(token)) == 32
    secret = kube.get(Secret, NAME, namespace=auth_ns)
    assert secret.metadata is not None and secret.type == "Opaque"
    assert secret.metadata.labels == {"ray.io/cluster": NAME}
    uid = kube.get(RayCluster, NAME, namespace=auth_ns)["metadata"]["uid"]
    assert [(r.kind, r.name, r.uid, r.controller) for r in
            secret.metadata.ownerReferences or []] == [("RayCluster", NAME, uid, True)]
    assert set(secret.data or {}) == {"auth_token"}

    cluster = json.dumps(kube.get(RayCluster, NAME, namespace=auth_ns).to_dict())
    assert token not in cluster
    events = [json.dumps(e.to_dict(), default=str) for e in kube.list(Event, namespace=auth_ns)]
    assert not [e for e in events if token in e]
    assert token not in operator.log.read_text(errors="replace")
    ray_pods = list(kube.list(Pod, namespace=auth_ns, labels={"ray.io/cluster": NAME}))
    assert len(ray_pods) >= 2
    for pod in ray_pods:
        assert token not in json.dumps(pod.to_dict(), default=str)
        assert pod.spec is not None
        for container in pod.spec.containers:
            env = {e.name: e for e in container.env or []}
            assert env["RAY_AUTH_MODE"].value == "token"
            ref = env["RAY_AUTH_TOKEN"].valueFrom
            assert env["RAY_AUTH_TOKEN"].value is None and ref is not None
            assert ref.secretKeyRef is not None
            assert (ref.secretKeyRef.name, ref.secretKeyRef.key) == (NAME, "auth_token")
    head = pods(kube, auth_ns, NAME, "head")[0]
    assert head.spec is not None
    assert [c.name for c in head.spec.containers] == ["ray-head", "autoscaler"]
    sidecar_log = pod_log(vnode, head, "autoscaler")
    assert "Ray token auth on" in sidecar_log and token not in sidecar_log


def _suspended(name: str, auth: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A cluster that runs no pods: what the operator does with its auth only."""
    doc = manifest(name)
    doc["spec"].update(suspend=True, authOptions=auth, **spec)
    return doc


def _secret(kube: Client, ns: str, name: str) -> Secret | None:
    try:
        return kube.get(Secret, name, namespace=ns)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def test_which_secret_the_operator_makes_and_that_it_goes_with_its_cluster(
    kube: Client, ns: str, operator: Any
) -> None:
    # a Secret the user made under the cluster's name is used as it is, never replaced
    kube.create(Secret.from_dict({"metadata": {"name": "preset"},  # type: ignore[arg-type]
                                  "stringData": {"auth_token": "users-own"}}), namespace=ns)
    for name, auth in [("made", {"mode": "token"}), ("preset", {"mode": "token"}),
                       ("named", {"mode": "token", "secretName": "elsewhere"}),
                       ("k8s", {"mode": "token", "enableK8sTokenAuth": True}),
                       ("off", {"mode": "disabled"})]:
        kube.create(RayCluster.from_dict(_suspended(name, auth)),  # type: ignore[arg-type]
                    namespace=ns)
    made = wait_for(lambda: _secret(kube, ns, "made"), 60, "the generated Secret")
    assert made.metadata is not None and made.metadata.labels == {"ray.io/cluster": "made"}
    wait_for(lambda: all((kube.get(RayCluster, n, namespace=ns).get("status") or {})
                         .get("state") == "suspended"
                         for n in ("preset", "named", "k8s", "off")),
             60, "every cluster reconciled")
    for absent in ("named", "elsewhere", "k8s", "off"):
        assert _secret(kube, ns, absent) is None, absent
    preset = _secret(kube, ns, "preset")
    assert preset is not None and preset.data == {
        "auth_token": base64.b64encode(b"users-own").decode()}
    assert preset.metadata is not None and not preset.metadata.ownerReferences
    kube.delete(RayCluster, "made", namespace=ns)
    wait_for(lambda: _secret(kube, ns, "made") is None, 90,
             "the Secret collected with its RayCluster")


@pytest.mark.parametrize(("auth", "version", "field", "message"), [
    ({"mode": "token"}, "2.40.0", "authOptions.mode",
     "'token' needs Ray 2.52.0 or later, but rayVersion is '2.40.0'"),
    ({"mode": "token", "enableK8sTokenAuth": True, "secretName": "mine"}, "2.60.0",
     "authOptions.enableK8sTokenAuth", "cannot be combined with authOptions.secretName"),
], ids=["old-ray", "k8s-and-secret-name"])
def test_bad_auth_options_are_refused_naming_the_field_and_create_nothing(
    kube: Client, ns: str, operator: Any, auth: dict[str, Any], version: str, field: str,
    message: str,
) -> None:
    doc = manifest("badauth")
    doc["spec"].update(authOptions=auth, rayVersion=version)
    # as KubeRay: the API accepts it (the CRD has no such rule); the operator refuses it
    kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]

    def refusal() -> Event | None:
        return next((e for e in kube.list(Event, namespace=ns)
                     if e.involvedObject.name == "badauth"
                     and e.reason == "InvalidRayClusterSpec"), None)

    event = wait_for(refusal, 60, "the InvalidRayClusterSpec event")
    assert event.type == "Warning"
    assert f"{field}: {message}" in (event.message or "")
    status = wait_for(lambda: kube.get(RayCluster, "badauth", namespace=ns).get("status"),
                      30, "the failed status")
    assert status.get("state") == "failed" and field in status.get("reason", "")
    time.sleep(2)  # a reconcile that would act has had its chance
    assert not list(kube.list(Pod, namespace=ns))
    assert _secret(kube, ns, "badauth") is None
    with contextlib.suppress(ApiError):
        kube.delete(RayCluster, "badauth", namespace=ns)


# --------------------------------------------------- Kubernetes tokens (enableK8sTokenAuth)

K8S_SAMPLE = Path(__file__).parent / "kuberay" / "ray-cluster.kubernetes.auth.yaml"
K8S_NAME = "ray-cluster-with-k8s-auth"
#: What the API server's ServiceAccount admission adds to every pod on a real cluster
#: (the dev cluster runs without it): the in-cluster credentials Ray's GCS and raylets
#: call TokenReview and SubjectAccessReview with.
KUBE_API_ACCESS = {"name": "kube-api-access", "projected": {"sources": [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace",
                                "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
]}}
KUBE_API_MOUNT = {"name": "kube-api-access", "readOnly": True,
                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}


def kuberay_k8s_auth_sample(ns: str) -> list[dict[str, Any]]:
    """KubeRay's sample: its RayCluster shrunk and given the in-cluster credentials, its
    cluster-wide RBAC objects named after the test namespace and bound in it."""
    out = []
    for doc in yaml.safe_load_all(K8S_SAMPLE.read_text()):
        kind = doc["kind"]
        if kind == "RayCluster":
            groups = [doc["spec"]["headGroupSpec"], *doc["spec"]["workerGroupSpecs"]]
            for group in groups:
                pod = group["template"]["spec"]
                cpu = {"cpu": "1", "memory": "1Gi"}
                pod["containers"][0]["resources"] = {"limits": cpu, "requests": cpu}
                pod["volumes"] = [KUBE_API_ACCESS]
                pod["containers"][0]["volumeMounts"] = [KUBE_API_MOUNT]
            doc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 1
            # and rayscale's sidecar, which talks to Ray with the head's account token
            doc["spec"]["enableInTreeAutoscaling"] = True
            without_shutdown_drain(doc["spec"])
        elif kind in ("ClusterRole", "ClusterRoleBinding"):
            doc["metadata"]["name"] = f"{doc['metadata']['name']}-{ns}"
        if kind in ("ClusterRoleBinding", "RoleBinding"):
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{ns}"
            for subject in doc["subjects"]:
                subject["namespace"] = ns
        out.append(doc)
    return out


def _service_account_token(kube: Client, ns: str, account: str) -> str:
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccount

    answer = kube.create(
        ServiceAccount.Token(metadata=ObjectMeta(name=account, namespace=ns),
                             spec=TokenRequestSpec(audiences=[], expirationSeconds=3600)),
        account, namespace=ns)
    assert answer.status is not None
    return answer.status.token


def test_kubernetes_tokens_the_sample_pods_and_ray_checking_them(
    kube: Client, ns: str, operator: Any, vnode: VNodeProcess
) -> None:
    from lightkube import codecs

    docs = kuberay_k8s_auth_sample(ns)
    cluster_wide = []
    try:
        for doc in docs:
            obj = codecs.from_dict(doc)
            scoped = doc["kind"] not in ("ClusterRole", "ClusterRoleBinding")
            if doc["kind"] == "RayCluster":
                kube.create(RayCluster.from_dict(doc), namespace=ns)  # type: ignore[arg-type]
            elif scoped:
                kube.create(obj, namespace=ns)  # type: ignore[call-overload]
            else:
                kube.create(obj)  # type: ignore[call-overload]
                cluster_wide.append(obj)
        head = wait_for(lambda: next((p for p in pods(kube, ns, K8S_NAME, "head")
                                      if p.status and p.status.phase == "Running"
                                      and p.status.podIP), None), 180, "the head pod")
        assert head.spec is not None and head.status is not None
        ray = head.spec.containers[0]
        env = {e.name: e.value for e in ray.env or []}
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_ENABLE_K8S_TOKEN_AUTH"] == "true"
        assert "RAY_AUTH_TOKEN" not in env
        assert _secret(kube, ns, K8S_NAME) is None, "no Secret with Kubernetes tokens"
        token = _service_account_token(kube, ns, K8S_NAME)
        gcs = gcs_address(kube, ns, K8S_NAME, head.status.podIP)
        wait_for(lambda: ray_node_count(gcs, token) == 2, 240,
                 "head and worker in Ray's GCS, asked with a ServiceAccount token")
        url = dashboard_url(kube, ns, K8S_NAME, head.status.podIP)
        nodes = f"{url}/nodes?view=summary"
        assert _status(nodes, auth_headers(token)) == 200
        assert _status(nodes) == 401
        outsider = _service_account_token(kube, ns, "default")  # no ray:write
        assert _status(nodes, auth_headers(outsider)) == 403
        # the sidecar reached the GCS (it logs this once it has observed it) with the
        # projected token of the head's account (the sample's, which may ray:write)
        assert [c.name for c in head.spec.containers] == ["ray-head", "autoscaler"]
        wait_for(lambda: "Ray token auth on" in pod_log(vnode, head, "autoscaler"), 120,
                 "the sidecar observing the GCS")
    finally:
        for obj in cluster_wide:
            with contextlib.suppress(ApiError):
                kube.delete(type(obj), obj.metadata.name)  # type: ignore[union-attr]
