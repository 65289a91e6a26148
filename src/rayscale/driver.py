"""Connect a driver script to a cluster started by `rayscale up`.

`up` prints ``RAY_ADDRESS`` and ``RAYSCALE_NODE_IP``; with those exported,
``rayscale.driver.connect()`` is ``ray.init`` with the right loopback address
(Ray would otherwise pick this machine's outward address for the driver).

In a Ray job's driver (or any process Ray starts on a node) ``RAYSCALE_NODE_IP``
is that node's address, set by local mode on every node: the driver attaches
to the raylet of the node it runs on. A plain ``ray.init()`` there would attach
to the head's raylet (all nodes of a local cluster share one host, and Ray
prefers the head among the raylets it finds), so the driver would not survive
the head's death.
"""

from __future__ import annotations

import os
from typing import Any


def connect(**kwargs: Any) -> Any:
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if not address:
        raise RuntimeError("RAY_ADDRESS is not set: export what `rayscale up` printed")
    node_ip = os.environ.get("RAYSCALE_NODE_IP") or address.rsplit(":", 1)[0]
    return ray.init(address=address, _node_ip_address=node_ip, **kwargs)
