"""A small Ray Serve application for examples/rayservice-local.yaml (no model download).

The seeds' Serve example runs a translation model behind two replicas; this
stand-in translates word by word from a small dictionary, so it runs
anywhere: an ingress deployment parses the request and calls ``Translator``
through a DeploymentHandle. The target language is ``Translator``'s
``user_config``: changing it in the config reconfigures the running replicas
in place.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

WORDS = {
    "fr": {"hello": "bonjour", "world": "monde", "cluster": "grappe", "fast": "rapide"},
    "de": {"hello": "hallo", "world": "welt", "cluster": "cluster", "fast": "schnell"},
}


@serve.deployment
class Translator:
    def __init__(self) -> None:
        self.language = "fr"

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.language = str(config.get("language", "fr"))

    async def translate(self, text: str) -> str:
        await asyncio.sleep(0.2)  # the work a model would do
        words = WORDS.get(self.language, {})
        return " ".join(words.get(w, w) for w in text.lower().split())


@serve.deployment
class Api:
    def __init__(self, translator: DeploymentHandle) -> None:
        self.translator = translator

    async def __call__(self, request: Request) -> dict[str, str]:
        text = request.query_params.get("text", "hello world")
        return {"text": text, "translation": await self.translator.translate.remote(text)}


app = Api.bind(Translator.bind())
