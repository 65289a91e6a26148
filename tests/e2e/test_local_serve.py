"""Ray Serve in local mode: a RayService file, `rayscale serve deploy`, Serve in status.

One cluster for the module, started from a KubeRay RayService file with
`rayscale up` (head with 0 CPUs, workers of 1 CPU, 0..2 of them, idle 5 s):
its serveConfigV2 runs a two-deployment application (an ingress that calls a
second deployment through a DeploymentHandle) shipped in ``serve_app/`` as
the working_dir, uploaded to the cluster by rayscale. Requests go to the HTTP
address `up` printed, from load generators with a bounded rate and time that
count every failed request.

The tests run in order on the shared cluster: the app and its address, an
in-place ``user_config`` change, a redeploy that fails to import, bad input,
and last Serve autoscaling under a burst (the only test that brings workers).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from rayscale import procs, rayauth
from tests import netcheck
from tests.e2e.conftest import Cluster, _restore_auth, cluster_spec, wait_for, worker_group

pytestmark = pytest.mark.e2e

SERVICE = "svc"
APP_DIR = Path(__file__).parent / "serve_app"
IDLE_S = 5
MAX_WORKERS = 2
BURST_S = 15  # the burst lasts this long at least, and at most BURST_MAX_S
BURST_MAX_S = 60


def greet_app(greeting: str, import_path: str = "rayscale_serve_app:greeter") -> dict[str, Any]:
    # 0 CPUs: the replicas fit on the head (0 CPUs) and need no worker
    return {
        "name": "greet", "route_prefix": "/greet", "import_path": import_path,
        "runtime_env": {"working_dir": str(APP_DIR)},
        "deployments": [
            {"name": "Greeter", "user_config": {"greeting": greeting},
             "ray_actor_options": {"num_cpus": 0}},
            {"name": "Ingress", "ray_actor_options": {"num_cpus": 0}},
        ],
    }


BUSY_APP = {
    "name": "busy", "route_prefix": "/busy", "import_path": "rayscale_serve_app:busy",
    "runtime_env": {"working_dir": str(APP_DIR)},
    "deployments": [{
        "name": "Busy", "max_ongoing_requests": 2,
        "ray_actor_options": {"num_cpus": 1},  # one replica per worker
        "autoscaling_config": {
            "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1,
            "upscale_delay_s": 1, "downscale_delay_s": 5,
            "metrics_interval_s": 0.5, "look_back_period_s": 2,
        },
    }],
}


def service_doc(name: str, apps: list[dict[str, Any]]) -> dict[str, Any]:
    cluster = cluster_spec(name, [worker_group("w", max_replicas=MAX_WORKERS)], idle_s=IDLE_S)
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
        "spec": {"serveConfigV2": yaml.safe_dump({"applications": apps}),
                 "rayClusterConfig": cluster["spec"]},
    }


@dataclass
class Service:
    cluster: Cluster
    root: Path
    url: str = ""
    up: Any = None

    def write(self, name: str, doc: dict[str, Any]) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def deploy(self, config: dict[str, Any], cluster: str = SERVICE, timeout: float = 240
               ) -> Any:
        path = self.write(f"serve-{time.monotonic_ns()}", config)
        return self.cluster.cli("serve", "deploy", cluster, str(path), timeout=timeout,
                                check=False)

    def details(self) -> dict[str, Any]:
        record = self.cluster.dir.load()
        reply = httpx.get(f"{record.dashboard_url}/api/serve/applications/", trust_env=False,
                          headers=rayauth.bearer_headers(record.token_file), timeout=30)
        reply.raise_for_status()
        out: dict[str, Any] = reply.json()
        return out

    def serve_status(self) -> dict[str, Any]:
        serve: dict[str, Any] = self.cluster.status()["serve"]
        return serve

    def get(self, path: str) -> Any:
        reply = httpx.get(self.url + path, timeout=30, trust_env=False)
        assert reply.status_code == 200, (reply.status_code, reply.text[:500])
        return reply.json()


@dataclass
class Load:
    """Requests to ``url`` from ``clients`` threads, at most ``rate`` a second in all, for
    at most ``seconds``; every failed request (error, or a status other than 200) counts."""

    url: str
    rate: float
    seconds: float
    clients: int = 1
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    #: (sent, answered, reply), in seconds since the load started
    replies: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        every = self.clients / self.rate
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not self._stop.is_set() and time.monotonic() < self.started + self.seconds:
                began = time.monotonic()
                try:
                    reply = client.get(self.url)
                    if reply.status_code == 200:
                        with self._lock:
                            self.ok += 1
                            self.replies.append((began - self.started,
                                                 time.monotonic() - self.started, reply.json()))
                    else:
                        self._fail(began, f"{reply.status_code} {reply.text[:200]}")
                except (httpx.HTTPError, ValueError) as exc:
                    self._fail(began, f"{type(exc).__name__}: {exc}")
                self._stop.wait(max(0.0, every - (time.monotonic() - began)))

    def _fail(self, began: float, what: str) -> None:
        with self._lock:
            self.failures.append((round(began - self.started, 2), what))

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def texts(self) -> Counter[str]:
        with self._lock:
            return Counter(str(r.get("text")) for _, _, r in self.replies)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("serve")
    home = root / "home"
    env = {**os.environ, "RAYSCALE_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in rayauth.AUTH_ENV_VARS:
        env.pop(name, None)
    saved_auth = {name: os.environ.get(name) for name in rayauth.AUTH_ENV_VARS}
    service = Service(Cluster(SERVICE, env, home), root)
    try:
        path = service.write(SERVICE, service_doc(SERVICE, [greet_app("hello")]))
        service.up = service.cluster.cli("up", str(path), timeout=480, check=False)
        assert service.up.returncode == 0, f"up failed:\n{service.up.stderr}"
        lines = dict(line.split("=", 1) for line in service.up.stdout.splitlines()
                     if "=" in line)
        service.url = lines["SERVE_HTTP_ADDRESS"]
        service.cluster.driver_env = {**env, **lines}
        yield service
    finally:
        _restore_auth(saved_auth)
        left: list[int] = []
        if service.cluster.dir.exists():
            marker = service.cluster.marker
            service.cluster.cli("down", SERVICE, check=False, timeout=180)
            left = procs.pids_with_marker(marker)
            procs.stop_pids(left)
        assert not left, f"processes left after down: {left}"


def test_a_rayservice_file_runs_a_two_deployment_app_on_the_heads_loopback_address(
    svc: Service,
) -> None:
    record = svc.cluster.dir.load()
    host, port = svc.url.removeprefix("http://").split(":")
    assert host == record.head_ip
    assert f"application greet is RUNNING at {svc.url}/greet" in svc.up.stderr
    # the ingress calls the second deployment through its handle
    reply = svc.get("/greet?who=ray")
    assert reply["text"] == "hello ray"
    # status: the application and both deployments, as Serve reports them now
    serve = svc.serve_status()
    assert serve["http"] == svc.url and serve["proxy"] == "answering"
    assert serve["proxy_location"] == "HeadOnly"
    app = serve["applications"]["greet"]
    assert app["status"] == "RUNNING" and app["routed"] is True
    assert {name: (d["status"], d["replicas"]) for name, d in app["deployments"].items()} == {
        "Greeter": ("HEALTHY", {"RUNNING": 1}), "Ingress": ("HEALTHY", {"RUNNING": 1})}
    text = svc.cluster.cli("status", SERVICE, "--json").stdout
    assert json.loads(text)["state"] == "running"
    table = svc.cluster.cli("status", SERVICE).stdout
    assert "Serve applications" in table and "greet" in table
    # Serve's HTTP proxy listens on the head's loopback address and nowhere else
    serving = [s for s in netcheck.listeners(netcheck.cluster_processes(record.id))
               if s.port == int(port) and s.proto.startswith("tcp")]
    assert serving and all(s.ip == record.head_ip for s in serving), serving


def test_a_user_config_change_applies_in_place_without_a_failed_request(svc: Service) -> None:
    before = svc.get("/greet?who=a")
    load = Load(svc.url + "/greet?who=x", rate=20, seconds=60).start()
    try:
        wait_for(lambda: load.ok >= 5, 30, "requests before the change")
        deployed = svc.deploy({"applications": [greet_app("bonjour")]})
        assert deployed.returncode == 0, deployed.stderr
        assert deployed.stdout.strip() == f"SERVE_HTTP_ADDRESS={svc.url}"  # same address
        wait_for(lambda: load.texts()["bonjour x"] >= 5, 30, "the new greeting")
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert set(load.texts()) == {"hello x", "bonjour x"}
    # in place: the same replicas, reconfigured (no new process)
    after = svc.get("/greet?who=a")
    assert after["text"] == "bonjour a"
    assert (after["greeter_pid"], after["ingress_pid"]) == (
        before["greeter_pid"], before["ingress_pid"])
    assert svc.serve_status()["applications"]["greet"]["status"] == "RUNNING"


def test_a_redeploy_that_fails_to_import_leaves_the_old_version_serving_and_says_why(
    svc: Service,
) -> None:
    serving = svc.get("/greet?who=x")["text"]
    broken = service_doc(SERVICE, [greet_app("bonjour", "rayscale_serve_broken:greeter")])
    load = Load(svc.url + "/greet?who=x", rate=10, seconds=90).start()
    try:
        # `up` of the RayService again, same rayClusterConfig: serveConfigV2 in place
        up = svc.cluster.cli("up", str(svc.write("broken", broken)), timeout=240, check=False)
        assert up.returncode == 1, up.stderr
        assert "applying serveConfigV2 in place" in up.stderr
        assert "application greet is DEPLOY_FAILED: ImportError: rayscale_serve_broken " \
               "cannot be imported (on purpose)" in up.stderr
        status = svc.cluster.cli("status", SERVICE, "--json", check=False)
        assert status.returncode == 0  # the cluster is fine; its application is not
        app = json.loads(status.stdout)["serve"]["applications"]["greet"]
        assert app["status"] == "DEPLOY_FAILED"
        assert "ImportError: rayscale_serve_broken cannot be imported" in app["reason"]
        assert "Traceback" in app["message"]  # Serve's whole message is in the JSON
        assert app["routed"] is True  # the proxy still routes the old version
        served = load.ok
        wait_for(lambda: load.ok >= served + 10, 30, "requests after the failed deploy")
    finally:
        load.stop()
    # the previous version's replicas answered throughout
    assert load.failures == [], load.failures[:5]
    assert set(load.texts()) == {serving}
    # a good config again (a RayService file works for `serve deploy` too)
    fixed = svc.deploy(service_doc(SERVICE, [greet_app("bonjour")]))
    assert fixed.returncode == 0, fixed.stderr
    assert svc.get("/greet?who=x")["text"] == "bonjour x"
    assert svc.serve_status()["applications"]["greet"]["status"] == "RUNNING"


def test_bad_input_is_refused_naming_the_field_and_changes_nothing(svc: Service) -> None:
    before = svc.details()["applications"]["greet"]["last_deployed_time_s"]
    record = svc.cluster.dir.serve_file.read_text()

    def refused(config: dict[str, Any], field_path: str, cluster: str = SERVICE,
                code: int = 2) -> str:
        out = svc.deploy(config, cluster=cluster)
        assert out.returncode == code, out.stderr
        assert field_path in out.stderr, out.stderr
        assert out.stdout == ""
        return str(out.stderr)

    good = {"applications": [greet_app("bonjour")]}
    refused(good, "no cluster named 'nope'", cluster="nope", code=1)
    no_import = {"applications": [{k: v for k, v in greet_app("x").items()
                                   if k != "import_path"}]}
    refused(no_import, "applications[0].import_path: required")
    both = {"applications": [{**greet_app("x"), "deployments": [
        {"name": "Greeter", "num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}]}]}
    refused(both, "applications[0].deployments[0].num_replicas: give num_replicas or "
                  "autoscaling_config")
    refused({**good, "grpc_options": {"grpc_servicer_functions": ["a.b:add"]}},
            "grpc_options.grpc_servicer_functions: ")
    port = int(svc.url.rsplit(":", 1)[1])
    refused({**good, "http_options": {"port": port + 1}},
            f"http_options.port: Serve already listens on port {port}")
    missing = {"applications": [{**greet_app("x"), "runtime_env": {"working_dir": "nowhere"}}]}
    refused(missing, "applications[0].runtime_env.working_dir: no such file or directory")
    # Ray Serve's own schema, checked before anything is sent
    refused({"applications": [{**greet_app("x"), "deployments": [
        {"name": "Greeter", "max_queued_requests": "many"}]}]},
        "applications[0].deployments[0].max_queued_requests")
    # a RayService whose serveConfigV2 is wrong starts no cluster
    bad = service_doc("svc2", [{k: v for k, v in greet_app("x").items()
                                if k != "import_path"}])
    up = svc.cluster.cli("up", str(svc.write("svc2", bad)), check=False, timeout=120)
    assert up.returncode == 2, up.stderr
    assert "serveConfigV2.applications[0].import_path: required" in up.stderr
    assert not (svc.cluster.home / "clusters" / "svc2").exists()
    # nothing changed
    assert svc.details()["applications"]["greet"]["last_deployed_time_s"] == before
    assert svc.cluster.dir.serve_file.read_text() == record
    assert svc.get("/greet?who=x")["text"] == "bonjour x"


@dataclass
class Sample:
    at: float  # time.time()
    workers: int  # running + pending in group w
    replicas: dict[str, list[str]]  # node IP -> states of the replicas there
    proxies: list[str]  # node IPs of Serve's proxies


def _watch(svc: Service, stop: threading.Event, samples: list[Sample]) -> None:
    while not stop.is_set():
        try:
            group = svc.cluster.group("w")
            details = svc.details()
            replicas: dict[str, list[str]] = {}
            for app in details["applications"].values():
                for d in app["deployments"].values():
                    for r in d["replicas"]:
                        replicas.setdefault(r.get("node_ip") or "?", []).append(r["state"])
            proxies = [p["node_ip"] for p in details["proxies"].values()]
            samples.append(Sample(time.time(), group["running"] + group["pending"], replicas,
                                  proxies))
        except Exception:  # a look that failed: the next one counts
            pass
        stop.wait(0.5)


def test_serve_autoscaling_adds_workers_for_a_burst_and_removes_them_after(
    svc: Service,
) -> None:
    deployed = svc.deploy({"applications": [greet_app("bonjour"), BUSY_APP]})
    assert deployed.returncode == 0, deployed.stderr  # its min replica brought a worker
    record = svc.cluster.dir.load()
    first_node = svc.get("/busy")["node"]
    first_ip = next(ip for ip in _busy_replicas(svc) if ip != record.head_ip)
    stop, samples = threading.Event(), list[Sample]()
    watcher = threading.Thread(target=_watch, args=(svc, stop, samples), daemon=True)
    watcher.start()
    burst = light = None
    try:
        burst_at = time.time()
        burst = Load(svc.url + "/busy", rate=16, seconds=BURST_MAX_S, clients=8).start()
        # at least BURST_S, and until a replica on a new worker answered
        wait_for(lambda: burst is not None and burst.elapsed >= BURST_S and any(
            reply["node"] != first_node for _, _, reply in list(burst.replies)),
            BURST_MAX_S, "a replica on a new worker answering the burst")
        burst.stop()
        # then a light load, through the scale-down
        light = Load(svc.url + "/busy", rate=1, seconds=90).start()
        wait_for(lambda: svc.cluster.group("w")["running"] == 1
                 and sum(len(s) for s in _busy_replicas(svc).values()) == 1, 80,
                 "the burst's replicas and worker gone")
        light.stop()
    finally:
        stop.set()
        watcher.join(timeout=30)
        for load in (burst, light):
            if load is not None:
                load.stop()
    assert burst is not None and light is not None
    assert burst.failures == [] and light.failures == [], (burst.failures[:5],
                                                            light.failures[:5])
    # the burst brought a second worker, and its replica served
    answered_new = [done for _, done, reply in burst.replies if reply["node"] != first_node]
    assert answered_new, "no replica on a new node served the burst"
    peak = max(s.workers for s in samples)
    assert peak == MAX_WORKERS, [s.workers for s in samples]  # never more than maxReplicas
    events = svc.cluster.events()
    launched = [e for e in events if e["kind"] == "launch" and e.get("group") == "w"]
    stopped = [e for e in events if e["kind"] == "stop" and e.get("reason") == "idle"]
    assert len(launched) >= 2 and stopped, events[-20:]
    # no worker was stopped while it hosted a replica; no proxy ever ran on a worker
    ips = {n.id: n.ip for n in svc.cluster.dir.indexed_nodes()}
    for event in stopped:
        before = [s for s in samples if s.at < event["ts"]]
        assert before, "no sample before the stop"
        assert ips[event["node"]] not in before[-1].replicas, (event, before[-1])
    assert all(set(s.proxies) == {record.head_ip} for s in samples)
    # the figures (docs/serve.md), printed with -s
    running_new = next((s.at - burst_at for s in samples if s.at >= burst_at and any(
        ip not in (first_ip, record.head_ip) and "RUNNING" in states
        for ip, states in s.replicas.items())), -1.0)
    timeline = ", ".join(f"{e['kind']} {e.get('node', '')} +{e['ts'] - burst_at:.1f} s"
                         for e in events if e["ts"] >= burst_at
                         and e["kind"] in ("launch", "registered", "stop"))
    took = max(done for _, done, _ in burst.replies)
    print(f"\nburst: {burst.ok} requests in {took:.1f} s ({burst.ok / took:.1f}/s), 0 failed; "
          f"a new node's replica RUNNING by +{running_new:.1f} s (sampled), first answer "
          f"from it +{min(answered_new):.1f} s; light load {light.ok} requests, 0 failed; "
          f"peak workers {peak}; {timeline}")


def _busy_replicas(svc: Service) -> dict[str, list[str]]:
    deployment = svc.details()["applications"]["busy"]["deployments"]["Busy"]
    out: dict[str, list[str]] = {}
    for r in deployment["replicas"]:
        out.setdefault(r.get("node_ip") or "?", []).append(r["state"])
    return out
