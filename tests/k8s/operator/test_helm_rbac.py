"""The Helm chart (deploy/helm/rayscale) and the autoscaler sidecar's RBAC, on the real API.

Helm itself renders the chart: ``helm`` is built once from the Go module proxy
(``go install helm.sh/helm/v3/cmd/helm@HELM_VERSION``, niced) into
``~/.cache/rayscale/helm/bin`` (``RAYSCALE_HELM_CACHE`` moves it), and reused
while its version matches. Without a Go toolchain these tests skip.

What they prove:

- ``helm lint`` passes (cluster-wide and namespaced values); the chart's CRDs
  (RayCluster, RayJob, RayService, RayCronJob) are the ones in deploy/crds (symlinks helm
  follows); the RBAC rules are exactly the least-privilege set below, with no
  wildcard;
- every rendered object is accepted by the real kube-apiserver (server-side
  apply, dry run);
- with the rendered RBAC installed, SubjectAccessReviews say the operator's
  account can do what it needs and nothing it must not (change or delete
  secrets, namespaces, other ClusterRoles, a RayJob's spec); acting with a token
  of that account, rbac.py creates the sidecar's ServiceAccount and RoleBinding
  (the ``bind`` rule at work) and the API refuses a RoleBinding to
  cluster-admin; what the RayJob controller does (a RayJob's RayCluster and
  submitter Job, owned by it, its status, DeleteSelf) is allowed, as dry runs;
  the sidecar's account can patch its RayCluster and cannot create pods;
- the running operator gives an autoscaling RayCluster its ServiceAccount and
  RoleBinding, owned by it (collected when it is deleted), and runs the head
  pod as that account.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Pod, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding, RoleBinding
from lightkube.types import PatchType

from rayscale.cli.crd_cmd import DEPLOYED_KINDS, file_name
from rayscale.devcluster import DevCluster
from rayscale.operator import rayjob_desired, rbac
from tests.devtools import wait_for
from tests.k8s.operator.conftest import CRDS, ROOT, RayCluster, manifest, pods

BUILD_HELM = ROOT / "scripts" / "build-helm.sh"
#: the pinned version, from the build script (one place for it and its ldflags)
HELM_VERSION = re.search(r'^HELM_VERSION="(v[^"]+)"', BUILD_HELM.read_text(), re.M)[1]  # type: ignore[index]
HELM_BUILD_TIMEOUT_S = 1800
CHART = ROOT / "deploy" / "helm" / "rayscale"
RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")


def _helm_dir() -> Path:
    return Path(os.environ.get("RAYSCALE_HELM_CACHE")
                or Path.home() / ".cache" / "rayscale" / "helm")


def _helm_ok(helm: Path) -> bool:
    if not helm.exists():
        return False
    out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True,
                         timeout=60)
    return out.returncode == 0 and out.stdout.startswith(HELM_VERSION)


def _go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None


if not _helm_ok(_helm_dir() / "bin" / "helm"):
    pytestmark = pytest.mark.timeout(HELM_BUILD_TIMEOUT_S + 600)


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm HELM_VERSION, built once by scripts/build-helm.sh (scripts/test.sh starts it
    before the tests; under a lock, so a build already running is waited for)."""
    binary = _helm_dir() / "bin" / "helm"
    if _helm_ok(binary):
        return binary
    if _go() is None:
        pytest.skip("no helm and no Go toolchain to build it")
    _helm_dir().mkdir(parents=True, exist_ok=True)
    log = _helm_dir() / "build.log"
    with log.open("w") as out:
        done = subprocess.run(["bash", str(BUILD_HELM)], stdout=out, stderr=subprocess.STDOUT,
                              timeout=HELM_BUILD_TIMEOUT_S)
    assert done.returncode == 0, f"building helm failed; see {log}"
    assert _helm_ok(binary)
    return binary


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = _helm_dir() / "home"  # helm's own config/cache/data, away from the user's
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}
    return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def render(helm: Path, release: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for item in sets:
        args += ["--set", item]
    out = _helm(helm, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '') for every rule of a role."""
    out = set()
    for rule in role["rules"]:
        for group in rule.get("apiGroups", []):
            for res in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    for name in rule.get("resourceNames") or [""]:
                        out.add((group, res, verb, name))
    return out


def _rows(group: str, resource: str, verbs: str, name: str = "") -> set[tuple[str, ...]]:
    return {(group, resource, verb, name) for verb in verbs.split()}


HISTORY_ARG = "--history=/var/lib/rayscale/history.sqlite3"
OPERATOR_GRANTS = (
    _rows("ray.io", "rayclusters", "get list watch create delete patch")
    | _rows("ray.io", "rayclusters/status", "get patch update")
    | _rows("ray.io", "rayclusters/finalizers", "update")
    | _rows("", "pods", "get list watch create delete patch")
    | _rows("", "services", "get list watch create patch delete")
    | _rows("", "secrets", "get list watch create")
    | _rows("", "events", "create patch")
    | _rows("", "configmaps", "get list watch")
    | _rows("events.k8s.io", "events", "create patch")
    | _rows("", "serviceaccounts", "get create")
    | _rows("rbac.authorization.k8s.io", "rolebindings", "get create")
    | _rows("rbac.authorization.k8s.io", "clusterroles", "bind", "rayscale-autoscaler")
    # the RayJob controller (rayjob_controller.py); its clusters are in the rows above
    | _rows("ray.io", "rayjobs", "list watch delete")
    | _rows("ray.io", "rayjobs/status", "patch")
    | _rows("ray.io", "rayjobs/finalizers", "update")
    | _rows("batch", "jobs", "list watch create delete")
    # the RayService controller (rayservice_controller.py)
    | _rows("ray.io", "rayservices", "list watch")
    | _rows("ray.io", "rayservices/status", "patch")
    | _rows("ray.io", "rayservices/finalizers", "update")
)
CLUSTER_SCOPE_GRANTS = _rows("apiextensions.k8s.io", "customresourcedefinitions",
                             "get list watch")
AUTOSCALER_GRANTS = (_rows("ray.io", "rayclusters", "get list watch patch update")
                     | _rows("", "pods", "get list watch")
                     | _rows("", "configmaps", "get create patch")
                     | _rows("", "resourcequotas", "list")
                     | _rows("", "events", "list")
                     | _rows("kueue.x-k8s.io", "localqueues", "get"))


# ------------------------------------------------------------------ rendering, no cluster


def test_chart_lints_and_renders_least_privilege_rbac(helm: Path) -> None:
    for sets in ([], ["watchNamespaces={team-a,team-b}", "sharedPodNetwork=true"]):
        args = ["lint", str(CHART), "--strict"] + [x for s in sets for x in ("--set", s)]
        out = _helm(helm, *args)
        assert out.returncode == 0 and "[ERROR]" not in out.stdout, out.stdout + out.stderr

    docs = render(helm, "rayscale", "rayscale-system")
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == sorted([
        "CustomResourceDefinition/rayclusters.ray.io",
        "CustomResourceDefinition/rayjobs.ray.io",
        "CustomResourceDefinition/raycronjobs.ray.io",
        "CustomResourceDefinition/rayservices.ray.io",
        "ClusterRole/rayscale", "ClusterRole/rayscale-cluster",
        "ClusterRole/rayscale-autoscaler",
        "ClusterRoleBinding/rayscale", "ClusterRoleBinding/rayscale-cluster",
        "Deployment/rayscale", "Service/rayscale-metrics", "ServiceAccount/rayscale",
    ])
    # one source of truth: the chart's crds/ files are deploy/crds's, followed through symlinks
    for kind in DEPLOYED_KINDS:
        assert (CHART / "crds" / file_name(kind)).is_symlink()
        want = yaml.safe_load((CRDS / file_name(kind)).read_text())
        assert _one(docs, "CustomResourceDefinition", want["metadata"]["name"]) == want

    assert _grants(_one(docs, "ClusterRole", "rayscale")) == OPERATOR_GRANTS
    assert _grants(_one(docs, "ClusterRole", "rayscale-cluster")) == CLUSTER_SCOPE_GRANTS
    assert _grants(_one(docs, "ClusterRole", "rayscale-autoscaler")) == AUTOSCALER_GRANTS
    for binding in ("rayscale", "rayscale-cluster"):
        crb = _one(docs, "ClusterRoleBinding", binding)
        assert crb["roleRef"]["name"] == binding
        assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "rayscale",
                                    "namespace": "rayscale-system"}]

    deploy = _one(docs, "Deployment", "rayscale")
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rayscale"
    (container,) = pod["containers"]
    assert container["image"] == "rayscale:0.1.0"
    assert container["command"] == ["rayscale"]
    assert container["args"] == ["operator", "--metrics-host=$(POD_IP)", "--metrics-port=8080",
                                 HISTORY_ARG]
    env_names = {e["name"]: e.get("value") for e in container["env"]}
    assert env_names["RAYSCALE_HOME"] == "/var/lib/rayscale"
    assert env_names["RAYSCALE_HISTORY_RETENTION"] == "7d"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == "/var/lib/rayscale"
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAYSCALE_AUTOSCALER_CLUSTER_ROLE"] == rbac.DEFAULT_CLUSTER_ROLE
    svc = _one(docs, "Service", "rayscale-metrics")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]


def test_chart_lets_the_autoscalers_of_listed_namespaces_read_cluster_queues(
        helm: Path) -> None:
    """autoscaler.kueueNamespaces: one read-only ClusterRole on ClusterQueues, bound to
    the service accounts of exactly those namespaces (none by default, above)."""
    docs = render(helm, "rayscale", "rayscale-system", "autoscaler.kueueNamespaces={team-a,team-b}")
    role = _one(docs, "ClusterRole", "rayscale-autoscaler-kueue")
    assert _grants(role) == _rows("kueue.x-k8s.io", "clusterqueues", "get list")
    crb = _one(docs, "ClusterRoleBinding", "rayscale-autoscaler-kueue")
    assert crb["roleRef"]["name"] == "rayscale-autoscaler-kueue"
    assert crb["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
         "name": f"system:serviceaccounts:{ns}"} for ns in ("team-a", "team-b")]


def test_chart_watching_namespaces_binds_only_in_them(helm: Path) -> None:
    docs = render(helm, "ops", "rayscale-system", "watchNamespaces={team-a,team-b}",
                  "nodeSelector.pool=system", "tolerations[0].key=dedicated",
                  "tolerations[0].operator=Exists", "image.tag=dev", "metrics.port=9100")
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"
                and d["metadata"]["name"] == "ops-rayscale"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in bindings} == {"ops-rayscale"}
    assert _grants(_one(docs, "ClusterRole", "ops-rayscale-cluster")) == (
        CLUSTER_SCOPE_GRANTS | _rows("", "namespaces", "list watch"))
    pod = _one(docs, "Deployment", "ops-rayscale")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["operator", "--metrics-host=$(POD_IP)", "--metrics-port=9100",
                                 "--namespace=team-a", "--namespace=team-b", HISTORY_ARG]
    assert container["image"] == "rayscale:dev"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


RAYCRONJOB_GRANTS = (_rows("ray.io", "raycronjobs", "get list watch")
                     | _rows("ray.io", "raycronjobs/status", "get patch")
                     | _rows("ray.io", "raycronjobs/finalizers", "update")
                     | _rows("ray.io", "rayjobs", "list watch create delete"))


def test_chart_raycronjob_gate_turns_the_controller_and_its_rights_on(helm: Path) -> None:
    docs = render(helm, "rayscale", "rayscale-system", "featureGates.RayCronJob=true")
    assert _grants(_one(docs, "ClusterRole", "rayscale")) == OPERATOR_GRANTS | RAYCRONJOB_GRANTS
    (container,) = _one(docs, "Deployment", "rayscale")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["operator", "--metrics-host=$(POD_IP)", "--metrics-port=8080",
                                 "--feature-gates=RayCronJob=true", HISTORY_ARG]


def test_head_pod_account_and_binding_subject_respect_the_users_choice() -> None:
    body = manifest("mine", autoscaling=True)
    body["metadata"].update(namespace="ns1", uid="u-1")
    owner = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "mine", "uid": "u-1"}
    pod: dict[str, Any] = {"spec": {"containers": []}}
    rbac.use_autoscaler_account(pod, "mine")
    assert pod["spec"]["serviceAccountName"] == "mine-autoscaler"
    subject = rbac.role_binding_manifest(body, owner)["subjects"][0]
    assert subject == {"kind": "ServiceAccount", "name": "mine-autoscaler", "namespace": "ns1"}

    body["spec"]["headGroupSpec"]["template"]["spec"]["serviceAccountName"] = "own"
    pod = {"spec": {"serviceAccountName": "own"}}
    rbac.use_autoscaler_account(pod, "mine")
    assert pod["spec"]["serviceAccountName"] == "own"
    assert rbac.role_binding_manifest(body, owner)["subjects"][0]["name"] == "own"


# ------------------------------------------------------------- on the real control plane


def _untyped(client: Client) -> Any:
    """lightkube's overloads do not cover generic resources: call it untyped."""
    return client


def _server_side_dry_run(kube: Client, doc: dict[str, Any], namespace: str | None) -> None:
    _untyped(kube).apply(codecs.from_dict(doc), namespace=namespace,
                         field_manager="rayscale-test", force=True, dry_run=True)


def _token_client(kube: Client, cluster: DevCluster, namespace: str, account: str) -> Client:
    token = kube.create(
        ServiceAccount.Token(metadata=ObjectMeta(name=account, namespace=namespace),
                             spec=TokenRequestSpec(audiences=[], expirationSeconds=600)),
        account, namespace=namespace,
    )
    assert token.status is not None
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()
    config = KubeConfig.from_dict({
        "clusters": [{"name": "dev", "cluster": {"server": cluster.server,
                                                 "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token.status.token}}],
        "contexts": [{"name": account, "context": {"cluster": "dev", "user": account,
                                                   "namespace": namespace}}],
        "current-context": account,
    })
    return Client(config, field_manager="rayscale-test")


def _can(kube: Client, user: str, verb: str, resource: str, *, group: str = "",
         namespace: str | None = None, subresource: str | None = None,
         name: str | None = None) -> bool:
    sa_ns = user.split(":")[2]
    review = kube.create(SubjectAccessReview(spec=SubjectAccessReviewSpec(
        user=user,
        groups=["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}",
                "system:authenticated"],
        resourceAttributes=ResourceAttributes(
            verb=verb, group=group, resource=resource, namespace=namespace,
            subresource=subresource, name=name),
    )))
    assert review.status is not None
    return bool(review.status.allowed)


def _delete_quietly(kube: Client, kind: Any, name: str, namespace: str | None = None) -> None:
    try:
        if namespace is None:
            kube.delete(kind, name)
        else:
            kube.delete(kind, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


@pytest.fixture
def installed_rbac(helm: Path, kube: Client, namespace: str, crd: None
                   ) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """The chart's RBAC objects and ServiceAccount created for real (unique names).

    The release lives in the test namespace; the autoscaler ClusterRole gets a
    unique name too, so nothing collides with another run. Removed afterwards.
    """
    release = f"rs-{uuid.uuid4().hex[:6]}"
    role = f"{release}-autoscaler"
    docs = render(helm, release, namespace, f"autoscaler.clusterRoleName={role}")
    created: list[tuple[Any, str, str | None]] = []
    try:
        for doc in docs:
            if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
                obj = codecs.from_dict(doc)
                ns = namespace if doc["kind"] == "ServiceAccount" else None
                _untyped(kube).create(obj, namespace=ns)
                created.append((type(obj), doc["metadata"]["name"], ns))
        yield release, role, docs
    finally:
        for kind, name, ns in reversed(created):
            _delete_quietly(kube, kind, name, ns)


def test_rendered_chart_is_valid_and_grants_only_what_it_needs(
    kube: Client, dev_cluster: DevCluster, namespace: str,
    installed_rbac: tuple[str, str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    release, role, docs = installed_rbac
    # every rendered object (the CRD, RBAC, ServiceAccount, Deployment, Service) is valid
    for doc in docs:
        cluster_scoped = doc["kind"] in ("CustomResourceDefinition", "ClusterRole",
                                         "ClusterRoleBinding")
        _server_side_dry_run(kube, doc, None if cluster_scoped else namespace)

    operator = f"system:serviceaccount:{namespace}:{release}-rayscale"
    elsewhere = "any-namespace"
    for verb, resource, kw in [
        ("create", "pods", {}),
        ("delete", "pods", {}),
        ("watch", "pods", {}),
        ("create", "services", {}),
        ("create", "secrets", {}),
        ("watch", "secrets", {}),
        ("list", "rayclusters", {"group": "ray.io"}),
        ("watch", "rayclusters", {"group": "ray.io"}),
        ("patch", "rayclusters", {"group": "ray.io"}),
        ("patch", "rayclusters", {"group": "ray.io", "subresource": "status"}),
        ("create", "events", {}),
        ("create", "events", {"group": "events.k8s.io"}),
        ("create", "serviceaccounts", {}),
        ("create", "rolebindings", {"group": "rbac.authorization.k8s.io"}),
        ("bind", "clusterroles", {"group": "rbac.authorization.k8s.io", "name": role}),
        # the RayJob controller
        ("list", "rayjobs", {"group": "ray.io"}),
        ("watch", "rayjobs", {"group": "ray.io"}),
        ("delete", "rayjobs", {"group": "ray.io"}),
        ("patch", "rayjobs", {"group": "ray.io", "subresource": "status"}),
        ("update", "rayjobs", {"group": "ray.io", "subresource": "finalizers"}),
        ("create", "rayclusters", {"group": "ray.io"}),
        ("delete", "rayclusters", {"group": "ray.io"}),
        ("get", "rayclusters", {"group": "ray.io"}),
        ("get", "secrets", {}),
        ("create", "jobs", {"group": "batch"}),
        ("delete", "jobs", {"group": "batch"}),
        ("watch", "jobs", {"group": "batch"}),
        # the RayService controller
        ("watch", "rayservices", {"group": "ray.io"}),
        ("patch", "rayservices", {"group": "ray.io", "subresource": "status"}),
        ("update", "rayservices", {"group": "ray.io", "subresource": "finalizers"}),
        ("patch", "pods", {}),
        ("patch", "services", {}),
        ("delete", "services", {}),
    ]:
        assert _can(kube, operator, verb, resource, namespace=elsewhere, **kw), (verb, resource, kw)
    assert _can(kube, operator, "watch", "customresourcedefinitions",
                group="apiextensions.k8s.io")
    for verb, resource, kw in [
        ("update", "secrets", {"namespace": elsewhere}),
        ("patch", "secrets", {"namespace": elsewhere}),
        ("delete", "secrets", {"namespace": elsewhere}),
        ("delete", "namespaces", {"name": elsewhere}),
        ("create", "namespaces", {}),
        ("update", "pods", {"namespace": elsewhere}),
        ("create", "pods", {"namespace": elsewhere, "subresource": "exec"}),
        ("update", "services", {"namespace": elsewhere}),
        ("update", "rayclusters", {"group": "ray.io", "namespace": elsewhere}),
        ("deletecollection", "rayclusters", {"group": "ray.io", "namespace": elsewhere}),
        # a RayJob's spec is the user's; RayJobs are created only by the RayCronJob
        # controller (its gate is off here), and nothing else of KubeRay's is touched
        ("update", "rayjobs", {"group": "ray.io", "namespace": elsewhere}),
        ("patch", "rayjobs", {"group": "ray.io", "namespace": elsewhere}),
        ("create", "rayjobs", {"group": "ray.io", "namespace": elsewhere}),
        ("update", "rayjobs", {"group": "ray.io", "namespace": elsewhere,
                               "subresource": "status"}),
        ("list", "raycronjobs", {"group": "ray.io", "namespace": elsewhere}),
        # a RayService's spec is its user's
        ("create", "rayservices", {"group": "ray.io", "namespace": elsewhere}),
        ("patch", "rayservices", {"group": "ray.io", "namespace": elsewhere}),
        ("update", "rayservices", {"group": "ray.io", "namespace": elsewhere}),
        ("delete", "rayservices", {"group": "ray.io", "namespace": elsewhere}),
        ("update", "jobs", {"group": "batch", "namespace": elsewhere}),
        ("patch", "jobs", {"group": "batch", "namespace": elsewhere}),
        ("create", "cronjobs", {"group": "batch", "namespace": elsewhere}),
        ("create", "configmaps", {"namespace": elsewhere}),
        ("patch", "configmaps", {"namespace": elsewhere}),
        ("delete", "serviceaccounts", {"namespace": elsewhere}),
        ("create", "serviceaccounts", {"namespace": elsewhere, "subresource": "token"}),
        ("create", "clusterrolebindings", {"group": "rbac.authorization.k8s.io"}),
        ("create", "clusterroles", {"group": "rbac.authorization.k8s.io"}),
        ("escalate", "clusterroles", {"group": "rbac.authorization.k8s.io"}),
        ("bind", "clusterroles", {"group": "rbac.authorization.k8s.io", "name": "cluster-admin",
                                  "namespace": elsewhere}),
        ("create", "nodes", {}),
        ("update", "customresourcedefinitions", {"group": "apiextensions.k8s.io"}),
    ]:
        assert not _can(kube, operator, verb, resource, **kw), (verb, resource, kw)

    # acting as the operator's account: rbac.py gives a RayCluster's sidecar its identity
    # suspended, autoscaling off: an operator running in this session makes no pods and no
    # RBAC for it, so what exists below was made by the calls as the operator's account
    body = manifest("owner", autoscaling=False)
    body["spec"]["suspend"] = True
    cluster = dict(_untyped(kube).create(RayCluster.from_dict(body), namespace=namespace)
                   .to_dict())
    meta = cluster["metadata"]
    owner = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": meta["name"],
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
    as_operator = _token_client(kube, dev_cluster, namespace, f"{release}-rayscale")
    monkeypatch.setenv(rbac.CLUSTER_ROLE_ENV, role)
    made = rbac.ensure_autoscaler_rbac(as_operator, cluster, owner, force=True)
    assert made == ["ServiceAccount", "RoleBinding"]
    assert rbac.ensure_autoscaler_rbac(as_operator, cluster, owner, force=True) == []
    binding = kube.get(RoleBinding, "owner-autoscaler", namespace=namespace)
    assert binding.roleRef.name == role
    assert binding.metadata is not None and binding.metadata.ownerReferences
    assert binding.metadata.ownerReferences[0].uid == meta["uid"]
    _untyped(as_operator).create(Pod.from_dict(_pod(namespace)), namespace=namespace,
                                 dry_run=True)
    as_operator.patch(RayCluster.Status, "owner", {"status": {"state": "suspended"}},
                      namespace=namespace, patch_type=PatchType.MERGE)

    # acting as the operator's account, what the RayJob controller does (dry runs): the
    # RayJob's RayCluster and submitter Job, owned by it with blockOwnerDeletion; watching
    # both by label; its status; deleting it (DeleteSelf). Suspended, so an operator
    # running in this session makes neither.
    job = dict(_untyped(kube).create(RayJob.from_dict(_rayjob(namespace, "probe")),
                                     namespace=namespace).to_dict())
    origin = rayjob_desired.origin_labels("probe")
    _untyped(as_operator).create(
        RayCluster.from_dict(rayjob_desired.ray_cluster(job, "probe-bcdfg")),
        namespace=namespace, dry_run=True)
    assert list(as_operator.list(RayCluster, namespace=namespace, labels=origin)) == []
    _untyped(as_operator).create(Job.from_dict(_submitter(job)), namespace=namespace,
                                 dry_run=True)
    assert list(as_operator.list(Job, namespace=namespace, labels=origin)) == []
    _untyped(as_operator).patch(RayJob.Status, "probe",
                                {"status": {"message": "rbac probe"}}, namespace=namespace,
                                patch_type=PatchType.MERGE, dry_run=True)
    as_operator.delete(RayCluster, "owner", namespace=namespace, dry_run=True)
    _untyped(as_operator).delete(RayJob, "probe", namespace=namespace, dry_run=True)
    refused: list[Callable[[], Any]] = [
        lambda: as_operator.delete(Secret, "any", namespace=namespace, dry_run=True),
        lambda: _untyped(as_operator).create(
            RoleBinding.from_dict(_binding(namespace, "cluster-admin")),
            namespace=namespace, dry_run=True),
        lambda: as_operator.delete(Namespace, namespace, dry_run=True),
        lambda: list(as_operator.list(ClusterRoleBinding)),
        # a RayJob's spec is its user's
        lambda: _untyped(as_operator).patch(RayJob, "probe", {"spec": {"suspend": False}},
                                            namespace=namespace, patch_type=PatchType.MERGE,
                                            dry_run=True),
        lambda: _untyped(as_operator).create(RayJob.from_dict(_rayjob(namespace, "other")),
                                             namespace=namespace, dry_run=True),
    ]
    for attempt in refused:
        with pytest.raises(ApiError) as err:
            attempt()
        assert err.value.status.code == 403, err.value.status

    # the sidecar's account: its RayCluster and pods, in its namespace only
    sidecar = f"system:serviceaccount:{namespace}:owner-autoscaler"
    assert _can(kube, sidecar, "patch", "rayclusters", group="ray.io", namespace=namespace)
    assert _can(kube, sidecar, "update", "rayclusters", group="ray.io", namespace=namespace)
    assert _can(kube, sidecar, "watch", "pods", namespace=namespace)
    as_sidecar = _token_client(kube, dev_cluster, namespace, "owner-autoscaler")
    assert list(as_sidecar.list(Pod, namespace=namespace)) == []
    as_sidecar.patch(RayCluster, "owner", {"metadata": {"annotations": {"t": "1"}}},
                     namespace=namespace, patch_type=PatchType.MERGE, dry_run=True)
    with pytest.raises(ApiError) as err:
        _untyped(as_sidecar).create(Pod.from_dict(_pod(namespace)), namespace=namespace,
                                    dry_run=True)
    assert err.value.status.code == 403
    for verb, resource, kw in [
        ("create", "pods", {"namespace": namespace}),
        ("delete", "pods", {"namespace": namespace}),
        ("get", "secrets", {"namespace": namespace}),
        ("delete", "rayclusters", {"group": "ray.io", "namespace": namespace}),
        ("patch", "rayclusters", {"group": "ray.io", "namespace": elsewhere}),
        ("list", "pods", {"namespace": elsewhere}),
    ]:
        assert not _can(kube, sidecar, verb, resource, **kw), (verb, resource, kw)
    kube.delete(RayCluster, "owner", namespace=namespace)
    kube.delete(RayJob, "probe", namespace=namespace)


def _pod(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}


def _rayjob(namespace: str, name: str) -> dict[str, Any]:
    """A RayJob nothing runs: suspended (a suspended RayJob gets no cluster)."""
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"entrypoint": "python -c 'print(1)'", "suspend": True,
                     "shutdownAfterJobFinishes": True,
                     "rayClusterSpec": manifest("unused")["spec"]}}


def _submitter(job: dict[str, Any]) -> dict[str, Any]:
    """A submitter Job as the RayJob controller makes one: labelled, owned by the RayJob."""
    meta = job["metadata"]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": rayjob_desired.origin_labels(meta["name"]),
                         "ownerReferences": [rayjob_desired.owner_reference(job)]},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}}


def _binding(namespace: str, role: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"to-{role}", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]}


def test_operator_gives_an_autoscaling_cluster_its_service_account(
    kube: Client, ns: str, operator: Any
) -> None:
    obj = _untyped(kube).create(
        RayCluster.from_dict(manifest("scaled", replicas=0, autoscaling=True)), namespace=ns)
    uid = obj["metadata"]["uid"]

    def owned(kind: Any) -> Any:
        try:
            found = kube.get(kind, "scaled-autoscaler", namespace=ns)
        except ApiError:
            return None
        assert found.metadata is not None
        refs = found.metadata.ownerReferences or []
        assert [(r.kind, r.name, r.uid, r.controller) for r in refs] == \
            [("RayCluster", "scaled", uid, True)]
        return found

    account = wait_for(lambda: owned(ServiceAccount), 60, "the sidecar's ServiceAccount")
    assert account is not None
    binding = wait_for(lambda: owned(RoleBinding), 60, "the sidecar's RoleBinding")
    assert binding.roleRef.kind == "ClusterRole"
    assert binding.roleRef.name == rbac.DEFAULT_CLUSTER_ROLE
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == \
        [("ServiceAccount", "scaled-autoscaler", ns)]
    head = wait_for(lambda: pods(kube, ns, "scaled", "head"), 60, "the head pod")[0]
    assert head.spec is not None and head.spec.serviceAccountName == "scaled-autoscaler"
    assert "autoscaler" in [c.name for c in head.spec.containers]

    kube.delete(RayCluster, "scaled", namespace=ns)

    def collected() -> bool:
        for kind in (ServiceAccount, RoleBinding):
            try:
                _untyped(kube).get(kind, "scaled-autoscaler", namespace=ns)
                return False
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
        return True

    wait_for(collected, 90, "the ServiceAccount and RoleBinding collected with the RayCluster")
