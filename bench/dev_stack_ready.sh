#!/bin/bash
# Time from `rayscale dev-cluster up --with-operator` (a fresh RAYSCALE_HOME: PKI included) to
# a ready RayCluster (`helm install` of deploy/helm/ray-cluster with seed 000's values) and to
# the end of the seeds' 2-task job on it. Stops everything it started (`dev-cluster down`).
# Run it without a network: bash scripts/loopback-only.sh bash bench/dev_stack_ready.sh
# Needs scripts/build-k8s.sh and scripts/build-helm.sh built. PYTHON defaults to .venv/bin/python.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
HELM=${HELM:-${RAYSCALE_HELM_CACHE:-$HOME/.cache/rayscale/helm}/bin/helm}
export RAYSCALE_HOME=$(mktemp -d /tmp/rs-dev-stack-bench.XXXX) RAY_USAGE_STATS_ENABLED=0
export HELM_CONFIG_HOME=$RAYSCALE_HOME/helm/config HELM_CACHE_HOME=$RAYSCALE_HOME/helm/cache \
    HELM_DATA_HOME=$RAYSCALE_HOME/helm/data
now() { date +%s.%N; }
t0=$(now)
eval "$("$PY" -m rayscale.cli.main dev-cluster up --with-operator | grep ^export)"
t1=$(now)
trap '"$PY" -m rayscale.cli.main dev-cluster down >/dev/null; rm -rf "$RAYSCALE_HOME"' EXIT
kubectl create namespace raycluster >/dev/null
"$HELM" install myfirst-ray-cluster deploy/helm/ray-cluster -n raycluster \
    -f tests/k8s/operator/data/ray-cluster-chart/seed-000-values.yaml >/dev/null
get() { kubectl get raycluster -n raycluster myfirst-ray-cluster -o jsonpath="{$1}"; }
until [ "$(get .status.state)" = ready ]; do sleep 0.2; done
t2=$(now)
RAY_AUTH_MODE=disabled "$PY" - "http://$(get .status.head.podIP):$(get .status.endpoints.dashboard)" <<'PYEOF'
import shlex, sys, time
from ray.job_submission import JobSubmissionClient
code = """import ray, socket, time
ray.init()
@ray.remote(num_cpus=1)
def get_task_hostname():
    time.sleep(1)
    return socket.gethostbyname(socket.gethostname())
print(ray.get([get_task_hostname.remote() for _ in range(2)]))
"""
deadline = time.time() + 300
while True:  # the dashboard answers, then its job agent: retry both
    try:
        client = JobSubmissionClient(sys.argv[1])
        job = client.submit_job(entrypoint=shlex.join(["python", "-c", code]))
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.5)
while not client.get_job_status(job).is_terminal():
    time.sleep(0.5)
print("job", client.get_job_status(job), client.get_job_logs(job).strip().splitlines()[-1])
PYEOF
t3=$(now)
kubectl get pods -n raycluster -o wide
printf 'up --with-operator %.1f s; + helm install -> RayCluster ready %.1f s (%.1f s total); + 2-task job done: %.1f s total\n' \
    "$(echo "$t1-$t0" | bc)" "$(echo "$t2-$t1" | bc)" "$(echo "$t2-$t0" | bc)" "$(echo "$t3-$t0" | bc)"
