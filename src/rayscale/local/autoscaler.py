"""The autoscaler of one local cluster: its loop wired to the local provider and state dir.

`rayscale up` starts ``rayscale autoscaler --cluster NAME`` in the background,
which builds its loop here. With GCS fault tolerance (``rayscale up --ha``) it
also keeps the head: before each round :class:`HeadKeeper` checks the head's
process and starts a new head on the same address, ports and store when it
died (the loop holds scaling meanwhile: autoscaler/headwatch.py).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from rayscale import ports, procs, rayauth
from rayscale.api import RayCluster
from rayscale.autoscaler.events import EventLog, ScalingEvent
from rayscale.autoscaler.loop import Autoscaler, LoopOptions
from rayscale.autoscaler.metrics import AutoscalerMetrics
from rayscale.autoscaler.recorder import HistoryRecorder
from rayscale.local.cluster import ClusterError, restart_head
from rayscale.local.pacing import parallel_starts
from rayscale.local.provider import LocalProvider
from rayscale.local.scrape import ScrapeFile
from rayscale.local.store import ClusterDir
from rayscale.local.zygote_client import mode as zygote_mode
from rayscale.observe.memory import DashboardMemoryProbe
from rayscale.observe.ray_state import RayObserver
from rayscale.spec import load_cluster_spec

log = logging.getLogger("rayscale.autoscaler")


class HeadKeeper:
    """Starts a new head when the head process of an HA cluster has died.

    It watches from a thread of its own (every ``every_s``), so a round blocked
    on a GCS that is gone (up to the observation deadline) does not delay the
    restart; the loop asks :meth:`why_unusable` before each round. ``lock``
    serializes writes of the cluster record with the provider's.
    """

    def __init__(self, spec: RayCluster, cdir: ClusterDir, events: EventLog,
                 metrics: AutoscalerMetrics, lock: threading.Lock,
                 every_s: float = 0.2) -> None:
        self.spec = spec
        self.cdir = cdir
        self.events = events
        self.metrics = metrics
        self.lock = lock
        self.every_s = every_s
        self.restarting = False
        self._why: str | None = None
        # a restart the loop has not been told of: the new GCS may answer before
        # the loop's next round, which must still count the outage
        self._unseen: str | None = None
        self._stop = threading.Event()

    def start(self) -> HeadKeeper:
        threading.Thread(target=self._run, name="head-keeper", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def why_unusable(self) -> str | None:
        """Why the GCS cannot be used now (the head died, the new one is starting);
        a restart since the last call is reported once even if the GCS is back."""
        why, unseen = self._why, self._unseen
        self._unseen = None
        return why or unseen

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._why = self.check()
            except Exception:  # the keeper must outlive a bad check
                log.exception("checking the head failed")

    def check(self) -> str | None:
        """Restart a dead head; say why the GCS cannot be used now (None: it can)."""
        with self.lock:
            return self._check()

    def _check(self) -> str | None:
        record = self.cdir.load()
        if record.head_pid is None:
            return None
        if procs.is_alive(record.head_pid):
            if self.restarting and not ports.accepts(record.head_ip, record.gcs_port):
                return "the new head's GCS is starting"
            self.restarting = False
            return None
        old = record.head_pid
        try:
            record = restart_head(self.spec, self.cdir)
        except (ClusterError, OSError) as exc:
            self.events.add(ScalingEvent("error", f"restarting the head failed: {exc}"))
            return f"the head process {old} died"
        self.restarting = True
        self._unseen = f"the head process {old} died"
        self.metrics.head_restarts.inc()
        self.events.add(ScalingEvent(
            "head_restart", f"the head process {old} died: started a new head (pid "
            f"{record.head_pid}, restart {record.head_restarts}) on {record.address} "
            "with the same GCS store; workers reconnect to it",
        ))
        return f"the head process {old} died"


def local_autoscaler(cluster: str, options: LoopOptions) -> Autoscaler:
    cdir = ClusterDir(cluster)
    record = cdir.load()
    spec = load_cluster_spec(cdir.spec_copy)
    metrics = AutoscalerMetrics()
    record.metrics_port = metrics.serve(record.head_ip, 0)
    cdir.save(record)
    log.info("autoscaler for %s: metrics on %s:%s", cluster, record.head_ip, record.metrics_port)

    # the history (rayscale ui): a changing round and every event, kept after `down`
    history = HistoryRecorder.open(record.id, cluster, "local", record.created,
                                   record.dashboard_url)
    scrape_file = ScrapeFile(cdir)
    scrape_file.update()  # Prometheus finds the new metrics port at once

    def publish(status: dict[str, Any]) -> None:
        status["metrics"] = f"http://{record.head_ip}:{record.metrics_port}/metrics"
        status["autoscaler_pid"] = os.getpid()
        cdir.write_status(status)
        if history is not None:
            history.on_status(status)
        try:  # Ray's node metrics (when on): a target per node, as nodes come and go
            # (id and status: a paced node gets its export port when it starts)
            scrape_file.update(f'{n["id"]}/{n["status"]}' for n in status["nodes"])
        except OSError as exc:
            log.warning("writing the Prometheus file of %s failed: %r", cluster, exc)

    def echo(event: ScalingEvent) -> None:
        # each event also as a line of the autoscaler's log (`rayscale logs NAME --node
        # autoscaler`) and into the history
        log.info("%s: %s", event.kind, event.message)
        if history is not None:
            history.on_event(event)

    events = EventLog(cdir.events_file, echo=echo)
    starts = zygote_mode()
    provider = LocalProvider(spec, cdir, parallel_starts(), zygote=starts != "off",
                             fork_daemons=starts == "all")
    if spec.worker_groups:
        provider.start_zygote()  # it imports Ray while nothing waits for it
    keeper = HeadKeeper(spec, cdir, events, metrics, provider.record_lock).start() \
        if record.ha else None
    return Autoscaler(
        spec,
        provider,
        RayObserver(record.address),
        head_ip=record.head_ip,
        events=events,
        metrics=metrics,
        options=options,
        memory_probe=DashboardMemoryProbe(
            record.dashboard_url, headers=rayauth.bearer_headers(record.token_file)
        ),
        on_status=publish,
        before_round=keeper.why_unusable if keeper is not None else None,
    )
