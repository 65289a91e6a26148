#!/usr/bin/env bash
# Install rayscale and its development tools into .venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,data,train,tune,serve]'
.venv/bin/python -c "import rayscale" 

# Debian packages the tests run for real: redis-server (GCS fault tolerance),
# chromium (the `rayscale ui` page in a real headless browser, driven by playwright),
# prometheus (/usr/bin/prometheus and promtool: the dashboards' queries, file_sd).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then apt=(apt-get); else apt=(sudo -n apt-get); fi
  echo "installing Debian packages: ${missing[*]}" >&2
  # Their services must not start: Debian's prometheus would listen on 0.0.0.0:9090 (the
  # tests start their own, on loopback). invoke-rc.d and deb-systemd-invoke ask
  # /usr/sbin/policy-rc.d; where there is none, one that denies every start is put there
  # for the install and removed after it (an existing one, e.g. Docker's, is left as is).
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    if [ "$(id -u)" -eq 0 ]; then sh=(sh -c); else sh=(sudo -n sh -c); fi
    "${sh[@]}" "printf '#!/bin/sh\\n# rayscale install.sh: no service starts during this install\\nexit 101\\n' > $policy && chmod 755 $policy"
    trap '"${sh[@]}" "rm -f $policy"' EXIT
  fi
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
