#!/usr/bin/env bash
# Install everything, then lint, type-check and run every test (real Ray).
# The tests run in a network namespace with loopback only (scripts/loopback-only.sh):
# nothing they start can send a packet off this machine. Installing and building
# need the package registries, so they run before, outside it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# the dev Kubernetes control plane, built from source once per machine (cold: ~9 min)
bash scripts/build-k8s.sh
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
exec bash scripts/loopback-only.sh .venv/bin/python -m pytest -q --durations=30 "$@"
