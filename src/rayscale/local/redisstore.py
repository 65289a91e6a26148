"""A local cluster's GCS in an external Redis: where it is, probing it, deleting its keys.

KubeRay's two forms name the Redis (:mod:`rayscale.api.gcs_ft`):
``spec.gcsFaultToleranceOptions.redisAddress`` (+ ``redisUsername``,
``redisPassword``, ``externalStorageNamespace``), or the annotation
``ray.io/ft-enabled: "true"`` with ``RAY_REDIS_ADDRESS`` (and ``REDIS_PASSWORD``)
in the head container's env and the annotation
``ray.io/external-storage-namespace``.

The storage namespace defaults to the cluster's id (a fresh one per ``up``),
so two clusters never share keys. Ray's GCS keeps its tables in hashes named
``RAY<namespace>@<table>``, which is what ``down`` deletes (as Ray's
``cleanup_redis_storage``, which KubeRay's cleanup job runs).

Local mode has no Secret store: a credential's ``valueFrom`` is refused.
The password is never written to the cluster record, events or status; it is
read from the cluster's private copy of its file when the head starts.
Ray 2.60 takes it only on command lines (``ray start --redis-password``,
passed on to ``gcs_server --redis_password``), see docs/head-failures.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from rayscale.api import RayCluster
from rayscale.api import gcs_ft as api

OPTIONS = "spec.gcsFaultToleranceOptions"
PROBE_TIMEOUT_S = 3.0


class StoreError(RuntimeError):
    """The cluster's Redis is misconfigured, unreachable or refuses us; the message says which."""


@dataclass(frozen=True)
class RedisStore:
    """Where a cluster's GCS keeps its tables in Redis (the password is not printed)."""

    host: str
    port: int
    namespace: str
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: How the file names the address and the password (for error messages).
    address_field: str = f"{OPTIONS}.redisAddress"
    password_field: str = f"{OPTIONS}.redisPassword"

    @property
    def address(self) -> str:
        """``host:port`` (``rediss://host:port`` with TLS), as Ray's RAY_REDIS_ADDRESS."""
        plain = f"{self.host}:{self.port}"
        return f"rediss://{plain}" if self.ssl else plain

    def head_env(self) -> dict[str, str]:
        """Ray's settings for the head's GCS (no credential: those go to ``ray start``)."""
        return {api.RAY_REDIS_ADDRESS: self.address,
                api.RAY_EXTERNAL_STORAGE_NS: self.namespace}

    def start_params(self) -> dict[str, str]:
        """The head's ``ray start`` credentials (Ray 2.60 takes them nowhere else)."""
        out = {}
        if self.username:
            out["redis-username"] = self.username
        if self.password:
            out["redis-password"] = self.password
        return out

    @property
    def key_pattern(self) -> str:
        """The SCAN pattern of this namespace's keys (``RAY<namespace>@*``)."""
        return "RAY" + re.sub(r"([\\*?\[\]])", r"\\\1", self.namespace) + "@*"

    def client(self, timeout_s: float = PROBE_TIMEOUT_S, retries: int = 0) -> redis.Redis:
        """A client that gives up after ``timeout_s`` (redis-py would otherwise retry
        3 times with backoff: seconds before a refused connection is reported)."""
        return redis.Redis(host=self.host, port=self.port, username=self.username or None,
                           password=self.password or None, ssl=self.ssl,
                           socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                           retry=Retry(NoBackoff(), retries))


def _credential(credential: Any, path: str) -> str | None:
    """A ``RedisCredential``'s value; ``valueFrom`` needs a Secret store, which local
    mode does not have."""
    if credential is None:
        return None
    if credential.value_from:
        raise StoreError(
            f"{path}.valueFrom: local mode has no Kubernetes Secrets; give the value "
            f"({path}.value) in the file you run locally, or use the embedded store "
            "(`backend: rocksdb`, `rayscale up --ha`)")
    return str(credential.value) if credential.value else None


def _env_value(container: Mapping[str, Any], name: str, path: str) -> str | None:
    for i, var in enumerate(container.get("env") or []):
        if isinstance(var, Mapping) and var.get("name") == name:
            if var.get("valueFrom"):
                raise StoreError(
                    f"{path}.env[{i}] ({name}).valueFrom: local mode has no Kubernetes "
                    "Secrets or ConfigMaps; give its value")
            value = var.get("value")
            return str(value) if value else None
    return None


def parse_address(address: str, at: str) -> tuple[str, int, bool]:
    """``host:port``, ``redis://host:port`` or ``rediss://host:port`` (the first of a
    comma-separated list, as Ray and KubeRay read RAY_REDIS_ADDRESS)."""
    first = address.split(",")[0].strip()
    scheme, sep, rest = first.partition("://")
    if not sep:
        scheme, rest = "redis", first
    host, _, port = rest.rpartition(":")
    if scheme not in ("redis", "rediss") or not host or "@" in host or "/" in port \
            or not port.isdigit() or not 0 < int(port) < 65536:
        raise StoreError(f"{at}: expected host:port, redis://host:port or rediss://host:port, "
                         f"got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port), scheme == "rediss"


def redis_store(spec: RayCluster, default_namespace: str) -> RedisStore | None:
    """The Redis a cluster's GCS stores in, or None (no fault tolerance, or the
    embedded store). Raises :class:`StoreError` naming the field."""
    annotations = spec.metadata.annotations
    if not api.enabled(spec.spec, annotations):
        return None
    options = spec.spec.gcs_fault_tolerance_options
    if options is not None:
        if api.embedded(options):
            return None
        if not options.redis_address:
            raise StoreError(f"{OPTIONS}.redisAddress: required for the Redis backend "
                             "(or set `backend: rocksdb` for Ray's embedded store)")
        host, port, ssl = parse_address(options.redis_address, f"{OPTIONS}.redisAddress")
        namespace = options.external_storage_namespace or default_namespace
        store = RedisStore(
            host=host, port=port, ssl=ssl, namespace=namespace,
            username=_credential(options.redis_username, f"{OPTIONS}.redisUsername"),
            password=_credential(options.redis_password, f"{OPTIONS}.redisPassword"))
        ns_field = f"{OPTIONS}.externalStorageNamespace"
    else:
        head = api.head_container_manifest(spec.spec)
        at = "spec.headGroupSpec.template.spec.containers[0]"
        address = _env_value(head, api.RAY_REDIS_ADDRESS, at)
        if not address:
            raise StoreError(
                f"metadata.annotations[{api.FT_ENABLED_ANNOTATION}]: fault tolerance needs a "
                f"Redis: set {api.RAY_REDIS_ADDRESS} in {at}.env, or use "
                "gcsFaultToleranceOptions (redisAddress, or `backend: rocksdb`)")
        env_at = f"{at}.env {api.RAY_REDIS_ADDRESS}"
        host, port, ssl = parse_address(address, env_at)
        password = _env_value(head, api.REDIS_PASSWORD, at)
        param = spec.spec.head_group_spec.ray_start_params.get("redis-password")
        if not password and param and not param.startswith("$"):
            password = param  # a literal in rayStartParams; "$REDIS_PASSWORD" is the env's
        namespace = annotations.get(api.EXTERNAL_STORAGE_NS_ANNOTATION) or default_namespace
        store = RedisStore(host=host, port=port, ssl=ssl, namespace=namespace,
                           password=password, address_field=env_at,
                           password_field=f"{at}.env {api.REDIS_PASSWORD}")
        ns_field = f"metadata.annotations[{api.EXTERNAL_STORAGE_NS_ANNOTATION}]"
    if "@" in store.namespace:  # Ray's GCS aborts on it (its key separator)
        raise StoreError(f"{ns_field}: must not contain '@', got {store.namespace!r}")
    return store


def probe(store: RedisStore, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Connect and authenticate as the GCS will; return how many keys the namespace
    holds already. Raises :class:`StoreError` naming the field at fault."""
    client = store.client(timeout_s)
    try:
        client.ping()
        return sum(1 for _ in client.scan_iter(match=store.key_pattern, count=500))
    except (redis_errors.AuthenticationError, redis_errors.AuthenticationWrongNumberOfArgsError,
            redis_errors.NoPermissionError) as exc:
        raise StoreError(
            f"{store.password_field}: the Redis at {store.address} refused it "
            f"({type(exc).__name__}: {_first_line(exc)})") from None
    except redis_errors.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise StoreError(f"{store.password_field}: the Redis at {store.address} refused "
                             f"it ({_first_line(exc)})") from None
        raise StoreError(f"{store.address_field}: the Redis at {store.address} answered "
                         f"with an error: {_first_line(exc)}") from None
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreError(f"{store.address_field}: cannot reach the Redis at {store.address} "
                         f"within {timeout_s:g} s ({_first_line(exc)})") from None
    finally:
        client.close()


def count_keys(store: RedisStore, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """How many keys the cluster's namespace holds."""
    client = store.client(timeout_s)
    try:
        return sum(1 for _ in client.scan_iter(match=store.key_pattern, count=500))
    finally:
        client.close()


def delete_keys(store: RedisStore, timeout_s: float = 10.0) -> int:
    """Delete the namespace's keys (KubeRay's cleanup finalizer); return how many.

    Raises redis-py's errors (the caller warns and goes on)."""
    client = store.client(timeout_s, retries=1)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=store.key_pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
