#!/usr/bin/env bash
# Build helm from source through the Go module proxy, once per machine, for the
# chart's tests (tests/k8s/operator/test_helm_rbac.py): `go install
# helm.sh/helm/v3/cmd/helm@HELM_VERSION` with the ldflags of helm's Makefile (its
# version, and the Kubernetes version `helm lint`/`template` assume: 1.<client-go
# minor> instead of v1.20), niced, into $RAYSCALE_HELM_CACHE/bin (default
# ~/.cache/rayscale/helm/bin). Idempotent: a binary that reports HELM_VERSION is
# kept. Concurrent runs serialise on the cache's lock file (the test fixture
# calls this script too). Cold: about 5 minutes on 2 cores.
#
# Environment:
#   RAYSCALE_HELM_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/rayscale/helm)
#   GO                   go binary (default: `go` on PATH, else /usr/local/go/bin/go)
set -euo pipefail

HELM_VERSION="v3.21.4"
HELM_CLIENT_GO_MINOR="36"  # helm v3.21.4 requires k8s.io/client-go v0.36.x

CACHE="${RAYSCALE_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rayscale/helm}"
BIN="$CACHE/bin"
HELM="$BIN/helm"

if [[ -z "${GO:-}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "build-helm: no Go toolchain found (set GO=/path/to/go)" >&2; exit 2
  fi
fi

built() { [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; }

mkdir -p "$BIN"
exec 9>"$CACHE/.lock"
flock 9
if built; then
  echo "build-helm: up to date in $BIN (helm $HELM_VERSION)"
  exit 0
fi

pkg=helm.sh/helm/v3
ldflags="-w -s -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.gitTreeState=clean"
for where in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $pkg/$where.k8sVersionMajor=1 -X $pkg/$where.k8sVersionMinor=$HELM_CLIENT_GO_MINOR"
done

echo "build-helm: building helm $HELM_VERSION into $BIN with $("$GO" version)"
start=$(date +%s)
cd "$CACHE"
GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  nice -n 10 "$GO" install -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION"
echo "$(( $(date +%s) - start ))" > "$CACHE/build-seconds"
built || { echo "build-helm: $HELM does not report $HELM_VERSION" >&2; exit 1; }
echo "build-helm: built helm $HELM_VERSION in $(( $(date +%s) - start ))s"
