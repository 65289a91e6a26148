"""Prometheus metrics of the autoscaler (names start with rayscale_, base units).

Counters are exported with ``_total`` (prometheus_client adds it). Every
labelled series the autoscaler knows of at start (each worker group with each
state and reason it can count, each demand kind, each hold reason) is created
at 0 by :meth:`AutoscalerMetrics.know_groups`, so a dashboard panel has a
series from the first scrape rather than from the first event (a
``rate()`` of a counter that appears with its first increment misses that
increment). deploy/grafana's dashboards query these names;
tests/test_dashboards.py checks that each name they use is exported here.

:func:`serve_metrics` serves a registry's ``/metrics`` on exactly the address it
is given (never a wildcard by default) and, unlike prometheus_client's
``start_http_server``, makes no DNS query: Python's ``HTTPServer.server_bind``
asks ``socket.getfqdn(host)``, a reverse lookup that goes to the resolver in
``/etc/resolv.conf`` for any address ``/etc/hosts`` does not name, which is
every ``127.x.y.z`` but ``127.0.0.1``.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import MetricsHandler

from rayscale.planner.plan import REASON_ORDER

NODE_STATES = ("running", "pending", "terminating")
#: what `rayscale_pending_demand`, `_infeasible_demand` and `_capped_demand` count
DEMAND_KINDS = ("tasks", "gangs", "floor")
#: why a node is stopped: the plan's reasons (idle, over_max, unneeded_pending), a
#: launch that never registered, a suspended group
TERMINATION_REASONS = ("idle", "over_max", "unneeded_pending", "launch_failed", "suspended")
#: what keeps a group from launching for capped demand (the plan's ``limited``; a
#: quota's name is left out of the label)
LIMIT_KINDS = ("max", "max_nodes", "conservative", "backoff", "quota")
#: why a round launched and stopped nothing
HOLD_REASONS = ("gcs_unreachable", "recovering", "provider_unreachable")


class AutoscalerMetrics:
    """One registry per autoscaler, so tests can run several in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.nodes = Gauge(
            "rayscale_nodes", "Worker nodes by group and state (running, pending, terminating)",
            ["group", "state"], registry=self.registry,
        )
        self.pending_demand = Gauge(
            "rayscale_pending_demand", "Pending demand from Ray by kind (tasks, gangs, floor)",
            ["kind"], registry=self.registry,
        )
        self.infeasible_demand = Gauge(
            "rayscale_infeasible_demand", "Demand no group could ever hold, by kind",
            ["kind"], registry=self.registry,
        )
        self.capped_demand = Gauge(
            "rayscale_capped_demand", "Demand a group could hold but that maxReplicas, "
            "maxNodes, Conservative mode, a quota or a backoff keep from being launched now, "
            "by kind",
            ["kind"], registry=self.registry,
        )
        self.launches = Counter(
            "rayscale_launches", "Nodes launched, by group and reason",
            ["group", "reason"], registry=self.registry,
        )
        self.terminations = Counter(
            "rayscale_terminations", "Nodes stopped, by group and reason",
            ["group", "reason"], registry=self.registry,
        )
        self.failed_launches = Counter(
            "rayscale_failed_launches", "Launches that did not register in time, by group",
            ["group"], registry=self.registry,
        )
        self.drain_rejections = Counter(
            "rayscale_drain_rejections", "Drains Ray refused because the node was busy",
            ["group"], registry=self.registry,
        )
        self.plan_seconds = Histogram(
            "rayscale_planner_duration_seconds", "Time the planner took per decision",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.change_rounds = Counter(
            "rayscale_change_rounds", "Rounds run early because a look between rounds found "
            "new demand or a node change", registry=self.registry,
        )
        self.loop_seconds = Histogram(
            "rayscale_loop_duration_seconds", "Time of one observe-plan-act round",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.gcs_reachable = Gauge(
            "rayscale_gcs_reachable", "1 while the head's GCS answers, 0 while unreachable",
            registry=self.registry,
        )
        self.gcs_reachable.set(1)
        self.holding = Gauge(
            "rayscale_scaling_held", "1 while no node is launched or stopped: the GCS is "
            "unreachable, or back after an outage and its nodes are re-registering",
            registry=self.registry,
        )
        self.held_rounds = Counter(
            "rayscale_held_rounds", "Rounds that launched and stopped nothing, by reason "
            "(gcs_unreachable, recovering, provider_unreachable)", ["reason"],
            registry=self.registry,
        )
        self.provider_reachable = Gauge(
            "rayscale_provider_reachable", "1 while the node provider (the Kubernetes API "
            "server; locally the process table) can be read, 0 while it cannot",
            registry=self.registry,
        )
        self.provider_reachable.set(1)
        self.provider_outages = Counter(
            "rayscale_provider_outages", "Times the node provider became unreadable",
            registry=self.registry,
        )
        self.gcs_outages = Counter(
            "rayscale_gcs_outages", "Times the head's GCS became unreachable",
            registry=self.registry,
        )
        self.head_restarts = Counter(
            "rayscale_head_restarts", "Head processes restarted (local mode, GCS fault "
            "tolerance)", registry=self.registry,
        )
        self.backoff = Gauge(
            "rayscale_group_backoff", "1 while a group is not launchable after a failure",
            ["group"], registry=self.registry,
        )
        self.limited = Gauge(
            "rayscale_group_limited", "1 while capped demand waits on this group's limit "
            "(max, max_nodes, conservative, backoff, quota)", ["group", "limit"],
            registry=self.registry,
        )
        self.backoffs = Counter(
            "rayscale_backoffs", "Backoffs started after a failed launch, by group (failures "
            "during a backoff do not start another)", ["group"], registry=self.registry,
        )
        self._groups: set[str] = set()
        for kind in DEMAND_KINDS:
            for gauge in (self.pending_demand, self.infeasible_demand, self.capped_demand):
                gauge.labels(kind)
        for reason in HOLD_REASONS:
            self.held_rounds.labels(reason)

    def know_groups(self, groups: Iterable[str]) -> None:
        """Create every series of these worker groups at 0 (those not known yet).

        A group that left the spec loses its gauges (its counters stay: they
        count what happened).
        """
        wanted = set(groups)
        for group in sorted(wanted - self._groups):
            for state in NODE_STATES:
                self.nodes.labels(group, state)
            for reason in REASON_ORDER:
                self.launches.labels(group, reason)
            for reason in TERMINATION_REASONS:
                self.terminations.labels(group, reason)
            self.failed_launches.labels(group)
            self.drain_rejections.labels(group)
            self.backoffs.labels(group)
            self.backoff.labels(group)
            for limit in LIMIT_KINDS:
                self.limited.labels(group, limit)
        for group in sorted(self._groups - wanted):
            for state in NODE_STATES:
                self.nodes.remove(group, state)
            self.backoff.remove(group)
            for limit in LIMIT_KINDS:
                self.limited.remove(group, limit)
        self._groups = wanted

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (port 0: any); return the port."""
        return serve_metrics(self.registry, host, port).server_address[1]


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind would set server_name = socket.getfqdn(host): a
        # reverse DNS query that leaves the machine. Nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> _MetricsServer:
    """Serve ``registry`` on ``host:port`` (port 0: any free one) from a daemon thread.

    ``host`` is an IP address (v4 or v6). The returned server's
    ``server_address[1]`` is the bound port; ``shutdown()`` stops it.
    """
    cls = _MetricsServer6 if ":" in host else _MetricsServer
    server = cls((host, port), MetricsHandler.factory(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
