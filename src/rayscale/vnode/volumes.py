"""Volumes whose files the kubelet writes: ``secret``, ``configMap``, ``downwardAPI`` and
``projected`` (their sources, and ``serviceAccountToken``).

The vnode writes each such volume's files into ``<pod dir>/volumes/<name>/``
before the pod's first container starts; the containers see the directory at
their mount paths through bind mounts (:mod:`rayscale.vnode.runtime`). As the
kubelet does:

- keys become files (``items`` pick and rename them), with ``defaultMode`` /
  ``mode`` (default 0644); a missing Secret or ConfigMap (or key) keeps the
  pod waiting (``ContainerCreating``), unless the source is ``optional``;
- a ``serviceAccountToken`` file holds a token the API server issues for the
  pod's ServiceAccount (TokenRequest, bound to the pod, ``audience`` and
  ``expirationSeconds`` as given: default the API server's audiences and one
  hour), renewed once 80 % of its lifetime has passed (:meth:`PodVolumes.refresh`).

Differences: files are written in place (no ``..data`` symlink swap), a Secret's
values are text, and ``readOnly`` is not enforced. The volume directory is
readable by root only: pods here run as this machine's root user.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightkube.models.core_v1 import DownwardAPIVolumeFile, KeyToPath, Volume

log = logging.getLogger("rayscale.vnode")

DEFAULT_MODE = 0o644
DEFAULT_TOKEN_EXPIRATION_S = 3600
REFRESH_FRACTION = 0.8  # the kubelet renews a projected token after 80 % of its lifetime
RETRY_S = 10.0

# (kind "ConfigMap"/"Secret", namespace, name) -> its data, None if absent
Lookup = Callable[[str, str, str], dict[str, str] | None]
# (namespace, service account, audiences, expiration s, pod name, pod uid)
#   -> (token, lifetime s); raises when the API refuses
TokenRequest = Callable[[str, str, list[str], int, str, str], tuple[str, float]]
# a downward API item -> its value
DownwardValue = Callable[[DownwardAPIVolumeFile], str]


class VolumeError(Exception):
    """A volume cannot be set up yet (a missing Secret, ConfigMap or key; no token)."""


def file_volume(volume: Volume) -> bool:
    """Whether the vnode writes this volume's files (as opposed to binding a directory)."""
    return any(src is not None for src in (volume.secret, volume.configMap,
                                           volume.downwardAPI, volume.projected))


@dataclass
class _Token:
    volume: str
    path: str
    audiences: list[str]
    expiration_s: int
    mode: int
    refresh_at: float = 0.0


@dataclass
class PodVolumes:
    """The file volumes of one pod: written once, tokens renewed."""

    namespace: str
    pod_name: str
    pod_uid: str  # tokens are bound to the pod: deleting it revokes them
    service_account: str
    root: Path  # <pod dir>/volumes
    lookup: Lookup
    downward: DownwardValue
    token_request: TokenRequest | None = None
    written: set[str] = field(default_factory=set)
    tokens: list[_Token] = field(default_factory=list)

    def directory(self, volume: str) -> Path:
        return self.root / volume

    def prepare(self, volumes: list[Volume], now: float) -> None:
        """Write every file volume not written yet; VolumeError if one cannot be yet."""
        for volume in volumes:
            if volume.name in self.written or not file_volume(volume):
                continue
            files, tokens = self._contents(volume)
            target = self.directory(volume.name)
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o700)
            for rel, (data, mode) in files.items():
                _write(target, rel, data, mode)
            for token in tokens:
                self._write_token(token, now)
            self.tokens += tokens
            self.written.add(volume.name)

    def refresh(self, now: float) -> None:
        """Renew the tokens that are due (failures are retried, the old file stays)."""
        for token in self.tokens:
            if now >= token.refresh_at:
                try:
                    self._write_token(token, now)
                except VolumeError as exc:
                    log.warning("renewing the token in volume %s: %s", token.volume, exc)
                    token.refresh_at = now + RETRY_S

    # ------------------------------------------------------------- internals

    def _contents(self, volume: Volume) -> tuple[dict[str, tuple[bytes, int]], list[_Token]]:
        files: dict[str, tuple[bytes, int]] = {}
        tokens: list[_Token] = []
        if volume.secret is not None:
            src = volume.secret
            mode = _mode(src.defaultMode)
            files.update(self._keys("Secret", src.secretName or "", src.items, src.optional, mode))
        elif volume.configMap is not None:
            cm = volume.configMap
            mode = _mode(cm.defaultMode)
            files.update(self._keys("ConfigMap", cm.name or "", cm.items, cm.optional, mode))
        elif volume.downwardAPI is not None:
            mode = _mode(volume.downwardAPI.defaultMode)
            files.update(self._downward(volume.downwardAPI.items or [], mode))
        elif volume.projected is not None:
            mode = _mode(volume.projected.defaultMode)
            for source in volume.projected.sources or []:
                if source.secret is not None:
                    s = source.secret
                    files.update(self._keys("Secret", s.name or "", s.items, s.optional, mode))
                elif source.configMap is not None:
                    c = source.configMap
                    files.update(self._keys("ConfigMap", c.name or "", c.items, c.optional, mode))
                elif source.downwardAPI is not None:
                    files.update(self._downward(source.downwardAPI.items or [], mode))
                elif source.serviceAccountToken is not None:
                    sat = source.serviceAccountToken
                    tokens.append(_Token(
                        volume=volume.name, path=sat.path,
                        audiences=[sat.audience] if sat.audience else [],
                        expiration_s=sat.expirationSeconds or DEFAULT_TOKEN_EXPIRATION_S,
                        mode=mode))
                else:
                    raise VolumeError(f"volume {volume.name}: unsupported projected source")
        return files, tokens

    def _keys(self, kind: str, name: str, items: list[KeyToPath] | None,
              optional: bool | None, mode: int) -> dict[str, tuple[bytes, int]]:
        data = self.lookup(kind, self.namespace, name)
        if data is None:
            if optional:
                return {}
            raise VolumeError(f'{kind.lower()} "{name}" not found')
        if not items:
            return {key: (value.encode(), mode) for key, value in data.items()}
        out = {}
        for item in items:
            if item.key not in data:
                if optional:
                    continue
                raise VolumeError(f"couldn't find key {item.key} in {kind} "
                                  f"{self.namespace}/{name}")
            out[item.path] = (data[item.key].encode(), _mode(item.mode, mode))
        return out

    def _downward(self, items: list[DownwardAPIVolumeFile], mode: int
                  ) -> dict[str, tuple[bytes, int]]:
        return {item.path: (self.downward(item).encode(), _mode(item.mode, mode))
                for item in items}

    def _write_token(self, token: _Token, now: float) -> None:
        if self.token_request is None:
            raise VolumeError("no token issuer (serviceAccountToken volumes need the API)")
        try:
            value, lifetime = self.token_request(self.namespace, self.service_account,
                                                 token.audiences, token.expiration_s,
                                                 self.pod_name, self.pod_uid)
        except Exception as exc:  # the API's refusal, or no answer: retried
            raise VolumeError(f"token for service account {self.namespace}/"
                              f"{self.service_account}: {exc}") from None
        _write(self.directory(token.volume), token.path, value.encode(), token.mode)
        token.refresh_at = now + REFRESH_FRACTION * max(lifetime, 60.0)


def _mode(mode: int | None, default: int = DEFAULT_MODE) -> int:
    return default if mode is None else mode & 0o777


def _write(root: Path, rel: str, data: bytes, mode: int) -> None:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise VolumeError(f"path {rel!r} leaves its volume")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
