"""`rayscale logs NAME -n NAMESPACE`: a RayCluster's pod logs, through the API server.

Pods are found by KubeRay's labels: ``ray.io/cluster=NAME``, the head by
``ray.io/node-type=head``, a worker's group by ``ray.io/group``. Sources: the
head pod's Ray container (``head``), its autoscaler sidecar container
(``autoscaler``), and each worker pod's Ray container (by pod name). The Ray
container is the one KubeRay takes: the first, unless that is the sidecar.

The API server asks the node's kubelet (the vnode's on the dev cluster), with
``sinceSeconds`` and ``follow``; a deleted pod's logs are gone with it.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Pod

from rayscale.labels import (
    CLUSTER_LABEL,
    GROUP_LABEL_K8S,
    HEAD_GROUP,
    NODE_TYPE_HEAD,
    NODE_TYPE_LABEL,
)
from rayscale.logtail import prefixed

HEAD, AUTOSCALER = "head", "autoscaler"
SIDECAR_CONTAINER = "autoscaler"
#: while following, how often the cluster's pods are listed again (new workers)
RESCAN_S = 2.0
#: a followed container that has not started yet is asked again this often
RETRY_S = 1.0


class KubeLogsError(RuntimeError):
    """No such cluster, pod or group; the message lists what there is."""


@dataclass(frozen=True)
class PodSource:
    name: str  # what the lines are prefixed with: head, autoscaler or the pod's name
    pod: str
    container: str
    group: str | None


def _ray_container(pod: Pod) -> str:
    assert pod.spec is not None
    names = [c.name for c in pod.spec.containers]
    return next((n for n in names if n != SIDECAR_CONTAINER), names[0])


def cluster_pods(client: Client, cluster: str, namespace: str) -> list[PodSource]:
    """Every source of the cluster's pods: head, autoscaler, then workers by name."""
    heads: list[PodSource] = []
    workers: list[PodSource] = []
    for pod in client.list(Pod, namespace=namespace, labels={CLUSTER_LABEL: cluster}):
        if pod.metadata is None or pod.metadata.name is None or pod.spec is None:
            continue
        labels = pod.metadata.labels or {}
        name = pod.metadata.name
        if labels.get(NODE_TYPE_LABEL) == NODE_TYPE_HEAD:
            heads.append(PodSource(HEAD, name, _ray_container(pod), HEAD_GROUP))
            if any(c.name == SIDECAR_CONTAINER for c in pod.spec.containers):
                heads.append(PodSource(AUTOSCALER, name, SIDECAR_CONTAINER, None))
        else:
            workers.append(PodSource(name, name, _ray_container(pod), labels.get(GROUP_LABEL_K8S)))
    if sum(1 for s in heads if s.name == HEAD) > 1:  # a head being replaced: name them apart
        heads = [PodSource(f"{s.name}:{s.pod}", s.pod, s.container, s.group) for s in heads]
    return heads + sorted(workers, key=lambda s: s.name)


def select(found: list[PodSource], cluster: str, namespace: str, nodes: tuple[str, ...],
           groups: tuple[str, ...], strict: bool = True) -> list[PodSource]:
    """The sources ``nodes`` (head, autoscaler or a pod name) and ``groups`` name; both
    empty: all of them."""
    if strict and not found:
        raise KubeLogsError(f"no pods of RayCluster {cluster!r} in namespace {namespace!r} "
                            f"(label {CLUSTER_LABEL}={cluster})")
    names = {s.name.split(":")[0] for s in found} | {s.pod for s in found}
    known_groups = {s.group for s in found if s.group}
    if strict:
        for what, asked, known in (("node", nodes, names), ("group", groups, known_groups)):
            missing = [x for x in asked if x not in known]
            if missing:
                raise KubeLogsError(
                    f"no {what} {', '.join(map(repr, missing))} in RayCluster {cluster!r} "
                    f"(namespace {namespace!r}; known: {', '.join(sorted(known)) or 'none'})")
    if not nodes and not groups:
        return found

    def wanted(s: PodSource) -> bool:
        base = s.name.split(":")[0]
        if base == AUTOSCALER:
            return AUTOSCALER in nodes
        return base in nodes or (s.pod in nodes and s.name != AUTOSCALER) or s.group in groups

    return [s for s in found if wanted(s)]


def _lines(client: Client, source: PodSource, namespace: str, since_s: int | None,
           follow: bool, tail_lines: int | None) -> Iterator[str]:
    return iter(client.log(source.pod, namespace=namespace, container=source.container,
                           follow=follow, since=since_s, tail_lines=tail_lines,
                           newlines=True))


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _api_message(exc: ApiError) -> str:
    status: Any = exc.status
    return str(getattr(status, "message", None) or exc)


def show(
    client: Client,
    listing: Callable[[bool], list[PodSource]],
    namespace: str,
    out: BinaryIO,
    prefix: bool,
    since_s: float | None = None,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
    tail_lines: int | None = None,
) -> None:
    """Print each source's log, one after the other; with ``follow``, every source's
    lines as they come (a thread per container), also those of pods that appear."""
    since = math.ceil(since_s) if since_s is not None else None
    found = listing(True)
    width = max((len(s.name) for s in found), default=0)

    def emit(name: str, line: str) -> None:
        data = line.encode(errors="replace")
        out.write(prefixed(name, width, data) if prefix else data)
        out.flush()

    if not follow:
        for source in found:
            try:
                for line in _lines(client, source, namespace, since, False, tail_lines):
                    emit(source.name, line)
            except ApiError as exc:
                _note(f"{source.name}: {_api_message(exc)}")
        return

    lines: queue.Queue[tuple[str, str]] = queue.Queue()

    def pump(source: PodSource) -> None:
        while not stop():
            try:
                for line in _lines(client, source, namespace, since, True, tail_lines):
                    if stop():  # checked at each line: a quiet stream ends with the process
                        return
                    lines.put((source.name, line))
                return  # the container ended and all it wrote was sent
            except ApiError as exc:
                if exc.status.code == 404:  # the pod is gone
                    return
                time.sleep(RETRY_S)  # not started yet
            except Exception as exc:  # the connection broke: say so, the rest go on
                _note(f"{source.name}: {type(exc).__name__}: {exc}")
                return

    started: set[tuple[str, str]] = set()

    def start(sources: list[PodSource]) -> None:
        nonlocal width
        for source in sources:
            if (source.pod, source.container) not in started:
                started.add((source.pod, source.container))
                width = max(width, len(source.name))
                threading.Thread(target=pump, args=(source,), daemon=True,
                                 name=f"logs-{source.name}").start()

    start(found)
    rescanned = time.monotonic()
    while not stop():
        try:
            name, line = lines.get(timeout=0.2)
            emit(name, line)
        except queue.Empty:
            pass
        if time.monotonic() - rescanned >= RESCAN_S:
            rescanned = time.monotonic()
            try:
                start(listing(False))
            except ApiError as exc:
                _note(f"listing pods: {_api_message(exc)}")
