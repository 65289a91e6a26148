"""`rayscale dev-cluster bin-dir`: where build-k8s.sh puts the binaries (kubectl included)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rayscale.cli.main import app


def test_bin_dir_prints_the_binaries_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kubectl").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "kubectl", 0o755)
    monkeypatch.setenv("RAYSCALE_K8S_BIN", str(tmp_path))
    out = CliRunner().invoke(app, ["dev-cluster", "bin-dir"])
    assert out.exit_code == 0
    assert out.stdout.strip() == str(tmp_path)
    assert "no kubectl" not in out.stderr


def test_bin_dir_follows_the_cache_root_and_warns_without_kubectl(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYSCALE_K8S_BIN", raising=False)
    monkeypatch.setenv("RAYSCALE_K8S_CACHE", str(tmp_path))
    out = CliRunner().invoke(app, ["dev-cluster", "bin-dir"])
    assert out.exit_code == 0
    assert out.stdout.strip() == str(tmp_path / "bin")   # the same default as build-k8s.sh
    assert "scripts/build-k8s.sh" in out.stderr
