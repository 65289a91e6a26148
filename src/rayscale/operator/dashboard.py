"""Where the operator reaches a RayCluster's dashboard, and with which token.

The RayJob and RayService controllers call a cluster's dashboard (Ray's job API,
Serve's REST API). Both reach it the same way: through the head Service's name,
or, where pods share this machine's network (the dev cluster), at the head
pod's IP, where the dashboard binds. A cluster with ``authOptions.mode: token``
is called with its token, read from its Secret for each call and dropped: it is
never cached, logged, or written into a status or an Event.
"""

from __future__ import annotations

import base64
from typing import Any

from lightkube import Client
from lightkube.resources.core_v1 import Secret

from rayscale.operator import auth
from rayscale.operator.rayjob_desired import dashboard_port, dashboard_url
from rayscale.spec import SpecError, parse_cluster_spec

Obj = dict[str, Any]


def address(cluster: Obj, shared_network: bool) -> str:
    """The dashboard's URL as this process reaches it (see the module)."""
    if shared_network:
        head_ip = ((cluster.get("status") or {}).get("head") or {}).get("podIP")
        if head_ip:
            return f"http://{head_ip}:{dashboard_port(cluster)}"
    return f"http://{dashboard_url(cluster)}"


def auth_headers(client: Client, cluster: Obj) -> dict[str, str]:
    """The bearer header of a token cluster, read from its Secret now (not kept)."""
    try:
        spec = parse_cluster_spec({k: v for k, v in cluster.items() if k != "status"})
    except SpecError:
        return {}
    secret = auth.secret_name(spec)
    if secret is None:
        return {}
    got = client.get(Secret, secret, namespace=spec.namespace)
    data = (got.data or {}).get(auth.TOKEN_KEY)
    if not data:
        return {}
    return {"Authorization": f"Bearer {base64.b64decode(data).decode()}"}
