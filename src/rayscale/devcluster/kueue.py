"""Kueue's manager on the dev cluster: built from source, run as a local process.

:meth:`DevKueue.start` applies the release's CRDs (server-side), writes a
Kueue ``Configuration`` (webhook server, metrics and health probes on
127.0.0.1 free ports, leader election off, internal cert management off, the
Ray integrations on) and a serving certificate from the dev CA valid for
127.0.0.1, starts ``kueue --config=... --kubeconfig=...`` in a session of its
own, waits for its ``/readyz``, then applies the webhook configurations
rewritten to ``url: https://127.0.0.1:PORT/...`` (see :mod:`.kueue_manifests`)
and waits until they answer: a dry-run ClusterQueue is admitted, and a dry-run
RayJob with a queue-name label comes back suspended by Kueue's defaulting
webhook. :meth:`DevKueue.stop` deletes those webhook configurations (they are
``failurePolicy: Fail``: left behind, they would refuse every RayJob once Kueue
is gone) and stops the process by its recorded PID, after checking the PID
still runs our command line.

Kueue v0.17.0 with internal cert management off reads the metrics server's
certificate from a fixed path, ``/etc/kueue/metrics/certs/tls.{crt,key}``
(``cmd/kueue/main.go``), and exits when it is missing. Rather than writing a
key into /etc, the manager runs in a private mount namespace (``unshare
--mount``) where this cluster's certificate directory is bind-mounted there;
on the host only the empty mount point is created. That needs root (or
CAP_SYS_ADMIN), as this machine and CI have.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace
from pydantic import BaseModel

from rayscale import procs
from rayscale.devcluster import kueue_build
from rayscale.devcluster.certs import issue_serving_cert
from rayscale.devcluster.cluster import DevCluster
from rayscale.devcluster.kueue_manifests import (
    MUTATING,
    VALIDATING,
    WEBHOOK_CONFIG_NAMES,
    configuration,
    crds,
    webhook_configurations,
)
from rayscale.ports import free_port

NAMESPACE = "kueue-system"
#: where Kueue v0.17.0 reads its metrics certificate when it manages no certificates
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
#: run in the new mount namespace: bind $1 onto $2, then exec the manager
_LAUNCH = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
_FIELD_MANAGER = "rayscale-dev-kueue"
_NO_PROXY = urllib.request.ProxyHandler({})
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

ClusterQueue = create_global_resource("kueue.x-k8s.io", "v1beta2", "ClusterQueue",
                                      "clusterqueues")
_RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")


class KueueProc(BaseModel):
    """The manager process: its PID, the arguments only it has, and its ports."""

    pid: int
    identity: list[str]
    log: str
    webhook_port: int
    health_port: int
    metrics_port: int


@dataclass
class DevKueue:
    """Kueue for the control plane of ``cluster``; files under ``<state_dir>/kueue``."""

    cluster: DevCluster
    binary: Path | None = None  # default: kueue_build.binary()
    manifests: Path | None = None  # default: kueue_build.config_dir()

    @property
    def dir(self) -> Path:
        return self.cluster.state_dir / "kueue"

    @property
    def cert_dir(self) -> Path:
        return self.dir / "certs"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def log(self) -> Path:
        return self.cluster.logs / "kueue.log"

    @staticmethod
    def alive(proc: KueueProc | None) -> bool:
        """Alive and still ours: every identity argument is on its command line."""
        return proc is not None and procs.runs_with(proc.pid, proc.identity)

    # ------------------------------------------------------------------- start

    def start(self, client: Client, proc: KueueProc | None, deadline: float,
              log: Callable[[str], None] = lambda _: None) -> KueueProc:
        """Install and start Kueue unless ``proc`` runs it; either way wait until its
        webhooks work. A manager this call started is stopped if the start fails."""
        started = None
        if not self.alive(proc):
            proc = self._prepare()
        assert proc is not None
        ca = self.cluster.pki.ca_cert.read_bytes()
        manifests = self.manifests or kueue_build.config_dir()
        try:
            count = self._install_crds(client, manifests, proc.webhook_port, ca, deadline)
            log(f"Kueue CRDs established ({count})")
            if not self.alive(proc):
                started = self._spawn(proc)
            self._wait_ready(proc, started, deadline)
            for doc in webhook_configurations(manifests, proc.webhook_port, ca):
                client.apply(codecs.from_dict(doc), field_manager=_FIELD_MANAGER, force=True)
            _wait(lambda: self._webhooks_work(client, proc), deadline, "Kueue's webhooks",
                  lambda: self._check_running(proc, started))
        except BaseException:
            if started is not None:
                self.stop(client, proc)
            raise
        return proc

    def _prepare(self) -> KueueProc:
        """Fresh ports, the serving certificate and the Configuration file."""
        binary = self.binary or kueue_build.binary()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"no Kueue binary at {binary}: run `bash scripts/build-kueue.sh`")
        if shutil.which("unshare") is None:
            raise RuntimeError("`unshare` (util-linux) is needed to run Kueue")
        try:
            METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(
                f"Kueue v0.17 reads its metrics certificate from {METRICS_CERT_DIR}: the "
                f"empty mount point for it cannot be created ({exc}); create it once as "
                f"root") from None
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        issue_serving_cert(self.cluster.pki, self.cert_dir / "tls.crt",
                           self.cert_dir / "tls.key", "rayscale-kueue-webhook")
        webhook, health, metrics = free_port(), free_port(), free_port()
        config = configuration(NAMESPACE, webhook, self.cert_dir, health, metrics)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        return KueueProc(pid=0, identity=[str(binary), f"--config={self.config_file}"],
                         log=str(self.log), webhook_port=webhook, health_port=health,
                         metrics_port=metrics)

    def _install_crds(self, client: Client, manifests: Path, port: int, ca: bytes,
                      deadline: float) -> int:
        with contextlib.suppress(ApiError):  # exists already
            client.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
        docs = crds(manifests, port, ca)
        for doc in docs:
            client.apply(codecs.from_dict(doc), field_manager=_FIELD_MANAGER, force=True)
        names = [doc["metadata"]["name"] for doc in docs]
        _wait(lambda: all(_established(client, n) for n in names), deadline,
              "Kueue's CRDs to be established")
        return len(names)

    def _spawn(self, proc: KueueProc) -> subprocess.Popen[bytes]:
        binary, config_arg = proc.identity
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", _LAUNCH, "rayscale-kueue",
                str(self.cert_dir), str(METRICS_CERT_DIR),
                binary, config_arg, f"--kubeconfig={self.cluster.kubeconfig}"]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["NO_PROXY"] = "127.0.0.1,localhost"
        env.pop(procs.MARKER, None)
        started = procs.spawn(argv, env, self.log, cwd=self.dir)
        proc.pid = started.pid
        # unshare and sh exec in turn: wait for the manager's own command line
        end = time.monotonic() + 10
        while (procs.cmdline(started.pid)[:1] != [binary] and started.poll() is None
               and time.monotonic() < end):
            time.sleep(0.01)
        return started

    def _check_running(self, proc: KueueProc, started: subprocess.Popen[bytes] | None
                       ) -> None:
        exited = started.poll() is not None if started is not None else not self.alive(proc)
        if exited:
            raise RuntimeError(f"Kueue exited; see {proc.log}\n" + _tail(Path(proc.log)))

    def _wait_ready(self, proc: KueueProc, started: subprocess.Popen[bytes] | None,
                    deadline: float) -> None:
        url = f"http://127.0.0.1:{proc.health_port}/readyz"

        def ready() -> bool:
            try:
                with urllib.request.build_opener(_NO_PROXY).open(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        _wait(ready, deadline, "Kueue's /readyz", lambda: self._check_running(proc, started))

    def _webhooks_work(self, client: Client, proc: KueueProc) -> bool:
        """A dry-run ClusterQueue is admitted, and a dry-run RayJob with a queue name
        comes back suspended (Kueue's defaulting webhook, not an old configuration)."""
        try:
            client.create(ClusterQueue.from_dict(
                {"metadata": {"name": "rayscale-webhook-probe"}, "spec": {}}), dry_run=True)
            job = client.create(_RayJob.from_dict(_probe_rayjob()), namespace="default",
                                dry_run=True)
        except (ApiError, httpx2.HTTPError):
            return False
        spec: dict[str, Any] = job.get("spec") or {}
        return spec.get("suspend") is True

    # -------------------------------------------------------------------- stop

    def stop(self, client: Client | None, proc: KueueProc | None, grace_s: float = 10.0
             ) -> None:
        """Delete the webhook configurations (when the API answers), then stop the
        manager by its PID if it is still ours."""
        if client is not None:
            remove_webhooks(client)
        if self.alive(proc):
            assert proc is not None
            procs.stop_group(proc.pid, grace_s)


def remove_webhooks(client: Client) -> None:
    """Delete the webhook configurations ``start`` applied (by their names)."""
    for kind, res in ((MUTATING, MutatingWebhookConfiguration),
                      (VALIDATING, ValidatingWebhookConfiguration)):
        with contextlib.suppress(ApiError, httpx2.HTTPError):
            client.delete(res, WEBHOOK_CONFIG_NAMES[kind])


def _probe_rayjob() -> dict[str, Any]:
    return {
        "metadata": {"name": "rayscale-webhook-probe", "labels": {QUEUE_LABEL: "probe"}},
        "spec": {
            "entrypoint": "true",
            "shutdownAfterJobFinishes": True,
            "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {}, "template": {
                "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray"}]}}}},
        },
    }


def _established(client: Client, name: str) -> bool:
    try:
        crd = client.get(CustomResourceDefinition, name)
    except ApiError:
        return False
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _wait(check: Callable[[], bool], deadline: float, what: str,
          still_running: Callable[[], None] = lambda: None) -> None:
    while not check():
        still_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


__all__ = ["NAMESPACE", "QUEUE_LABEL", "ClusterQueue", "DevKueue", "KueueProc",
           "remove_webhooks"]
