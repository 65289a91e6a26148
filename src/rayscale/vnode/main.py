"""Run a virtual node: shared by ``rayscale vnode`` and ``python -m rayscale.vnode``.

The CLI resolves a dev cluster's kubeconfig by name; this module only needs
the kubeconfig path, so the vnode does not depend on the dev cluster or the CLI.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rayscale.paths import rayscale_home
from rayscale.vnode.config import load_config
from rayscale.vnode.server import serve


def run_vnode(
    kubeconfig: Path,
    config: Path | None = None,
    name: str | None = None,
    state_dir: Path | None = None,
    pod_cidr: str | None = None,
    fake_run: bool = False,
    verbose: bool = False,
) -> None:
    """Serve the vnode described by ``config`` (with overrides) until stopped."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    cfg = load_config(config)
    updates: dict[str, object] = {}
    if name:
        updates["name"] = name
    if pod_cidr:
        updates["pod_cidr"] = pod_cidr
    if fake_run:
        updates["fake_run"] = True
    if updates:
        cfg = cfg.model_validate({**cfg.model_dump(), **updates})
    serve(cfg, kubeconfig, state_dir or rayscale_home() / "vnode" / cfg.name)


def main(argv: list[str] | None = None) -> None:
    """``python -m rayscale.vnode --kubeconfig PATH [...]``."""
    parser = argparse.ArgumentParser(prog="python -m rayscale.vnode", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--name")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--pod-cidr")
    parser.add_argument("--fake-run", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    run_vnode(args.kubeconfig, args.config, args.name, args.state_dir, args.pod_cidr,
              args.fake_run, args.verbose)
