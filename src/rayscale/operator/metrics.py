"""Prometheus metrics of the operator (names start with rayscale_operator_).

The RayJob series are KubeRay's (``kuberay_job_info``,
``kuberay_job_deployment_status``, ``kuberay_job_execution_duration_seconds``)
under rayscale's prefix, kept per RayJob by the RayJob controller and removed
when the RayJob is gone. So are the RayCluster series (``kuberay_cluster_info``,
``kuberay_cluster_condition_provisioned``,
``kuberay_cluster_provisioned_duration_seconds``, with KubeRay's labels), kept
per RayCluster by the reconciler and removed with it.
"""

from __future__ import annotations

import threading
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
        self.job_info = Gauge(
            "rayscale_operator_job_info", "RayJobs the operator knows (1 each)",
            ["name", "namespace"], registry=self.registry)
        self.job_deployment_status = Gauge(
            "rayscale_operator_job_deployment_status",
            "1 for the RayJob's current status.jobDeploymentStatus",
            ["name", "namespace", "deployment_status"], registry=self.registry)
        self.job_execution_duration_seconds = Gauge(
            "rayscale_operator_job_execution_duration_seconds",
            "Seconds from the RayJob's status.startTime (Initializing) to the status it "
            "reached: Complete, Failed, or Retrying (failed, backoffLimit left); retry_count "
            "is status.failed before it", ["name", "namespace", "job_deployment_status",
                                            "retry_count"], registry=self.registry)
        self.cluster_info = Gauge(
            "rayscale_operator_cluster_info", "RayClusters the operator knows (1 each); "
            "owner_kind: the CRD that made it (None, RayJob, RayService: its "
            "ray.io/originated-from-crd label)", ["name", "namespace", "uid", "owner_kind"],
            registry=self.registry)
        self.cluster_condition_provisioned = Gauge(
            "rayscale_operator_cluster_condition_provisioned",
            "1 per RayCluster; condition: whether its RayClusterProvisioned condition is "
            "true (every pod ran and was ready once)", ["name", "namespace", "uid", "condition"],
            registry=self.registry)
        self.cluster_provisioned_duration_seconds = Gauge(
            "rayscale_operator_cluster_provisioned_duration_seconds",
            "Seconds from the RayCluster's creation until RayClusterProvisioned became true",
            ["name", "namespace", "uid"], registry=self.registry)
        self._clusters_lock = threading.Lock()
        # (namespace, name): the label values of each of its series
        self._cluster_series: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...],
                                                         tuple[str, ...] | None]] = {}
        self._jobs_lock = threading.Lock()
        self._job_status: dict[tuple[str, str], str] = {}  # (namespace, name): its label
        self._job_runs: dict[tuple[str, str], set[tuple[str, str]]] = {}  # duration labels

        self.set_states({})  # every state's series at 0 from the start

    def set_cluster(self, namespace: str, name: str, uid: str, owner_kind: str,
                    provisioned: bool, provisioned_after_s: float | None) -> None:
        """The RayCluster exists; whether it is provisioned and how long that took."""
        info = (name, namespace, uid, owner_kind)
        condition = (name, namespace, uid, "true" if provisioned else "false")
        duration = (name, namespace, uid) if provisioned_after_s is not None else None
        key = (namespace, name)
        with self._clusters_lock:
            before = self._cluster_series.get(key)
            if before is not None:
                self._remove_cluster(before, keep=(info, condition, duration))
            self._cluster_series[key] = (info, condition, duration)
            self.cluster_info.labels(*info).set(1)
            self.cluster_condition_provisioned.labels(*condition).set(1)
            if duration is not None and provisioned_after_s is not None:
                self.cluster_provisioned_duration_seconds.labels(*duration).set(
                    provisioned_after_s)

    def forget_cluster(self, namespace: str, name: str) -> None:
        """The RayCluster is gone: every series of it removed."""
        with self._clusters_lock:
            before = self._cluster_series.pop((namespace, name), None)
            if before is not None:
                self._remove_cluster(before, keep=(None, None, None))

    def _remove_cluster(self, series: tuple[tuple[str, ...], tuple[str, ...],
                                            tuple[str, ...] | None],
                        keep: tuple[tuple[str, ...] | None, ...]) -> None:
        gauges = (self.cluster_info, self.cluster_condition_provisioned,
                  self.cluster_provisioned_duration_seconds)
        for gauge, labels, kept in zip(gauges, series, keep, strict=True):
            if labels is not None and labels != kept:
                gauge.remove(*labels)

    def set_states(self, states: dict[str, str]) -> None:
        tally = Tally(states.values())
        for state in {"ready", "provisioning", "suspended", "failed", *tally}:
            self.clusters.labels(state).set(tally.get(state, 0))

    def set_job(self, namespace: str, name: str, deployment_status: str) -> None:
        """The RayJob exists, with this jobDeploymentStatus (its only status series)."""
        key = (namespace, name)
        with self._jobs_lock:
            before = self._job_status.get(key)
            if before is not None and before != deployment_status:
                self.job_deployment_status.remove(name, namespace, before)
            self._job_status[key] = deployment_status
            self.job_info.labels(name, namespace).set(1)
            self.job_deployment_status.labels(name, namespace, deployment_status).set(1)

    def observe_job_execution(self, namespace: str, name: str, deployment_status: str,
                              retry_count: int, seconds: float) -> None:
        with self._jobs_lock:
            labels = (deployment_status, str(retry_count))
            self._job_runs.setdefault((namespace, name), set()).add(labels)
            self.job_execution_duration_seconds.labels(name, namespace, *labels).set(seconds)

    def forget_job(self, namespace: str, name: str) -> None:
        """The RayJob is gone: every series of it removed."""
        key = (namespace, name)
        with self._jobs_lock:
            status = self._job_status.pop(key, None)
            if status is None and key not in self._job_runs:
                return
            if status is not None:
                self.job_info.remove(name, namespace)
                self.job_deployment_status.remove(name, namespace, status)
            for labels in self._job_runs.pop(key, set()):
                self.job_execution_duration_seconds.remove(name, namespace, *labels)

    def serve(self, host: str, port: int) -> int:
        # not prometheus_client's server: it asks DNS for the name of a pod IP
        server = serve_metrics(self.registry, host, port)
        bound: int = server.server_address[1]
        return bound
