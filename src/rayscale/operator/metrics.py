"""Prometheus metrics of the operator (names start with rayscale_operator_)."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rayscale.autoscaler.metrics import serve_metrics


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter("rayscale_operator_reconciles", "RayCluster reconciles",
                                  registry=self.registry)
        self.errors = Counter("rayscale_operator_errors", "Reconciles that failed on an API error",
                              registry=self.registry)
        self.reconcile_seconds = Histogram(
            "rayscale_operator_reconcile_duration_seconds", "Time of one reconcile",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=self.registry,
        )
        self.api_requests = Counter(
            "rayscale_operator_api_requests", "Kubernetes API requests the operator made "
            "(watches count when they start)", ["verb", "resource"], registry=self.registry)
        self.pods_created = Counter("rayscale_operator_pods_created", "Pods created",
                                    registry=self.registry)
        self.pods_deleted = Counter("rayscale_operator_pods_deleted", "Pods deleted",
                                    registry=self.registry)
        self.clusters = Gauge("rayscale_operator_clusters", "RayClusters by state", ["state"],
                              registry=self.registry)

    def set_states(self, states: dict[str, str]) -> None:
        tally = Tally(states.values())
        for state in {"ready", "provisioning", "suspended", "failed", *tally}:
            self.clusters.labels(state).set(tally.get(state, 0))

    def serve(self, host: str, port: int) -> int:
        # not prometheus_client's server: it asks DNS for the name of a pod IP
        server = serve_metrics(self.registry, host, port)
        bound: int = server.server_address[1]
        return bound
