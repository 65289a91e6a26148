#!/usr/bin/env bash
# The main job: install, then run the seeds' workload on a local cluster that
# scales up for it and back down after the idle timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python examples/demo.py
