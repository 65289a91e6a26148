"""Ray's token authentication: the token file, and what a process needs to use it.

Ray 2.60 reads its auth settings from the environment: ``RAY_AUTH_MODE``
(``token`` or ``disabled``) and the token from ``RAY_AUTH_TOKEN`` (the value),
``RAY_AUTH_TOKEN_PATH`` (a file) or ``~/.ray/auth_token``. rayscale always
passes a *path*, never the value, so the token stays out of process listings,
printed environments and logs; the file is created with mode 0600.

gRPC clients (the GCS client) read these settings once per process and cache
the token: a process that talks to clusters with different tokens calls
:func:`activate` before creating a client. HTTP clients (the dashboard, job
submission) take :func:`bearer_headers` per request instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, MutableMapping
from pathlib import Path

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TOKEN_VALUE_ENV = "RAY_AUTH_TOKEN"
TOKEN_FILE_NAME = "auth_token"
AUTH_ENV_VARS = (AUTH_MODE_ENV, TOKEN_PATH_ENV, TOKEN_VALUE_ENV)
#: Kubernetes-delegated token auth (KubeRay's ``enableK8sTokenAuth``): the token is the
#: pod's projected ServiceAccount token, at the path Ray reads it from.
K8S_TOKEN_AUTH_ENV = "RAY_ENABLE_K8S_TOKEN_AUTH"
K8S_TOKEN_FILE = "/var/run/secrets/ray.io/serviceaccount/token"
#: The dashboard header KubeRay's clients send (``Authorization`` stays free for proxies,
#: such as the API server's service proxy); Ray's dashboard reads both.
RAY_AUTH_HEADER = "x-ray-authorization"

DISABLED_WARNING = (
    "token authentication is OFF: anyone who can reach this machine's addresses can "
    "connect a driver or submit a job to this cluster and run code as you"
)


def new_token() -> str:
    """256 random bits, hex: the format Ray's own ``ray get-auth-token --generate`` uses."""
    return secrets.token_hex(32)


def create_token_file(path: Path) -> Path:
    """Write a new token to ``path``, readable by its owner only (0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_token())
    return path


def read_token(path: Path) -> str:
    return path.read_text().strip()


def auth_env(token_file: Path | str | None) -> dict[str, str]:
    """The Ray auth variables for a process: token mode with the file, or disabled."""
    if token_file is None:
        return {AUTH_MODE_ENV: "disabled"}
    return {AUTH_MODE_ENV: "token", TOKEN_PATH_ENV: str(token_file)}


def apply_auth_env(env: MutableMapping[str, str], token_file: Path | str | None) -> None:
    """Set ``env``'s auth variables to exactly these (an inherited token value would win)."""
    for name in AUTH_ENV_VARS:
        env.pop(name, None)
    env.update(auth_env(token_file))


def bearer_headers(token_file: Path | str | None) -> dict[str, str]:
    """HTTP headers for Ray's dashboard and job API; none when auth is off."""
    if token_file is None:
        return {}
    return {"Authorization": f"Bearer {read_token(Path(token_file))}"}


def token_from_env(env: Mapping[str, str]) -> str | None:
    """The token a process with environment ``env`` authenticates with, as Ray finds it:
    Kubernetes' ServiceAccount token file in that mode, else ``RAY_AUTH_TOKEN``, else
    the file ``RAY_AUTH_TOKEN_PATH``, else ``$HOME/.ray/auth_token``; None when auth is
    not in token mode or no token is there."""
    if not is_token_mode(env):
        return None
    if env.get(K8S_TOKEN_AUTH_ENV, "").lower() in ("true", "1"):
        candidates = [Path(K8S_TOKEN_FILE)]
    else:
        value = env.get(TOKEN_VALUE_ENV, "").strip()
        if value:
            return value
        candidates = [Path(p) for p in (env.get(TOKEN_PATH_ENV),) if p]
        if not candidates and env.get("HOME"):
            candidates = [Path(env["HOME"]) / ".ray" / TOKEN_FILE_NAME]
    for path in candidates:
        try:
            token = read_token(path)
        except OSError:
            continue
        if token:
            return token
    return None


def headers_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers for Ray's dashboard from a process's Ray auth variables (KubeRay's
    ``x-ray-authorization: Bearer <token>``); none when auth is off. Read again per
    call: a Kubernetes ServiceAccount token file is renewed while the process runs."""
    token = token_from_env(env)
    return {RAY_AUTH_HEADER: f"Bearer {token}"} if token else {}


def activate(token_file: Path | str | None) -> None:
    """Make this process's Ray clients use ``token_file`` (or no auth) from now on.

    Ray caches the mode (its config) and the token (its loader) per process;
    both are reloaded here, so clients created afterwards use the new settings.
    """
    apply_auth_env(os.environ, token_file)
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def is_token_mode(env: Mapping[str, str]) -> bool:
    return env.get(AUTH_MODE_ENV, "").lower() == "token"
