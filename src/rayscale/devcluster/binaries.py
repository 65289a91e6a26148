"""Where the control-plane binaries live, and building them when they are missing.

They are built from source by ``scripts/build-k8s.sh`` (through the Go module
proxy) into ``~/.cache/rayscale/k8s/bin`` (outside the work tree, so every clone on
a machine shares one build); ``RAYSCALE_K8S_CACHE`` moves the cache root and
``RAYSCALE_K8S_BIN`` points at binaries elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-k8s.sh"


def bin_dir() -> Path:
    env = os.environ.get("RAYSCALE_K8S_BIN")
    if env:
        return Path(env)
    return cache_root() / "bin"


def cache_root() -> Path:
    """The same default as scripts/build-k8s.sh."""
    return build_cache("RAYSCALE_K8S_CACHE", "k8s")


def build_cache(variable: str, name: str) -> Path:
    """A build's cache: ``$variable``, else ``${XDG_CACHE_HOME:-~/.cache}/rayscale/NAME``
    (what the scripts/build-*.sh scripts use)."""
    explicit = os.environ.get(variable)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rayscale" / name


def missing(directory: Path | None = None) -> list[str]:
    d = directory or bin_dir()
    return [c for c in COMPONENTS if not os.access(d / c, os.X_OK)]


def can_build() -> str | None:
    """None when a build is possible here, else the reason it is not."""
    if not BUILD_SCRIPT.exists():
        return f"{BUILD_SCRIPT} not found (not a source checkout)"
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        return "no Go toolchain (go) to build the control plane from source"
    return None


def ensure_built(log: Path | None = None) -> Path:
    """The binary directory, running the (idempotent) build script if anything is missing."""
    d = bin_dir()
    if not missing(d):
        return d
    reason = can_build()
    if reason:
        raise RuntimeError(f"control-plane binaries missing in {d}: {reason}")
    if log is None:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=out,
                           stderr=subprocess.STDOUT)
    still = missing(d)
    if still:
        raise RuntimeError(f"build finished but {', '.join(still)} missing in {d}")
    return d
