"""The vnode writes the files of secret, configMap, downwardAPI and projected volumes
(a ServiceAccount token the API server accepts, bound to the pod), and gives each
pod's HOME the file that keeps Ray from probing cloud metadata servers."""

from __future__ import annotations

import json
from typing import Any

from lightkube import ApiError, Client
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret, ServiceAccount

from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import PY, pod_body, pod_log, wait_phase

SHOW = r"""
import json, os, sys, time
out = {}
for root in sys.argv[1:]:
    for here, _, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            out[path] = [open(path).read(), oct(os.stat(path).st_mode & 0o777)]
home = os.environ["HOME"]
out["bootstrap"] = open(os.path.join(home, "ray_bootstrap_config.yaml")).read()
print(json.dumps(out), flush=True)
time.sleep(3600)
"""
SECRET_DIR = "/var/run/secrets/rayscale.io/creds"
CONFIG_DIR = "/var/run/secrets/rayscale.io/conf"
TOKEN_DIR = "/var/run/secrets/ray.io/serviceaccount"  # where KubeRay mounts Ray's token


def _volumes() -> dict[str, Any]:
    # the dev cluster's API server runs without ServiceAccount admission, which would
    # name the default account: a pod with a token volume names it itself
    return {"serviceAccountName": "default", "volumes": [
        {"name": "creds", "secret": {"secretName": "creds", "items": [
            {"key": "password", "path": "sub/pw", "mode": 0o400}]}},
        {"name": "conf", "configMap": {"name": "conf", "defaultMode": 0o640}},
        {"name": "ray-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "conf", "items": [{"key": "a", "path": "from-cm"}]}},
            {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
            {"downwardAPI": {"items": [
                {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
    ]}


def test_file_volumes_and_a_bound_service_account_token(
    kube: Client, vnode: VNodeProcess, namespace: str
) -> None:
    wait_for(lambda: _exists(kube, ServiceAccount, "default", namespace), 60,
             "the namespace's default ServiceAccount")
    kube.create(ConfigMap.from_dict({"metadata": {"name": "conf"},  # type: ignore[arg-type]
                                     "data": {"a": "1"}}), namespace=namespace)
    mounts = [{"name": "creds", "mountPath": SECRET_DIR},
              {"name": "conf", "mountPath": CONFIG_DIR},
              {"name": "ray-token", "mountPath": TOKEN_DIR, "readOnly": True}]
    kube.create(pod_body("files", namespace, [PY, "-c", SHOW, SECRET_DIR, CONFIG_DIR, TOKEN_DIR],
                         extra_spec=_volumes(), container={"volumeMounts": mounts}))

    def waiting() -> str | None:  # the Secret does not exist yet: the pod waits for it
        pod = kube.get(Pod, "files", namespace=namespace)
        statuses = (pod.status.containerStatuses if pod.status else None) or []
        state = statuses[0].state if statuses else None
        if state is not None and state.waiting is not None and state.waiting.message:
            return f"{state.waiting.reason}: {state.waiting.message}"
        return None

    assert wait_for(waiting, 30, "the pod waiting for its volume") == \
        'ContainerCreating: volume: secret "creds" not found'
    kube.create(Secret.from_dict({"metadata": {"name": "creds"},  # type: ignore[arg-type]
                                  "stringData": {"user": "alice", "password": "pw1"}}),
                namespace=namespace)
    pod = wait_phase(kube, "files", namespace, {"Running"}, timeout_s=60)
    seen = json.loads(wait_for(lambda: pod_log(vnode, pod).strip(), 30, "the files"))

    assert seen[f"{SECRET_DIR}/sub/pw"] == ["pw1", "0o400"]
    assert seen[f"{CONFIG_DIR}/a"] == ["1", "0o640"]
    assert seen[f"{TOKEN_DIR}/from-cm"] == ["1", "0o644"]
    assert seen[f"{TOKEN_DIR}/user"] == ["alice", "0o644"]
    assert seen[f"{TOKEN_DIR}/namespace"] == [namespace, "0o644"]
    assert "provider:\n  type: kuberay" in seen["bootstrap"]

    token = seen[f"{TOKEN_DIR}/token"][0]
    review = kube.create(TokenReview(spec=TokenReviewSpec(token=token)))
    assert review.status is not None and review.status.authenticated, review.status
    assert review.status.user is not None
    assert review.status.user.username == f"system:serviceaccount:{namespace}:default"
    extra = review.status.user.extra or {}
    assert extra.get("authentication.kubernetes.io/pod-name") == ["files"]

    kube.delete(Pod, "files", namespace=namespace, grace_period=1)
    wait_for(lambda: not _exists(kube, Pod, "files", namespace), 30, "the pod gone")

    def revoked() -> bool:  # the API server's pod cache may lag the delete a little
        review = kube.create(TokenReview(spec=TokenReviewSpec(token=token)))
        return review.status is not None and not review.status.authenticated

    wait_for(revoked, 30, "the token bound to the pod revoked with it")


def _exists(kube: Client, kind: Any, name: str, namespace: str) -> bool:
    try:
        kube.get(kind, name, namespace=namespace)
        return True
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
