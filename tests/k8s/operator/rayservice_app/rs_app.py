"""The Serve application of the RayService tests: two deployments, shipped in a ConfigMap.

``Front`` (the ingress) asks ``Greeter`` (a deployment handle) for a greeting
and answers JSON saying which RayCluster served it (``RAY_CLUSTER_NAME``, which
the operator gives every Ray container): the tests see traffic move from one
cluster to the next. ``Greeter``'s greeting is its ``user_config``, changed in
place by a new ``serveConfigV2``.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from starlette.requests import Request


@serve.deployment
class Greeter:
    def __init__(self) -> None:
        self.greeting = "hello"

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.greeting = str(config.get("greeting", "hello"))

    def __call__(self, name: str) -> str:
        return f"{self.greeting} {name}"


@serve.deployment
class Front:
    def __init__(self, greeter: Any) -> None:
        self.greeter = greeter

    async def __call__(self, request: Request) -> dict[str, str]:
        name = request.query_params.get("name", "world")
        text = await self.greeter.remote(name)
        return {"text": text, "cluster": os.environ.get("RAY_CLUSTER_NAME", "")}


app = Front.bind(Greeter.bind())
