"""Ray's token authentication on local clusters: on by default, off only when asked.

Clients without the token (a driver, `ray job submit`, a raw GCS client, plain
HTTP) are refused; with the lines `rayscale up` printed they work; the token
never shows up in what rayscale writes or prints.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rayscale import rayauth
from tests.e2e.conftest import Cluster, cluster_spec, worker_group

pytestmark = pytest.mark.e2e

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

GCS_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.autoscaler.v2.sdk import get_cluster_resource_state
try:
    state = get_cluster_resource_state(GcsClient(address=sys.argv[1]))
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
else:
    print("NODES", len(state.node_states))
"""

DRIVER = """
import ray
from rayscale.driver import connect
connect()
print("SUM", sum(ray.get([ray.remote(lambda x: x * 2).remote(i) for i in range(3)])))
"""


def _without_auth(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in rayauth.AUTH_ENV_VARS}


def _run(
    argv: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def _http_status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _ray_job_submit(cluster: Cluster, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    ray_cli = str(Path(sys.executable).with_name("ray"))
    argv = [ray_cli, "job", "submit", "--address", cluster.driver_env["RAY_API_SERVER_ADDRESS"],
            "--", sys.executable, "-c", "print('JOB RAN')"]
    return _run(argv, env, timeout=180)


def test_token_auth_is_on_by_default_and_refuses_clients_without_it(
    start_cluster: Any,
) -> None:
    cluster = start_cluster(cluster_spec("authon", [worker_group("w", max_replicas=1)]))
    token_file = Path(cluster.driver_env["RAY_AUTH_TOKEN_PATH"])
    assert cluster.driver_env["RAY_AUTH_MODE"] == "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.parent == cluster.dir.root
    token = rayauth.read_token(token_file)
    assert len(token) == 64

    # with the printed lines: a driver runs tasks (a worker is launched for them)
    ok = _run([sys.executable, "-c", DRIVER], cluster.driver_env, timeout=240)
    assert ok.returncode == 0 and "SUM 6" in ok.stdout, ok.stderr[-2000:]

    # without them: the same driver is refused
    refused = _run([sys.executable, "-c", DRIVER], _without_auth(cluster.driver_env))
    assert refused.returncode != 0
    assert "AuthenticationError" in refused.stderr or "Unauthenticated" in refused.stderr, \
        refused.stderr[-2000:]

    # a raw GCS client: refused without the token, answered with it
    address = cluster.driver_env["RAY_ADDRESS"]
    no_token = _run([sys.executable, "-c", GCS_PROBE, address], _without_auth(cluster.driver_env))
    assert "REFUSED AuthenticationError" in no_token.stdout, no_token.stdout + no_token.stderr
    wrong = {**_without_auth(cluster.driver_env), "RAY_AUTH_MODE": "token",
             "RAY_AUTH_TOKEN": "0" * 64}
    assert "REFUSED" in _run([sys.executable, "-c", GCS_PROBE, address], wrong).stdout
    with_token = _run([sys.executable, "-c", GCS_PROBE, address], cluster.driver_env)
    assert "NODES" in with_token.stdout, with_token.stdout + with_token.stderr

    # the dashboard's HTTP API: 401 without, 200 with the bearer token
    dashboard = cluster.driver_env["RAY_API_SERVER_ADDRESS"]
    assert _http_status(f"{dashboard}/api/jobs/") == 401
    assert _http_status(f"{dashboard}/api/jobs/", rayauth.bearer_headers(token_file)) == 200

    # Ray's own `ray job submit`: refused without, runs with the printed lines
    job_refused = _ray_job_submit(cluster, _without_auth(cluster.driver_env))
    assert job_refused.returncode != 0 and "JOB RAN" not in job_refused.stdout
    job_ok = _ray_job_submit(cluster, cluster.driver_env)
    assert job_ok.returncode == 0 and "JOB RAN" in job_ok.stdout, job_ok.stderr[-2000:]

    # `ray status` with the printed lines
    ray_cli = str(Path(sys.executable).with_name("ray"))
    ray_status = _run([ray_cli, "status", "--address", address], cluster.driver_env)
    assert ray_status.returncode == 0 and "Node status" in ray_status.stdout, ray_status.stderr
    assert _run([ray_cli, "status", "--address", address],
                _without_auth(cluster.driver_env)).returncode != 0

    # rayscale's own clients use the token: submit, and the autoscaler (it scaled up above)
    submitted = cluster.cli("submit", cluster.name, "--", sys.executable, "-c", "print('VIA RS')",
                            timeout=180, check=False)
    assert submitted.returncode == 0 and "VIA RS" in submitted.stdout, submitted.stderr
    assert cluster.events("registered"), "the autoscaler launched no worker"

    # `rayscale token` prints it, for the dashboard's sign-in
    assert cluster.cli("token", cluster.name).stdout.strip() == token

    # the token never appears in status, the event log, the record or our logs
    status = cluster.cli("status", cluster.name, "--json").stdout
    assert json.loads(status)["name"] == cluster.name
    assert token not in status
    assert token not in cluster.cli("status", cluster.name).stdout
    written = [p for p in cluster.dir.root.rglob("*") if p.is_file() and p != token_file]
    assert any(p.name == "autoscaler.log" for p in written)
    for path in written:
        assert token not in path.read_text(errors="replace"), f"token written to {path}"
    # what rayscale writes is the user's only: dirs 0700, files 0600
    for path in [cluster.home, cluster.dir.root, *cluster.dir.root.rglob("*")]:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, f"{path} is {path.stat().st_mode:o}"
    session_logs = Path(cluster.dir.load().temp_dir)
    assert stat.S_IMODE(session_logs.parent.stat().st_mode) == 0o700
    for path in session_logs.rglob("*.log"):
        assert token not in path.read_text(errors="replace"), f"token in Ray's log {path}"


def test_auth_off_only_when_asked_and_then_with_a_warning(start_cluster: Any) -> None:
    spec = cluster_spec("authoff", [worker_group("w", max_replicas=1)])
    spec["spec"]["authOptions"] = {"mode": "disabled"}
    cluster = start_cluster(spec)
    assert cluster.driver_env["RAY_AUTH_MODE"] == "disabled"
    assert "RAY_AUTH_TOKEN_PATH" not in cluster.driver_env
    assert cluster.token_file is None and not cluster.dir.token_file.exists()
    address = cluster.driver_env["RAY_ADDRESS"]
    plain = {**_without_auth(cluster.driver_env), "RAY_AUTH_MODE": "disabled"}
    probe = _run([sys.executable, "-c", GCS_PROBE, address], plain)
    assert "NODES" in probe.stdout, probe.stdout + probe.stderr
    token_cmd = cluster.cli("token", cluster.name, check=False)
    assert token_cmd.returncode == 1 and "without token authentication" in token_cmd.stderr

    # the flag does the same, and says so
    flagged = start_cluster(cluster_spec("flagged", [worker_group("w")]), "--no-auth")
    assert "token authentication is OFF" in flagged.up_stderr
    assert flagged.driver_env["RAY_AUTH_MODE"] == "disabled" and flagged.token_file is None
