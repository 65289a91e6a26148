#!/usr/bin/env bash
# Build the dev-cluster control plane from source through the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes)
# and etcd (go.etcd.io/etcd/server/v3), from the wrapper module in k8s/; plus
# kubectl (k8s.io/kubernetes/cmd/kubectl) at the same release, for the docs'
# `kubectl apply` walkthroughs (the dev cluster itself does not need it).
#
# Output: $RAYSCALE_K8S_CACHE/bin (default ~/.cache/rayscale/k8s/bin: outside the
# work tree, so a fresh clone on the same machine, such as CI's, reuses it).
# Idempotent: a stamp file keyed on the pinned versions, k8s/go.mod, k8s/go.sum
# and the Go version makes a second run a no-op. Concurrent runs serialise on a
# lock file. A cold build takes tens of minutes on 2 cores; it runs under
# `nice -n 10` so other work keeps its CPU share.
#
# Environment:
#   RAYSCALE_K8S_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/rayscale/k8s)
#   GO                  go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#   GOMODCACHE/GOCACHE  honoured when set; otherwise kept under the cache root
#   FORCE=1             rebuild even if the stamp matches
set -euo pipefail

# Pinned versions. k8s/go.mod must agree (the script checks).
K8S_VERSION="v1.34.4"
STAGING_VERSION="v0.34.4"
ETCD_VERSION="v3.6.4"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODDIR="$ROOT/k8s"
CACHE="${RAYSCALE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rayscale/k8s}"
BIN="$CACHE/bin"
STAMP="$BIN/.stamp"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

if [[ -z "${GO:-}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "build-k8s: no Go toolchain found (set GO=/path/to/go)" >&2; exit 2
  fi
fi

export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gocache}"
export CGO_ENABLED=0
mkdir -p "$BIN" "$GOMODCACHE" "$GOCACHE"

grep -q "k8s.io/kubernetes $K8S_VERSION" "$MODDIR/go.mod" \
  || { echo "build-k8s: k8s/go.mod does not pin k8s.io/kubernetes $K8S_VERSION" >&2; exit 2; }
grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$MODDIR/go.mod" \
  || { echo "build-k8s: k8s/go.mod does not pin etcd $ETCD_VERSION" >&2; exit 2; }

stamp_key() {
  {
    echo "k8s=$K8S_VERSION staging=$STAGING_VERSION etcd=$ETCD_VERSION"
    "$GO" version
    cat "$MODDIR/go.mod" "$MODDIR/go.sum" "$0"
  } | sha256sum | cut -d' ' -f1
}

all_built() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

exec 9>"$CACHE/build.lock"
flock 9

KEY="$(stamp_key)"
if [[ "${FORCE:-0}" != 1 ]] && all_built && [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$KEY" ]]; then
  echo "build-k8s: up to date in $BIN (k8s $K8S_VERSION, etcd $ETCD_VERSION)"
  exit 0
fi

echo "build-k8s: building k8s $K8S_VERSION + etcd $ETCD_VERSION into $BIN with $("$GO" version)"
start=$(date +%s)

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kv=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kv+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kv+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
LDFLAGS="-s -w$kv"

tmp="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$MODDIR"
nice -n 10 "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
nice -n 10 "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3

for b in "${BINARIES[@]}"; do mv -f "$tmp/$b" "$BIN/$b"; done
echo "$KEY" > "$STAMP"
echo "build-k8s: built ${BINARIES[*]} in $(( $(date +%s) - start ))s"
