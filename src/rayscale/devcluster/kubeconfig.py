"""Kubeconfig files for the dev cluster's identities (certificates embedded)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from rayscale.devcluster.certs import Pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(pki: Pki, server: str, who: str, cluster_name: str) -> dict[str, object]:
    """A kubeconfig for client identity ``who`` (a key of ``certs.CLIENTS``)."""
    context = f"{who}@{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster_name,
            "cluster": {
                "server": server,
                "certificate-authority-data": _b64(pki.ca_cert),
            },
        }],
        "users": [{
            "name": f"{who}@{cluster_name}",
            "user": {
                "client-certificate-data": _b64(pki.client_cert(who)),
                "client-key-data": _b64(pki.client_key(who)),
            },
        }],
        "contexts": [{
            "name": context,
            "context": {"cluster": cluster_name, "user": f"{who}@{cluster_name}",
                        "namespace": "default"},
        }],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path, pki: Pki, server: str, who: str, cluster_name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(pki, server, who, cluster_name),
                                   sort_keys=False))
    return path
