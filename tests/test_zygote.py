"""The zygote (local/zygote.py): one process that imported Ray forks a child per node.

Real Ray is imported; the children here run `ray --version` (nothing is started).
Nodes started through it on a real cluster are the e2e tests' (the default).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rayscale import procs
from rayscale.local.zygote_client import Zygote, ZygoteError, mode, wanted


def test_the_setting_is_on_by_default_and_a_bad_value_names_it() -> None:
    assert wanted({}) and wanted({"RAYSCALE_ZYGOTE": "1"}) and wanted({"RAYSCALE_ZYGOTE": "on"})
    assert not wanted({"RAYSCALE_ZYGOTE": "0"}) and not wanted({"RAYSCALE_ZYGOTE": "false"})
    assert mode({}) == "all" and mode({"RAYSCALE_ZYGOTE": "1"}) == "all"
    assert mode({"RAYSCALE_ZYGOTE": "nodes"}) == "nodes" and wanted({"RAYSCALE_ZYGOTE": "nodes"})
    assert mode({"RAYSCALE_ZYGOTE": "off"}) == "off"
    with pytest.raises(ValueError, match="RAYSCALE_ZYGOTE='maybe'"):
        wanted({"RAYSCALE_ZYGOTE": "maybe"})


def test_a_child_runs_ray_in_a_session_of_its_own_and_the_zygote_has_one_thread(
        tmp_path: Path) -> None:
    env = {**os.environ, procs.MARKER: "zygote-test"}
    zygote = Zygote(env, tmp_path / "zygote.log")
    try:
        log = tmp_path / "child.log"
        pid, started = zygote.spawn(["--version"], {"RAYSCALE_TEST_NODE": "x"}, log)
        # forking is safe only from one thread: a Ray (numpy, pyarrow) upgrade that
        # starts threads at import shows here first
        assert zygote.ready.get("threads") == 1
        assert pid > 0 and started > 0
        deadline = time.monotonic() + 30
        while procs.is_alive(pid) and procs.start_time(pid) == started:
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        assert "version" in log.read_text()
        assert log.stat().st_mode & 0o777 == 0o600
        second, _ = zygote.spawn(["--version"], {}, tmp_path / "second.log")
        assert second != pid
    finally:
        zygote.close()
    assert zygote.proc.returncode == 0  # its input ended: it exits by itself
    with pytest.raises(ZygoteError):
        zygote.spawn(["--version"], {}, tmp_path / "late.log")
