#!/usr/bin/env bash
# Build Kueue's manager from source through the Go module proxy, once per machine,
# for `rayscale dev-cluster up --with-kueue` and tests/k8s/test_kueue.py: the
# binary sigs.k8s.io/kueue/cmd/kueue from the wrapper module in kueue/, plus the
# release's CRDs and webhook configuration, copied from the same module version
# (config/components/crd and config/components/webhook in the module zip: the
# proxy is the only source reachable, so no release YAML is downloaded).
#
# Output: $RAYSCALE_KUEUE_CACHE/bin/kueue and $RAYSCALE_KUEUE_CACHE/config/
# (default ~/.cache/rayscale/kueue: outside the work tree, so a fresh clone on
# the same machine reuses it). Idempotent: a stamp keyed on the pinned version,
# kueue/go.mod, kueue/go.sum, this script and the Go version makes a second run
# a no-op. Concurrent runs serialise on a lock file (the test fixture calls this
# script too). Runs under `nice -n 10`. Cold: about 8.5 minutes on 2 cores (504 s
# measured, module downloads included, beside other work); a stamp hit 0.03 s.
#
# Environment:
#   RAYSCALE_KUEUE_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/rayscale/kueue)
#   GO                    go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#   GOMODCACHE/GOCACHE    honoured when set; otherwise kept under the cache root
#   (GOFLAGS is set to -mod=readonly: go.mod and go.sum are used as committed)
#   FORCE=1               rebuild even if the stamp matches
set -euo pipefail

# Pinned version. kueue/go.mod must agree (the script checks). Its client
# libraries are k8s 1.35 against the dev cluster's 1.34 API server, which
# Kubernetes' version skew policy allows.
KUEUE_VERSION="v0.17.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODDIR="$ROOT/kueue"
CACHE="${RAYSCALE_KUEUE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rayscale/kueue}"
BIN="$CACHE/bin"
CONFIG="$CACHE/config"
STAMP="$BIN/.stamp"

if [[ -z "${GO:-}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "build-kueue: no Go toolchain found (set GO=/path/to/go)" >&2; exit 2
  fi
fi

export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gocache}"
export CGO_ENABLED=0
# go.mod and go.sum as committed: a build never rewrites them (-mod=readonly, Go's default)
export GOFLAGS=-mod=readonly
mkdir -p "$BIN" "$GOMODCACHE" "$GOCACHE"

grep -q "sigs.k8s.io/kueue $KUEUE_VERSION" "$MODDIR/go.mod" \
  || { echo "build-kueue: kueue/go.mod does not pin sigs.k8s.io/kueue $KUEUE_VERSION" >&2; exit 2; }

stamp_key() {
  {
    echo "kueue=$KUEUE_VERSION"
    "$GO" version
    cat "$MODDIR/go.mod" "$MODDIR/go.sum" "$0"
  } | sha256sum | cut -d' ' -f1
}

built() {
  [[ -x "$BIN/kueue" ]] && [[ -f "$CONFIG/webhook/manifests.yaml" ]] \
    && compgen -G "$CONFIG/crd/bases/*.yaml" >/dev/null
}

exec 9>"$CACHE/build.lock"
flock 9

KEY="$(stamp_key)"
if [[ "${FORCE:-0}" != 1 ]] && built && [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$KEY" ]]; then
  echo "build-kueue: up to date in $BIN (kueue $KUEUE_VERSION)"
  exit 0
fi

echo "build-kueue: building kueue $KUEUE_VERSION into $BIN with $("$GO" version)"
start=$(date +%s)

tmp="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$MODDIR"

# The release's manifests, from the module source at the pinned version (the
# go.sum-verified zip in GOMODCACHE).
"$GO" mod download sigs.k8s.io/kueue
src="$("$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kueue)"
[[ -n "$src" && -d "$src/config/components/crd/bases" ]] \
  || { echo "build-kueue: no module source for sigs.k8s.io/kueue $KUEUE_VERSION" >&2; exit 1; }
mkdir -p "$tmp/config/crd/bases" "$tmp/config/webhook"
cp "$src/config/components/crd/bases/"*.yaml "$tmp/config/crd/bases/"
cp -r "$src/config/components/crd/patches" "$src/config/components/crd/kustomization.yaml" "$tmp/config/crd/"
cp "$src/config/components/webhook/manifests.yaml" "$src/config/components/webhook/kustomization.yaml" \
  "$tmp/config/webhook/"
chmod -R u+w "$tmp/config"

ldflags="-s -w"
ldflags+=" -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
ldflags+=" -X sigs.k8s.io/kueue/pkg/version.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
nice -n 10 "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/kueue" sigs.k8s.io/kueue/cmd/kueue

rm -rf "$CONFIG"
mv "$tmp/config" "$CONFIG"
mv -f "$tmp/kueue" "$BIN/kueue"
echo "$KEY" > "$STAMP"
echo "$(( $(date +%s) - start ))" > "$CACHE/build-seconds"
echo "build-kueue: built kueue $KUEUE_VERSION in $(( $(date +%s) - start ))s"
