"""Running one pod as local processes: the part of a kubelet a virtual node needs.

Each container is one process tree started from the container's ``command``
+ ``args`` (images are not run: a container runs only if the vnode's image map,
:mod:`rayscale.vnode.images`, names its image, else it waits with
``ErrImagePull``; without ``command`` it runs what the map says its image runs)
with the environment the
kubelet would give it: ``env`` (values, ``$(VAR)`` expansion, ``fieldRef``,
``resourceFieldRef``, ``configMapKeyRef``/``secretKeyRef``) and ``envFrom``,
over a small base environment whose PATH starts with this Python's bin dir
(so ``ray`` and ``rayscale`` resolve to the project's venv).

Isolation is just enough to look like a pod:

* ``unshare --mount --uts``: a private mount namespace where the pod's own
  hosts file and resolv.conf are bind-mounted over ``/etc/hosts`` and
  ``/etc/resolv.conf`` (see :mod:`rayscale.vnode.hosts`), an ``/etc/profile``
  that puts the venv's bin back first for login shells (``bash -lc``), with
  ``HOME`` a directory of the pod's own (so no host ``~/.profile``; it holds the
  ``ray_bootstrap_config.yaml`` that keeps Ray's dashboard from probing cloud
  metadata servers, see :mod:`rayscale.cloudprobe`), ``emptyDir`` and
  ``hostPath`` volumes, and the files of ``secret``, ``configMap``,
  ``downwardAPI`` and ``projected`` ones (:mod:`rayscale.vnode.volumes`), are
  bind-mounted at their mount paths (a ``subPath`` mounts one file or
  directory of the volume), a known image's ``VOLUME`` paths get a directory of
  the pod's own, and the hostname is the pod's.
* A session of its own (process group = the container's PID) and an
  environment marker ``RAYSCALE_VNODE_CONTAINER=<pod uid>/<container>`` that
  every descendant inherits, so stopping a container signals its group and
  then any marked process that left the group. Never anything by name.

The pod's address is a loopback address of its own (given by the caller).
Init containers run first, one at a time. Restarts follow ``restartPolicy``
with a backoff of 1 s doubling to 30 s. Logs go to ``<pod dir>/<container>.log``
(and per instance, stamped: :mod:`rayscale.vnode.logs`).
Probes (:mod:`rayscale.vnode.probes`) decide a running container's ``ready``
and ``started``; a failed liveness or startup probe stops it, and its exit
then goes through ``restartPolicy`` like any other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from lightkube.models.core_v1 import Container, DownwardAPIVolumeFile
from lightkube.resources.core_v1 import Pod
from lightkube.utils.quantity import parse_quantity

from rayscale import procs
from rayscale.cloudprobe import ensure_bootstrap_config
from rayscale.vnode import logs
from rayscale.vnode.images import ImageProgram, find_image, unknown_image_message
from rayscale.vnode.pacing import StartPacer
from rayscale.vnode.probes import ContainerProbes, ExecTarget, Prober
from rayscale.vnode.volumes import PodVolumes, TokenRequest, VolumeError, file_volume

MARKER = "RAYSCALE_VNODE_CONTAINER"
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# (kind "ConfigMap"/"Secret", namespace, name) -> its data, None if absent
Lookup = Callable[[str, str, str], dict[str, str] | None]

_SETUP = r"""
set -e
mount --bind "$1" /etc/hosts
mount --bind "$2" /etc/resolv.conf
if [ -n "$3" ] && [ -e /etc/profile ]; then mount --bind "$3" /etc/profile; fi
hostname "$4"
workdir="$5"; n="$6"; shift 6
while [ "$n" -gt 0 ]; do
  if [ -d "$1" ]; then mkdir -p "$2"
  else mkdir -p "$(dirname "$2")"; [ -e "$2" ] || : > "$2"; fi
  mount --bind "$1" "$2"; shift 2; n=$((n - 1))
done
cd "$workdir"
set +e
exec "$@"
"""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def venv_bin() -> str:
    return str(Path(sys.executable).parent)


def base_path() -> str:
    return f"{venv_bin()}:{STANDARD_PATH}"


class ConfigError(Exception):
    """A container cannot be configured yet (missing ConfigMap/Secret key...)."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(sub, text)


def _labels_field(path: str, mapping: dict[str, str] | None) -> str:
    m = re.match(r"^metadata\.(?:labels|annotations)\['(.+)'\]$", path)
    return (mapping or {}).get(m.group(1), "") if m else ""


def field_ref(pod: Pod, path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod.metadata
    spec = pod.spec
    assert meta is not None and spec is not None
    simple = {
        "metadata.name": meta.name or "",
        "metadata.namespace": meta.namespace or "",
        "metadata.uid": meta.uid or "",
        "spec.nodeName": spec.nodeName or "",
        "spec.serviceAccountName": spec.serviceAccountName or "default",
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    if path.startswith("metadata.labels["):
        return _labels_field(path, meta.labels)
    if path.startswith("metadata.annotations["):
        return _labels_field(path, meta.annotations)
    raise ConfigError(f"unsupported fieldRef {path}")


def resource_ref(
    pod: Pod, container: Container, resource: str, container_name: str | None,
    divisor: str | None, node_allocatable: dict[str, str],
) -> str:
    assert pod.spec is not None
    target = container
    if container_name:
        for c in pod.spec.containers:
            if c.name == container_name:
                target = c
    kind, _, name = resource.partition(".")
    res = target.resources
    values = (res.limits if kind == "limits" else res.requests) if res is not None else None
    raw = (values or {}).get(name)
    if raw is None and kind == "requests" and res is not None:
        raw = (res.limits or {}).get(name)  # requests default to limits
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    qty = parse_quantity(raw) or Decimal(0)
    div = parse_quantity(divisor) if divisor else None
    if div is None or div == 0:
        div = Decimal(1)
    return str(math.ceil(qty / div))


def container_env(
    pod: Pod, container: Container, pod_ip: str, host_ip: str,
    base: dict[str, str], lookup: Lookup, node_allocatable: dict[str, str],
) -> dict[str, str]:
    """The environment of one container, as the kubelet builds it."""
    assert pod.metadata is not None
    ns = pod.metadata.namespace or "default"
    env = dict(base)
    for src in container.envFrom or []:
        ref = src.configMapRef or src.secretRef
        if ref is None or ref.name is None:
            continue
        kind = "ConfigMap" if src.configMapRef is not None else "Secret"
        data = lookup(kind, ns, ref.name)
        if data is None:
            if ref.optional:
                continue
            raise ConfigError(f'{kind.lower()} "{ref.name}" not found')
        for key, value in data.items():
            env[(src.prefix or "") + key] = value
    for var in container.env or []:
        if var.valueFrom is None:
            env[var.name] = expand(var.value or "", env)
            continue
        vf = var.valueFrom
        if vf.fieldRef is not None:
            env[var.name] = field_ref(pod, vf.fieldRef.fieldPath, pod_ip, host_ip)
        elif vf.resourceFieldRef is not None:
            r = vf.resourceFieldRef
            env[var.name] = resource_ref(pod, container, r.resource, r.containerName,
                                         r.divisor, node_allocatable)
        elif vf.configMapKeyRef is not None or vf.secretKeyRef is not None:
            sel = vf.configMapKeyRef or vf.secretKeyRef
            assert sel is not None
            kind = "ConfigMap" if vf.configMapKeyRef is not None else "Secret"
            data = lookup(kind, ns, sel.name or "")
            if data is None or sel.key not in data:
                if sel.optional:
                    continue
                raise ConfigError(f'couldn\'t find key {sel.key} in {kind} {ns}/{sel.name}')
            env[var.name] = data[sel.key]
        else:
            raise ConfigError(f"unsupported valueFrom for {var.name}")
    return env


ContainerStateName = Literal["waiting", "running", "terminated"]


@dataclass
class ContainerRun:
    spec: Container
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    state: ContainerStateName = "waiting"
    reason: str = "ContainerCreating"
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    restart_count: int = 0
    last_state: dict[str, Any] | None = None
    next_start: float = 0.0
    container_id: str | None = None
    pgid: int | None = None
    #: this run's probes (a restart starts fresh ones); None without probes or not running
    probes: ContainerProbes | None = None
    #: the environment and working directory it started with (exec probes run in them)
    env: dict[str, str] | None = None
    workdir: str = "/"
    #: a failed liveness/startup probe stopped it: SIGKILL at this time unless it exited
    probe_kill_at: float | None = None
    #: its image's entry in the vnode's image map (None: an image the vnode does not run)
    program: ImageProgram | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        """Running and its readiness probe passed (no probe: running is ready)."""
        return self.state == "running" and not self.init and (
            self.probes is None or self.probes.ready)

    def status(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": _drop_none({
                "exitCode": self.exit_code, "reason": self.reason, "message": self.message,
                "startedAt": self.started_at, "finishedAt": self.finished_at,
                "containerID": self.container_id,
            })}
        else:
            state = {"waiting": _drop_none({"reason": self.reason, "message": self.message})}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.image or "",
            # what runs in its place here (the image map's entry), for `kubectl describe`
            "imageID": f"rayscale-vnode://{self.program.image}" if self.program else "",
            "ready": self.ready,
            "started": self.state == "running" and (
                self.probes is None or self.probes.started),
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state or {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class Tools:
    unshare: str
    sh: str

    @classmethod
    def find(cls) -> Tools:
        unshare = shutil.which("unshare")
        sh = shutil.which("sh") or "/bin/sh"
        if unshare is None:
            raise RuntimeError("util-linux `unshare` is needed to run pods")
        for tool in ("mount", "hostname"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"`{tool}` is needed to run pods")
        return cls(unshare=unshare, sh=sh)


@dataclass
class PodRun:
    """One pod's processes and the status the vnode reports for it."""

    pod: Pod
    ip: str
    host_ip: str
    directory: Path
    tools: Tools | None  # None: fake-run (report Running, start nothing)
    lookup: Lookup
    node_allocatable: dict[str, str]
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Machine-wide pacing of container starts (None: start at once).
    pacer: StartPacer | None = None
    #: Issues ServiceAccount tokens for ``serviceAccountToken`` volumes (None: refused).
    token_request: TokenRequest | None = None
    #: What containers of well-known images run (the vnode's image map).
    images: list[ImageProgram] = field(default_factory=list)
    #: Runs the containers' probes (the vnode's one pool; None: probes are not run).
    prober: Prober | None = None
    init: list[ContainerRun] = field(default_factory=list)
    main: list[ContainerRun] = field(default_factory=list)
    start_time: str = field(default_factory=now_rfc3339)
    terminating: bool = False
    kill_deadline: float | None = None
    killed: bool = False
    init_failed: bool = False
    gone: bool = False  # the pod object no longer exists in the API

    def __post_init__(self) -> None:
        spec = self.pod.spec
        assert spec is not None
        self.init = [ContainerRun(c, init=True) for c in spec.initContainers or []]
        self.main = [ContainerRun(c, init=False) for c in spec.containers]
        for c in self.containers():
            c.program = find_image(self.images, c.spec.image)
            if c.program is None:  # never started: the map does not change while it runs
                c.reason = "ErrImagePull"
                c.message = unknown_image_message(c.spec.image, self.images)
                c.next_start = math.inf
        self.directory.mkdir(parents=True, exist_ok=True)
        self.volumes = PodVolumes(
            namespace=self.namespace, pod_name=self.name, pod_uid=self.uid,
            service_account=spec.serviceAccountName or "default",
            root=self.directory / "volumes", lookup=self.lookup,
            downward=self._downward_value, token_request=self.token_request,
        )
        if self.tools is not None:
            self.home.mkdir(exist_ok=True)
            self._write_profile()
            # Ray's dashboard asks cloud metadata servers (off this machine) where it
            # runs unless this file is in its home; a Ray image's pod would run Ray as
            # KubeRay starts it, so the file says "kuberay"
            ensure_bootstrap_config(self.home, "kuberay")
        if self.tools is None:
            stamp = now_rfc3339()
            for c in self.init:
                if c.program is not None:
                    c.state, c.reason, c.exit_code = "terminated", "Completed", 0
                    c.started_at = c.finished_at = stamp
            ready_to_run = all(c.program is not None for c in self.init)
            for c in self.main:
                if c.program is not None and ready_to_run:
                    c.state, c.started_at, c.reason = "running", stamp, ""
                    c.container_id = f"rayscale://fake/{self.uid}/{c.name}"

    # ------------------------------------------------------------- identity

    @property
    def uid(self) -> str:
        assert self.pod.metadata is not None and self.pod.metadata.uid is not None
        return self.pod.metadata.uid

    @property
    def name(self) -> str:
        assert self.pod.metadata is not None
        return self.pod.metadata.name or ""

    @property
    def namespace(self) -> str:
        assert self.pod.metadata is not None
        return self.pod.metadata.namespace or "default"

    @property
    def hosts_file(self) -> Path:
        return self.directory / "hosts"

    @property
    def resolv_file(self) -> Path:
        return self.directory / "resolv.conf"

    @property
    def profile_file(self) -> Path:
        return self.directory / "profile"

    @property
    def home(self) -> Path:
        return self.directory / "home"

    def _write_profile(self) -> None:
        """/etc/profile for login shells (`bash -lc`, as KubeRay's pods use): the host's,
        then the venv's bin first again, since the host's resets PATH."""
        try:
            host = Path("/etc/profile").read_text()
        except OSError:
            host = ""
        self.profile_file.write_text(
            host + "\n# rayscale vnode: the pod image's PATH (this venv first)\n"
            f'PATH="{venv_bin()}:$PATH"\nexport PATH\n'
        )

    @property
    def restart_policy(self) -> str:
        assert self.pod.spec is not None
        return self.pod.spec.restartPolicy or "Always"

    def containers(self) -> Iterator[ContainerRun]:
        yield from self.init
        yield from self.main

    # ------------------------------------------------------------ lifecycle

    def step(self, now: float) -> None:
        """Reap exits, apply restart policy, renew tokens, start what is due."""
        for c in self.containers():
            self._reap(c)
        if self.tools is None or self.terminating:
            return
        self.volumes.refresh(now)
        if self.init_failed:
            return
        for c in self.init:
            if c.state == "terminated" and c.exit_code == 0:
                continue
            if c.state == "running":
                return
            if c.state == "terminated":  # failed init container
                if self.restart_policy == "Never":
                    self.init_failed = True
                    return
                self._schedule_restart(c, now)
            if c.next_start <= now and self._admitted(now):
                self._start(c)
            return
        for c in self.main:
            if c.state == "running":
                self._probe(c, now)
                continue
            if c.state == "terminated":
                if not self._should_restart(c):
                    continue
                self._schedule_restart(c, now)
            if c.next_start <= now and self._admitted(now):
                self._start(c)

    def _probe(self, c: ContainerRun, now: float) -> None:
        """Run what is due of a running container's probes; stop it when its liveness
        (or startup) probe failed ``failureThreshold`` times, as the kubelet does: SIGTERM
        to its group, SIGKILL after the probe's (else the pod's) grace period. Its exit
        then goes through ``restartPolicy`` like any other."""
        probes = c.probes
        if probes is None or self.prober is None:
            return
        if c.probe_kill_at is not None:
            if now >= c.probe_kill_at and c.pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.pgid, signal.SIGKILL)
            return
        failed = probes.kill_reason()
        if failed is not None:
            assert self.pod.spec is not None
            grace = failed.spec.termination_grace_s
            if grace is None:
                pod_grace = self.pod.spec.terminationGracePeriodSeconds
                grace = float(30 if pod_grace is None else pod_grace)
            c.probe_kill_at = now + grace
            if c.pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.pgid, signal.SIGTERM)
            return
        for state in probes.active():
            if state.due(now):
                self.prober.submit(state, now, lambda: self._exec_target(c))

    def _exec_target(self, c: ContainerRun) -> ExecTarget | None:
        if c.proc is None or c.env is None:
            return None
        return ExecTarget(pid=c.proc.pid, env=c.env, cwd=c.workdir)

    def _admitted(self, now: float) -> bool:
        return self.pacer is None or self.pacer.admit(now)

    def _should_restart(self, c: ContainerRun) -> bool:
        policy = self.restart_policy
        return policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)

    def _schedule_restart(self, c: ContainerRun, now: float) -> None:
        """Move a terminated container to waiting (CrashLoopBackOff) with a backoff."""
        c.last_state = c.status()["state"]
        c.restart_count += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (c.restart_count - 1))
        c.next_start = now + delay
        c.state, c.reason, c.message = "waiting", "CrashLoopBackOff", None
        c.exit_code = None

    def _start(self, c: ContainerRun) -> None:
        assert self.tools is not None
        base = {
            "PATH": base_path(),
            "HOME": str(self.home),  # the pod's own, as a container's is in its image
            "HOSTNAME": self.name,
            "LANG": "C.UTF-8",
            **self.extra_env,
        }
        assert self.pod.spec is not None
        try:  # the pod's volumes first, as the kubelet mounts them before any container
            self.volumes.prepare(list(self.pod.spec.volumes or []), time.monotonic())
        except VolumeError as e:
            c.state, c.reason, c.message = "waiting", "ContainerCreating", f"volume: {e}"
            c.next_start = time.monotonic() + 2.0
            return
        try:
            env = container_env(self.pod, c.spec, self.ip, self.host_ip, base, self.lookup,
                                self.node_allocatable)
        except ConfigError as e:
            c.state, c.reason, c.message = "waiting", "CreateContainerConfigError", str(e)
            c.next_start = time.monotonic() + 2.0
            return
        env[MARKER] = f"{self.uid}/{c.name}"
        image = c.program
        if image is None:  # not reached: such a container never becomes due
            return
        args = [expand(a, env) for a in (c.spec.args or [])]
        if c.spec.command:
            argv = [expand(a, env) for a in c.spec.command] + args
        else:
            argv = image.argv(args)
        try:
            mounts = self._image_mounts(c, image) + self._mounts(c)
        except ValueError as e:
            c.state, c.reason, c.exit_code, c.message = "terminated", "StartError", 128, str(e)
            c.started_at = c.finished_at = now_rfc3339()
            return
        workdir = (c.spec.workingDir or image.working_dir
                   or str(self.directory))
        setup = [self.tools.unshare, "--mount", "--uts", "--propagation", "private", "--",
                 self.tools.sh, "-c", _SETUP, "sh", str(self.hosts_file), str(self.resolv_file),
                 str(self.profile_file), self.name[:63], workdir, str(len(mounts))]
        for src, dst in mounts:
            setup += [src, dst]
        try:
            out = logs.capture(self.directory, c.name, c.restart_count)
            proc = procs.spawn([*setup, *argv], env, out, cwd=self.directory)
        except OSError as e:
            c.state, c.reason, c.exit_code, c.message = "terminated", "StartError", 128, str(e)
            c.started_at = c.finished_at = now_rfc3339()
            return
        c.proc, c.pgid = proc, proc.pid
        c.env, c.workdir = env, workdir
        c.probes = None
        if not c.init and self.prober is not None:
            c.probes = ContainerProbes.for_container(c.spec, self.ip, time.monotonic())
        c.state, c.reason, c.message, c.exit_code = "running", "", None, None
        c.started_at, c.finished_at = now_rfc3339(), None
        c.container_id = f"rayscale://{proc.pid}"

    def _image_mounts(self, c: ContainerRun, image: ImageProgram) -> list[tuple[str, str]]:
        """The image's VOLUME paths: a directory of this container's own for each, as
        Docker's anonymous volumes (mounted first: a volumeMount at the path wins)."""
        out = []
        for i, path in enumerate(image.volumes):
            src = self.directory / "image-volumes" / c.name / str(i)
            src.mkdir(parents=True, exist_ok=True)
            out.append((str(src), path))
        return out

    def _mounts(self, c: ContainerRun) -> list[tuple[str, str]]:
        assert self.pod.spec is not None
        volumes = {v.name: v for v in self.pod.spec.volumes or []}
        out = []
        for vm in c.spec.volumeMounts or []:
            vol = volumes.get(vm.name)
            if vol is None:
                continue
            if vol.emptyDir is not None:
                root = self.directory / "volumes" / vm.name
                root.mkdir(parents=True, exist_ok=True)
            elif vol.hostPath is not None:
                root = Path(vol.hostPath.path)
            elif file_volume(vol):  # secret, configMap, downwardAPI, projected
                root = self.volumes.directory(vm.name)
            else:
                continue
            out.append((str(_sub_path(root, vm.subPath, vm.name, vol.emptyDir is not None)),
                        vm.mountPath))
        return out

    def _downward_value(self, item: DownwardAPIVolumeFile) -> str:
        """A ``downwardAPI`` volume item: a field of the pod, or a container's resource."""
        if item.fieldRef is not None:
            try:
                return field_ref(self.pod, item.fieldRef.fieldPath, self.ip, self.host_ip)
            except ConfigError as e:
                raise VolumeError(str(e)) from None
        ref = item.resourceFieldRef
        assert self.pod.spec is not None
        if ref is None or not self.pod.spec.containers:
            raise VolumeError(f"downward API item {item.path}: no fieldRef or resourceFieldRef")
        return resource_ref(self.pod, self.pod.spec.containers[0], ref.resource,
                            ref.containerName, ref.divisor, self.node_allocatable)

    def _reap(self, c: ContainerRun) -> None:
        if c.proc is None:
            return
        code = c.proc.poll()
        if code is None:
            return
        # the container is its process tree: what it left behind goes too
        if c.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.pgid, signal.SIGKILL)
        _signal_marked({f"{self.uid}/{c.name}"}, signal.SIGKILL)
        c.proc = None
        c.probes, c.probe_kill_at = None, None
        c.state, c.finished_at = "terminated", now_rfc3339()
        c.exit_code = code if code >= 0 else 128 - code
        c.reason = "Completed" if c.exit_code == 0 else "Error"
        if self.terminating:
            c.reason = "Completed" if c.exit_code == 0 else "Error"

    def begin_termination(self, grace_s: float, now: float) -> None:
        """SIGTERM every container (group and marked escapees); SIGKILL after the grace."""
        if self.terminating:
            if self.kill_deadline is not None:
                self.kill_deadline = min(self.kill_deadline, now + grace_s)
            return
        self.terminating = True
        self.kill_deadline = now + grace_s
        for c in self.containers():
            if c.state == "waiting":
                c.reason = "ContainerCreating"
            if c.pgid is not None and c.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.pgid, signal.SIGTERM)
        _signal_marked(self._markers(), signal.SIGTERM)

    def _markers(self) -> set[str]:
        return {f"{self.uid}/{c.name}" for c in self.containers()}

    def finished_terminating(self, now: float) -> bool:
        """True once nothing of the pod runs any more (SIGKILLs after the deadline)."""
        for c in self.containers():
            self._reap(c)
        if self.tools is None:
            return True
        running = [c for c in self.containers() if c.proc is not None]
        left = marked_pids(self._markers())
        if not running and not left:
            return True
        if self.kill_deadline is not None and now >= self.kill_deadline and not self.killed:
            self.killed = True
            for c in running:
                if c.pgid is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(c.pgid, signal.SIGKILL)
            _signal_marked(self._markers(), signal.SIGKILL)
        return False

    def kill_now(self) -> None:
        """Stop everything at once (vnode shutdown or a pod that vanished)."""
        self.begin_termination(0.0, time.monotonic())
        deadline = time.monotonic() + 10.0
        while not self.finished_terminating(time.monotonic()) and time.monotonic() < deadline:
            time.sleep(0.05)

    # --------------------------------------------------------------- status

    def phase(self) -> str:
        if self.tools is None:  # fake-run: all running, but for images it does not run
            return "Pending" if any(c.program is None for c in self.containers()) else "Running"
        if self.init_failed:
            return "Failed"
        if any(not (c.state == "terminated" and c.exit_code == 0) for c in self.init):
            return "Pending"
        states = [c.state for c in self.main]
        if "running" in states:
            return "Running"
        if all(s == "terminated" for s in states):
            if any(self._should_restart(c) for c in self.main) and not self.terminating:
                return "Running"
            return "Succeeded" if all(c.exit_code == 0 for c in self.main) else "Failed"
        if any(c.restart_count > 0 for c in self.main):
            return "Running"
        return "Pending"

    def status(self) -> dict[str, Any]:
        phase = self.phase()
        initialized = all(c.state == "terminated" and c.exit_code == 0 for c in self.init)
        ready = (phase == "Running" and not self.terminating
                 and all(c.ready for c in self.main))
        stamp = now_rfc3339()

        def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
            return _drop_none({"type": kind, "status": "True" if ok else "False",
                               "lastProbeTime": None, "lastTransitionTime": stamp,
                               "reason": None if ok else reason})

        conditions = [
            cond("PodReadyToStartContainers", True),
            cond("Initialized", initialized, "ContainersNotInitialized"),
            cond("ContainersReady", ready, "ContainersNotReady"),
            cond("Ready", ready, "ContainersNotReady"),
            cond("PodScheduled", True),
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [c.status() for c in self.main],
            "qosClass": _qos(self.pod),
        }
        if self.init:
            status["initContainerStatuses"] = [c.status() for c in self.init]
        return status

    def comparable_status(self) -> dict[str, Any]:
        """The status without timestamps that change on every call (for change detection)."""
        status = self.status()
        for c in status["conditions"]:
            c.pop("lastTransitionTime", None)
        return status


def _sub_path(root: Path, sub: str | None, volume: str, create: bool) -> Path:
    """``root``/``sub`` for a ``subPath`` mount (a kubelet creates a missing one in a
    writable volume as a directory); an absolute path or ``..`` is refused."""
    if not sub:
        return root
    if sub.startswith("/") or ".." in Path(sub).parts:
        raise ValueError(f"volumeMounts[{volume}].subPath {sub!r} must be a relative path "
                         "inside the volume")
    path = root / sub
    if create and not path.exists():
        path.mkdir(parents=True)
    return path


def _qos(pod: Pod) -> str:
    """The pod's QoS class: the API server's (set at creation, immutable after), else
    computed as it does, over init and regular containers."""
    if pod.status is not None and pod.status.qosClass:
        return pod.status.qosClass
    assert pod.spec is not None
    requests = limits = False
    guaranteed = True
    for c in [*(pod.spec.initContainers or []), *pod.spec.containers]:
        res = c.resources
        req = (res.requests or {}) if res is not None else {}
        lim = (res.limits or {}) if res is not None else {}
        requests = requests or bool(req)
        limits = limits or bool(lim)
        for name in ("cpu", "memory"):
            if name not in lim or req.get(name, lim[name]) != lim[name]:
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests or limits else "BestEffort"


def marked_pids(markers: set[str]) -> list[int]:
    """Live processes whose environment carries one of these container markers."""
    if not markers:
        return []
    return [pid for pid, marker in procs.marked(MARKER) if marker in markers]


def pod_pids(uids: Collection[str]) -> list[int]:
    """Live processes of any container of these pods (markers are ``<pod uid>/<name>``)."""
    if not uids:
        return []
    return [pid for pid, marker in procs.marked(MARKER) if marker.split("/", 1)[0] in uids]


def _signal_marked(markers: set[str], sig: signal.Signals) -> None:
    for pid in marked_pids(markers):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
