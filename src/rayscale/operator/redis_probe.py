"""Is a RayCluster's Redis (GCS fault tolerance) reachable with its password?

Without this, a wrong password or an unreachable Redis shows only as a head pod
whose GCS exits and restarts, again and again. The operator asks Redis itself
(``AUTH`` + ``PING`` with redis-py, a 2 s timeout, no retry) with the address and
credentials the head pod would get:

- ``gcsFaultToleranceOptions``: ``redisAddress`` (the first of a comma list;
  ``redis://``/``rediss://`` URLs), ``redisUsername``/``redisPassword`` (a
  value, or a ``secretKeyRef`` read through the API server);
- the older form: the head's ``RAY_REDIS_ADDRESS``/``REDIS_PASSWORD`` env, or a
  literal ``rayStartParams.redis-password``.

Only answers that say something are verdicts: Redis refused the credentials
(``RedisAuthenticationFailed``), or the address resolved and nothing answered
(``RedisUnreachable``). A name the operator cannot resolve (a Service name seen
from outside the cluster), a Secret it cannot read, a reference it does not
follow (``configMapKeyRef``, ``$VAR``) give no verdict: the head is created as
usual. A password never enters a message: messages name the address and where
the password comes from, and Redis's own text is cut off at the first line
and stripped of the password, should a server ever echo it.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlparse

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from rayscale.api import RayCluster
from rayscale.api.gcs_ft import (
    RAY_REDIS_ADDRESS,
    REDIS_PASSWORD,
    REDIS_USERNAME,
    head_container_manifest,
)
from rayscale.operator import gcs_ft

TIMEOUT_S = 2.0
Reason = Literal["RedisAuthenticationFailed", "RedisUnreachable"]
AUTH_FAILED: Final = "RedisAuthenticationFailed"
UNREACHABLE: Final = "RedisUnreachable"

#: reads key ``key`` of Secret ``name`` (decoded), None when it cannot
SecretReader = Callable[[str, str], str | None]


@dataclass(frozen=True)
class Target:
    """Where the head's Redis is and how it logs in; ``password`` stays in memory."""

    address: str  # as written, for messages
    field: str  # where the address is written
    host: str
    port: int
    ssl: bool
    username: str | None
    password: str | None
    password_from: str  # where the password comes from, for messages

    def __repr__(self) -> str:  # never the password, whatever prints a Target
        return f"Target({self.address!r}, from {self.field})"


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    message: str


def _env(container: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for var in container.get("env") or []:
        if isinstance(var, Mapping) and var.get("name") == name:
            return var
    return None


def _credential(value: str | None, value_from: Mapping[str, Any] | None,
                read: SecretReader) -> tuple[str | None, str, bool]:
    """(the value, where it comes from, whether it could be resolved)."""
    if value_from:
        ref = value_from.get("secretKeyRef") or {}
        name, key = ref.get("name"), ref.get("key")
        if not name or not key:
            return None, "an unsupported valueFrom", False
        found = read(str(name), str(key))
        return found, f"Secret {name} key {key}", found is not None
    if value is not None and "$" in value:  # a shell/kubelet reference: not followed
        return None, "a variable reference", False
    return value, "its value", True


def target(cluster: RayCluster, read: SecretReader) -> Target | None:
    """The Redis the head pod would use, or None when it cannot be told."""
    if not gcs_ft.redis_backed(cluster):
        return None
    options = cluster.spec.gcs_fault_tolerance_options
    username: str | None = None
    user_ok = True
    if options is not None:
        address, field = options.redis_address or "", "gcsFaultToleranceOptions.redisAddress"
        password: str | None = None
        origin, ok = "no password", True
        if options.redis_password is not None:
            cred = options.redis_password
            password, origin, ok = _credential(cred.value, cred.value_from, read)
            origin = f"gcsFaultToleranceOptions.redisPassword ({origin})"
        if options.redis_username is not None:
            cred = options.redis_username
            username, _, user_ok = _credential(cred.value, cred.value_from, read)
    else:
        container = head_container_manifest(cluster.spec)
        var = _env(container, RAY_REDIS_ADDRESS)
        if var is None or "value" not in var:
            return None
        address, field = str(var["value"]), f"the head's {RAY_REDIS_ADDRESS} env"
        pw = _env(container, REDIS_PASSWORD)
        literal = cluster.head.ray_start_params.get("redis-password")
        if pw is not None:
            password, origin, ok = _credential(pw.get("value"), pw.get("valueFrom"), read)
            origin = f"the head's {REDIS_PASSWORD} env ({origin})"
        elif literal is not None:
            password, origin, ok = _credential(literal, None, read)
            origin = "rayStartParams.redis-password"
        else:
            password, origin, ok = None, "no password", True
        user = _env(container, REDIS_USERNAME)
        if user is not None:
            username, _, user_ok = _credential(user.get("value"), user.get("valueFrom"), read)
    if not ok or not user_ok:
        return None
    first = address.split(",")[0].strip()
    parsed = urlparse(first if "://" in first else f"redis://{first}")
    try:
        port = parsed.port or 6379
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return Target(address=address, field=field, host=parsed.hostname, port=port,
                  ssl=parsed.scheme == "rediss", username=username or parsed.username,
                  password=password if password else parsed.password,
                  password_from=origin)


def _clean(text: str, secret: str | None) -> str:
    line = (text.splitlines() or [""])[0][:200]
    return line.replace(secret, "(hidden)") if secret else line


def probe(where: Target, timeout_s: float = TIMEOUT_S) -> Verdict | None:
    """AUTH + PING; None when Redis answers, or when there is no verdict to give."""
    try:
        socket.getaddrinfo(where.host, where.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # a name only the pods resolve: the head will tell
    client = redis.Redis(
        host=where.host, port=where.port, username=where.username, password=where.password,
        ssl=where.ssl, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    at = f"Redis at {where.address} ({where.field})"
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        return Verdict(AUTH_FAILED, f"{at} refused the credentials from {where.password_from}: "
                                    f"{_clean(str(exc), where.password)}")
    except redis.exceptions.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return Verdict(AUTH_FAILED, f"{at} refused the credentials from "
                                        f"{where.password_from}: "
                                        f"{_clean(str(exc), where.password)}")
        return None  # it answered: reachable
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return Verdict(UNREACHABLE, f"{at} does not answer the operator: "
                                    f"{_clean(str(exc), where.password)}")
    finally:
        client.close()
    return None


def secret_reader(get_secret: Callable[[str], Mapping[str, str] | None]) -> SecretReader:
    """A :data:`SecretReader` from a function returning a Secret's ``data`` (base64)."""

    def read(name: str, key: str) -> str | None:
        data = get_secret(name)
        if data is None or key not in data:
            return None
        try:
            return base64.b64decode(data[key]).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    return read
