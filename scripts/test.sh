#!/usr/bin/env bash
# Install everything, then lint, type-check and run every test (real Ray).
# The tests run in a network namespace with loopback only (scripts/loopback-only.sh):
# nothing they start can send a packet off this machine. Installing and building
# need the package registries, so they run before, outside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Go builds (the dev Kubernetes control plane and kubectl, ~9 min cold; helm for
# the chart's tests, ~5 min cold; Kueue for tests/k8s/test_kueue.py; all no-ops once
# built on this machine) run while pip installs, which mostly waits on downloads.
builds="$(mktemp -d)"
# on a failed install, stop the builds still running (jobs -p: only this shell's live jobs)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$builds"' EXIT
bash scripts/build-k8s.sh > "$builds/k8s.log" 2>&1 & k8s=$!
bash scripts/build-helm.sh > "$builds/helm.log" 2>&1 & helm=$!
bash scripts/build-kueue.sh > "$builds/kueue.log" 2>&1 & kueue=$!
bash scripts/install.sh
for build in k8s helm kueue; do
  if ! wait "${!build}"; then
    cat "$builds/$build.log" >&2
    echo "test.sh: the $build build failed (its log is above)" >&2
    exit 1
  fi
  cat "$builds/$build.log"
done
rm -rf "$builds"; trap - EXIT
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
exec bash scripts/loopback-only.sh .venv/bin/python -m pytest -q --durations=30 "$@"
