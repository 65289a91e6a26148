"""Where Kueue's manager binary and its release manifests live, and building them.

``scripts/build-kueue.sh`` builds ``sigs.k8s.io/kueue/cmd/kueue`` from source
(through the Go module proxy, from the wrapper module in ``kueue/``) into
``~/.cache/rayscale/kueue/bin`` and copies the same release's CRDs and webhook
configuration into ``~/.cache/rayscale/kueue/config``. ``RAYSCALE_KUEUE_CACHE``
moves the cache root (the script honours it too).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from rayscale.devcluster.binaries import REPO_ROOT, build_cache, can_build

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kueue.sh"


def pinned_version() -> str | None:
    """The Kueue release the build script pins (None outside a source checkout)."""
    try:
        found = re.search(r'^KUEUE_VERSION="(v[^"]+)"', BUILD_SCRIPT.read_text(), re.M)
    except OSError:
        return None
    return found[1] if found else None


def cache_root() -> Path:
    """The same default as scripts/build-kueue.sh."""
    return build_cache("RAYSCALE_KUEUE_CACHE", "kueue")


def binary() -> Path:
    return cache_root() / "bin" / "kueue"


def config_dir() -> Path:
    """``crd/bases/*.yaml``, ``crd/kustomization.yaml`` + ``crd/patches/`` and
    ``webhook/manifests.yaml``, as in the release's ``config/components``."""
    return cache_root() / "config"


def built() -> bool:
    return (os.access(binary(), os.X_OK)
            and (config_dir() / "webhook" / "manifests.yaml").exists()
            and any((config_dir() / "crd" / "bases").glob("*.yaml")))


def cannot_build() -> str | None:
    """None when a build is possible here, else the reason it is not."""
    if not BUILD_SCRIPT.exists():
        return f"{BUILD_SCRIPT} not found (not a source checkout)"
    reason = can_build()
    return reason.replace("the control plane", "Kueue") if reason else None


def ensure_built(log: Path | None = None, timeout_s: float | None = None) -> Path:
    """The binary, running the (idempotent, locked) build script if anything is missing."""
    if built():
        return binary()
    reason = cannot_build()
    if reason:
        raise RuntimeError(f"Kueue not built in {cache_root()}: {reason}")
    if log is None:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, timeout=timeout_s)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=out,
                           stderr=subprocess.STDOUT, timeout=timeout_s)
    if not built():
        raise RuntimeError(f"build finished but Kueue is incomplete in {cache_root()}")
    return binary()
