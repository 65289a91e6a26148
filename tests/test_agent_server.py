"""Ray's node daemons forked by the node's server (local/agent_server.py, agent_stub.py).

A real server and real stubs run here, in a child process that plays the node (the
server stops with it). The daemons are a small script instead of Ray's agents;
Ray's own agents forked on real nodes are what the e2e tests run (the default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rayscale import procs

DAEMON = textwrap.dedent("""\
    import json, os, signal, sys, time
    what = sys.argv[1]
    if what == "term":  # before the line the test waits for: its SIGTERM comes right after
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv,
                      "probe": os.environ.get("PROBE"), "cwd": os.getcwd(),
                      "socket_env": "RAYSCALE_AGENT_SOCKET" in os.environ,
                      "main": __name__}), flush=True)
    if what == "exit":
        sys.exit(int(sys.argv[2]))
    time.sleep(60)
""")

NODE = textwrap.dedent("""\
    import json, os, signal, subprocess, sys, time
    from rayscale.local import agent_server
    home, daemon, other = sys.argv[1:4]
    stub = agent_server.start(home, scripts=frozenset({daemon}))
    result = {"stub": stub, "mode": os.stat(home).st_mode & 0o777}
    env = {**os.environ, "PROBE": "yes"}

    done = subprocess.run([stub, "-u", daemon, "exit", "7"], env=env, cwd="/",
                          capture_output=True, text=True, timeout=30)
    result["forked"] = [done.returncode, json.loads(done.stdout)]

    done = subprocess.run([stub, "-u", other, "exit", "0"], env=env,
                          capture_output=True, text=True, timeout=30)
    result["other"] = [done.returncode, json.loads(done.stdout)]
    proc = subprocess.Popen([stub, "-u", other, "exit", "0"], env=env,
                            stdout=subprocess.PIPE, text=True)
    result["other_pid"] = [proc.pid, json.loads(proc.stdout.readline())["pid"]]
    proc.wait(30)

    proc = subprocess.Popen([stub, "-u", daemon, "term"], env=env,
                            stdout=subprocess.PIPE, text=True)
    json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    result["term"] = proc.wait(30)

    proc = subprocess.Popen([stub, "-u", daemon, "sleep"], env=env,
                            stdout=subprocess.PIPE, text=True)
    result["left_running"] = json.loads(proc.stdout.readline())["pid"]
    print(json.dumps(result), flush=True)
    os._exit(0)  # the node ends: the server stops what it forked
""")


def _run_node(tmp_path: Path) -> dict[str, object]:
    daemon, other = tmp_path / "daemon.py", tmp_path / "other.py"
    daemon.write_text(DAEMON)
    other.write_text(DAEMON)
    node = subprocess.run(
        [sys.executable, "-c", NODE, str(tmp_path / "node"), str(daemon), str(other)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert node.returncode == 0, node.stderr
    result: dict[str, object] = json.loads(node.stdout.splitlines()[-1])
    return result


def test_a_daemon_is_forked_with_its_arguments_environment_streams_and_exit_code(
        tmp_path: Path) -> None:
    result = _run_node(tmp_path)
    assert result["mode"] == 0o700
    code, seen = result["forked"]  # type: ignore[misc]
    assert code == 7  # the stub ends as the daemon did
    assert seen["argv"] == [str(tmp_path / "daemon.py"), "exit", "7"]
    assert seen["main"] == "__main__" and seen["probe"] == "yes" and seen["cwd"] == "/"
    assert not seen["socket_env"]  # rayscale's own variable is not passed on
    # a script not in the list runs in a real Python, in the stub's own process
    code, seen = result["other"]  # type: ignore[misc]
    assert code == 0 and seen["argv"] == [str(tmp_path / "other.py"), "exit", "0"]
    launched, reported = result["other_pid"]  # type: ignore[misc]
    assert launched == reported
    assert result["term"] == 3  # SIGTERM to the stub reached the daemon's handler


def test_the_server_stops_what_it_forked_when_its_node_ends(tmp_path: Path) -> None:
    result = _run_node(tmp_path)
    pid = result["left_running"]
    assert isinstance(pid, int)
    deadline = time.monotonic() + 10
    while procs.is_alive(pid):
        assert time.monotonic() < deadline, "the forked daemon outlived its node"
        time.sleep(0.1)


def test_a_stub_without_a_server_runs_the_real_python(tmp_path: Path) -> None:
    from rayscale.local import agent_stub

    stub = tmp_path / "python"
    stub.write_text(f"#!{sys.executable} -IS\n" + Path(agent_stub.__file__).read_text())
    stub.chmod(0o700)
    env = {**os.environ, agent_stub.SOCKET_ENV: str(tmp_path / "missing.sock")}
    done = subprocess.run([str(stub), "-u", "-c", "import sys; print(sys.argv)"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "['-c']"
    assert signal.SIGTERM in agent_stub.FORWARDED_SIGNALS


def test_a_python_path_the_kernel_would_split_is_not_used_for_the_stub() -> None:
    from rayscale.local.agent_server import _shebang_safe

    assert _shebang_safe(sys.executable)
    assert not _shebang_safe("/home/me/my envs/bin/python")
    assert not _shebang_safe("/x" * 120)
