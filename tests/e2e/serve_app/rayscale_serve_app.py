"""Ray Serve applications for tests/e2e/test_local_serve.py (shipped as the working_dir).

``greeter``: an ingress deployment that calls a second deployment through a
DeploymentHandle; the greeting is the second one's ``user_config``, and both
report their process ids, so a test sees whether a change restarted them.
``busy``: one deployment whose requests take 0.5 s (for autoscaling), reporting
the Ray node that served it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request


@serve.deployment
class Greeter:
    def __init__(self) -> None:
        self.greeting = "hello"

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.greeting = str(config.get("greeting", "hello"))

    def greet(self, who: str) -> dict[str, Any]:
        return {"text": f"{self.greeting} {who}", "greeter_pid": os.getpid()}


@serve.deployment
class Ingress:
    def __init__(self, greeter: DeploymentHandle) -> None:
        self.greeter = greeter

    async def __call__(self, request: Request) -> dict[str, Any]:
        reply: dict[str, Any] = await self.greeter.greet.remote(
            request.query_params.get("who", "world"))
        return {**reply, "ingress_pid": os.getpid()}


@serve.deployment
class Busy:
    async def __call__(self, request: Request) -> dict[str, Any]:
        await asyncio.sleep(0.5)
        return {"node": ray.get_runtime_context().get_node_id()}


greeter = Ingress.bind(Greeter.bind())
busy = Busy.bind()
