"""Prometheus metrics of the autoscaler (names start with rayscale_, base units)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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
        self.loop_seconds = Histogram(
            "rayscale_loop_duration_seconds", "Time of one observe-plan-act round",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.backoff = Gauge(
            "rayscale_group_backoff", "1 while a group is not launchable after a failure",
            ["group"], registry=self.registry,
        )

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (port 0: any); return the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        bound: int = server.server_address[1]
        return bound
