"""Kueue's release manifests, rewritten for a control plane without kube-proxy.

The release's webhook configuration and CRD conversion patches point at a
``service:`` (``webhook-service`` in Kueue's namespace); the dev cluster has no
kube-proxy, so the API server could not dial it. Here every ``clientConfig``
becomes ``url: https://127.0.0.1:PORT/<path>`` with the dev CA as ``caBundle``
(the serving certificate is issued by that CA for 127.0.0.1).

Only the webhooks of Kueue's own kinds and of the integrations we enable are
kept. The release registers webhooks for Pods, Deployments, StatefulSets and
every other framework, all ``failurePolicy: Fail`` and, in the raw manifests,
without the namespace selector Kueue's kustomization adds: applied as they
are, a stopped Kueue would block every Pod creation in the cluster.

Also the Kueue ``Configuration`` file (``config.kueue.x-k8s.io/v1beta2``).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

#: the integrations rayscale runs Kueue with (its Configuration's integrations.frameworks)
FRAMEWORKS = ("ray.io/rayjob", "ray.io/raycluster")
#: libyaml's loader where PyYAML has it: the Workload CRD alone is 19,000 lines
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: the webhooks kept: Kueue's own API group, and the resources of FRAMEWORKS
KEPT_RESOURCES = {("kueue.x-k8s.io", "*"), ("ray.io", "rayjobs"), ("ray.io", "rayclusters")}
MUTATING = "MutatingWebhookConfiguration"
VALIDATING = "ValidatingWebhookConfiguration"
#: names the applied configurations get (the release's are generic:
#: ``mutating-webhook-configuration``), so that ``down`` deletes only these
WEBHOOK_CONFIG_NAMES = {MUTATING: "rayscale-kueue-mutating",
                        VALIDATING: "rayscale-kueue-validating"}


def _client_config(url: str, ca_pem: bytes) -> dict[str, str]:
    return {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}


def _kept(webhook: dict[str, Any]) -> bool:
    for rule in webhook.get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                if (group, "*") in KEPT_RESOURCES or (group, resource) in KEPT_RESOURCES:
                    return True
    return False


def webhook_configurations(config_dir: Path, port: int, ca_pem: bytes
                           ) -> list[dict[str, Any]]:
    """The release's Mutating/ValidatingWebhookConfiguration, filtered (see module doc),
    renamed, and pointed at ``https://127.0.0.1:port``."""
    docs = yaml.load_all((config_dir / "webhook" / "manifests.yaml").read_text(), _LOADER)
    out = []
    for doc in docs:
        if not doc or doc.get("kind") not in WEBHOOK_CONFIG_NAMES:
            continue
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": WEBHOOK_CONFIG_NAMES[doc["kind"]],
                           "labels": {"app.kubernetes.io/managed-by": "rayscale"}}
        hooks = []
        for hook in doc.get("webhooks") or []:
            if not _kept(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = _client_config(f"https://127.0.0.1:{port}{path}", ca_pem)
            hooks.append(hook)
        doc["webhooks"] = hooks
        out.append(doc)
    return out


def _conversion_patched(config_dir: Path) -> set[str]:
    """The CRDs the release's kustomization gives a conversion webhook (its ``patches``
    list names ``patches/webhook_in_<plural>.yaml`` files; commented ones are off)."""
    kustomization = yaml.load((config_dir / "crd" / "kustomization.yaml").read_text(), _LOADER)
    names = set()
    for patch in kustomization.get("patches") or []:
        path = config_dir / "crd" / patch["path"]
        doc = yaml.load(path.read_text(), _LOADER)
        if (doc.get("spec") or {}).get("conversion", {}).get("strategy") == "Webhook":
            names.add(doc["metadata"]["name"])
    return names


def crds(config_dir: Path, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """The release's CRDs; those Kueue converts between versions (v1beta1 <-> v1beta2)
    get a conversion webhook at ``https://127.0.0.1:port/convert``."""
    converted = _conversion_patched(config_dir)
    out = []
    for path in sorted((config_dir / "crd" / "bases").glob("*.yaml")):
        doc = yaml.load(path.read_text(), _LOADER)
        if doc["metadata"]["name"] in converted:
            doc["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": _client_config(f"https://127.0.0.1:{port}/convert", ca_pem),
                    "conversionReviewVersions": ["v1"],
                },
            }
        out.append(doc)
    return out


def configuration(namespace: str, webhook_port: int, cert_dir: Path, health_port: int,
                  metrics_port: int, frameworks: Iterable[str] = FRAMEWORKS) -> dict[str, Any]:
    """Kueue's Configuration: everything on 127.0.0.1, no leader election, certificates
    from ``cert_dir`` (internal cert management off: its certificates name a Service,
    not 127.0.0.1), only jobs with a ``kueue.x-k8s.io/queue-name`` label managed.

    The visibility API server (feature gate VisibilityOnDemand, on by default) is off:
    it would be an aggregated API server on another port, needing an APIService.
    Elastic jobs (ElasticJobsViaWorkloadSlices, alpha, off by default) are on: with
    them an autoscaling RayCluster annotated ``kueue.x-k8s.io/elastic-job: "true"``
    grows by new workload slices that Kueue admits, and shrinks in place."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": namespace,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(frameworks)},
        "featureGates": {"VisibilityOnDemand": False, "ElasticJobsViaWorkloadSlices": True},
    }


__all__ = ["FRAMEWORKS", "WEBHOOK_CONFIG_NAMES", "configuration", "crds",
           "webhook_configurations"]
