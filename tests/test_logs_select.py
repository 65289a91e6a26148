"""`rayscale logs`: --since parsing, line times, file tails, and which files a selection
reads (a cluster directory laid out as `up`, the autoscaler and `down` leave it)."""

from __future__ import annotations

import datetime as dt
import io
import os
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rayscale.cli.main import app
from rayscale.local import logs
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord
from rayscale.logtail import FileTail, line_time, parse_duration, since_lines


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("2.5s", 2.5),
    ("500ms", 0.5), (" 10M ", 600),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "5 m", "-5s", "0s", "1h 30m", "5m3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_line_times() -> None:
    local = dt.datetime(2026, 11, 29, 6, 18, 40, 455000).timestamp()
    assert line_time(b"2026-11-29 06:18:40,455\tINFO scripts.py -- Ray runtime started.") \
        == pytest.approx(local)
    assert line_time(b"2026-11-29 06:18:40,455 INFO autoscaler for x") == pytest.approx(local)
    assert line_time(b"[2026-11-29 06:18:40,455 I 12 12] raylet.cc:1] x") == pytest.approx(local)
    utc = dt.datetime(2026, 11, 29, 6, 18, 40, tzinfo=dt.UTC).timestamp()
    assert line_time(b"2026-11-29T06:18:40.000000000Z hello") == pytest.approx(utc)
    assert line_time(b"2026-11-29T08:18:40+02:00 hello") == pytest.approx(utc)
    for line in (b"hello 2026-11-29 06:18:40", b"Traceback (most recent call last):",
                 b"2026-13-45 06:18:40 not a date", b""):
        assert line_time(line) is None


def _stamp(at: float) -> bytes:
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3].encode()


def test_since_keeps_untimed_lines_unless_surely_old() -> None:
    now = time.time()
    lines = [b"before any time\n", _stamp(now - 120) + b" old\n", b"  old traceback\n",
             _stamp(now - 90) + b" old too\n", b"job output, written when?\n",
             _stamp(now - 10) + b" new\n", b"  new traceback\n"]
    # the untimed line between an old and a new stamp may be new: kept
    assert since_lines(lines, now - 60, recent=True) == lines[4:]
    assert since_lines(lines, now - 60, recent=False) == lines[4:6]
    assert since_lines(lines, None, recent=False) == lines
    # "job started" long ago, its output since: not lost
    job = [_stamp(now - 3600) + b" INFO job_manager.py -- Runtime env is setting up.\n",
           b"printed just now\n"]
    assert since_lines(job, now - 60, recent=True) == job[1:]


def test_file_tail_whole_lines_truncation_and_replacement(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tail = FileTail(path)
    assert tail.read() == []  # not there yet
    path.write_bytes(b"one\ntw")
    assert tail.read() == [b"one\n"]
    with path.open("ab") as f:
        f.write(b"o\nthree")
    assert tail.read() == [b"two\n"]
    assert tail.rest() == [b"three\n"]
    path.write_bytes(b"x\n")  # truncated: read again from the start
    assert tail.read() == [b"x\n"]
    other = tmp_path / "b.log"
    other.write_bytes(b"replaced, longer than before\n")
    os.replace(other, path)  # a new file under the same name
    assert tail.read() == [b"replaced, longer than before\n"]


def test_file_tail_since_skips_files_not_written_since(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_bytes(b"job output without times\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert FileTail(path, since=time.time() - 60).skip_all()
    fresh = FileTail(path, since=old - 1)
    assert not fresh.skip_all() and fresh.read() == [b"job output without times\n"]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClusterDir:
    """A stopped cluster: head, autoscaler, small-0 (running until down), big-1 (scaled
    down), a job's driver log kept by down, a node log without an index line."""
    monkeypatch.setenv("RAYSCALE_HOME", str(tmp_path / "home"))
    cdir = ClusterDir("demo")
    cdir.create()
    temp = tmp_path / "rs" / "abc"
    cdir.save(ClusterRecord(name="demo", id="abc", spec_file="x", slot=10, head_ip="127.10.0.2",
                            gcs_port=1, dashboard_port=2, client_port=3, temp_dir=str(temp),
                            created=0))
    groups = "".join(
        f"  - {{groupName: {g}, maxReplicas: 2, rayStartParams: {{num-cpus: '1'}}, "
        "template: {spec: {containers: [{name: w, image: i}]}}}\n"
        for g in ("small", "big", "spare"))
    cdir.spec_copy.write_text(
        "apiVersion: ray.io/v1\nkind: RayCluster\nmetadata: {name: demo}\nspec:\n"
        "  headGroupSpec: {rayStartParams: {}, template: {spec: {containers: "
        "[{name: h, image: i}]}}}\n  workerGroupSpecs:\n" + groups)
    for node in ("small-0", "big-1"):
        cdir.index_node(NodeRecord(id=node, index=int(node[-1]), group=node.split("-")[0],
                                   ip="127.10.1.2", launched_at=1))
    cdir.save_node(NodeRecord(id="small-0", index=0, group="small", ip="127.10.1.2",
                              launched_at=1, state="started", pid=1))
    for name in ("head", "autoscaler", "small-0", "big-1", "my-grp-3", "zygote"):
        (cdir.logs / f"{name}.log").write_text(f"{name} line 1\n{name} line 2\n")
    (cdir.logs / "jobs").mkdir()
    (cdir.logs / "jobs" / "job-driver-raysubmit_abc.log").write_text("JOB OUTPUT\n")
    ray_logs = temp / "w1" / "session_2026" / "logs"
    ray_logs.mkdir(parents=True)
    (ray_logs / "raylet.out").write_text("raylet says\n")
    (ray_logs / "job-driver-raysubmit_live.log").write_text("LIVE JOB\n")
    return cdir


def _names(cluster: ClusterDir, **selection: object) -> list[str]:
    return [s.name for s in logs.sources(cluster, logs.Selection(**selection))]  # type: ignore[arg-type]


def test_default_is_every_source_in_order(cluster: ClusterDir) -> None:
    assert _names(cluster) == ["head", "autoscaler", "small-0", "big-1", "my-grp-3",
                               "job:raysubmit_abc", "job:raysubmit_live"]
    found = {s.name: s for s in logs.sources(cluster, logs.Selection())}
    assert found["small-0"].running and not found["big-1"].running
    assert found["my-grp-3"].group == "my-grp"  # no index line: the group from the id


def test_selections(cluster: ClusterDir) -> None:
    assert _names(cluster, nodes=("big-1",)) == ["big-1"]
    assert _names(cluster, nodes=("autoscaler", "head")) == ["head", "autoscaler"]
    assert _names(cluster, groups=("big",)) == ["big-1"]
    assert _names(cluster, groups=("headgroup", "small")) == ["head", "small-0"]
    assert _names(cluster, groups=("spare",)) == []  # in the spec, no node launched yet
    assert _names(cluster, jobs=("raysubmit_live",)) == ["job:raysubmit_live"]
    assert _names(cluster, nodes=("big-1",), ray=True) == ["big-1", "big-1/raylet.out"]
    assert logs.Selection(nodes=("big-1",)).single
    assert not logs.Selection(groups=("big",)).single


@pytest.mark.parametrize(("selection", "message"), [
    ({"nodes": ("big-7",)}, "no node 'big-7' in cluster 'demo' (known: autoscaler, big-1, head"),
    ({"groups": ("huge",)}, "no group 'huge' in cluster 'demo' (known: big, headgroup, my-grp"),
    ({"jobs": ("nope",)}, "no job 'nope'"),
])
def test_unknown_names_are_errors(cluster: ClusterDir, selection: dict[str, tuple[str]],
                                  message: str) -> None:
    with pytest.raises(logs.LogsError, match=message.replace("(", r"\(")):
        logs.sources(cluster, logs.Selection(**selection))  # type: ignore[arg-type]


def test_show_prefixes_and_since(cluster: ClusterDir) -> None:
    out = io.BytesIO()
    logs.show(lambda strict: logs.sources(cluster, logs.Selection(groups=("big", "small")),
                                          strict), out, prefix=True)
    assert out.getvalue().decode().splitlines() == [
        "small-0 | small-0 line 1", "small-0 | small-0 line 2",
        "big-1   | big-1 line 1", "big-1   | big-1 line 2"]
    old = time.time() - 3600
    os.utime(cluster.logs / "big-1.log", (old, old))
    out = io.BytesIO()
    logs.show(lambda strict: logs.sources(cluster, logs.Selection(groups=("big", "small")),
                                          strict), out, prefix=False, since=time.time() - 60)
    assert out.getvalue() == b"small-0 line 1\nsmall-0 line 2\n"


def test_follow_shows_new_lines_and_new_nodes(cluster: ClusterDir) -> None:
    out = io.BytesIO()
    done = threading.Event()
    listing = lambda strict: logs.sources(cluster, logs.Selection(groups=("spare",)), strict)  # noqa: E731
    follower = threading.Thread(target=logs.show, args=(listing, out, True),
                                kwargs={"follow": True, "stop": done.is_set})
    follower.start()
    try:
        time.sleep(0.3)
        cluster.index_node(NodeRecord(id="spare-4", index=4, group="spare", ip="x",
                                      launched_at=2))
        (cluster.logs / "spare-4.log").write_text("first\n")
        deadline = time.monotonic() + 5
        while b"first" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        with (cluster.logs / "spare-4.log").open("a") as f:
            f.write("second\n")
        deadline = time.monotonic() + 5
        while b"second" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        follower.join(timeout=5)
    assert out.getvalue() == b"spare-4 | first\nspare-4 | second\n"


def test_cli_errors(cluster: ClusterDir) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["logs", "demo", "--since", "soon"])
    assert bad.exit_code == 2 and "--since" in bad.output and "30s" in bad.output
    missing = runner.invoke(app, ["logs", "nothere"])
    assert missing.exit_code == 1
    listing = runner.invoke(app, ["logs", "demo", "--list"])
    assert listing.exit_code == 0 and "big-1" in listing.output and "stopped" in listing.output


def test_file_tail_reads_big_files_in_pieces(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rayscale.logtail.CHUNK_BYTES", 16)
    path = tmp_path / "big.log"
    now = time.time()
    lines = [_stamp(now - 600) + b" old\n", b"untimed, surely old\n", b"x" * 40 + b"\n",
             _stamp(now - 300) + b" still old\n", b"untimed, maybe new\n",
             _stamp(now - 5) + b" new\n", b"after it\n"]
    path.write_bytes(b"".join(lines))
    tail = FileTail(path, since=now - 60)
    pieces = list(tail.chunks())
    assert len(pieces) > 5 and [x for piece in pieces for x in piece] == lines[4:]
    assert FileTail(path).read() == lines


def test_rayjobs_by_name(cluster: ClusterDir) -> None:
    from rayscale.local.jobs import JobDir, JobRecord
    from rayscale.paths import private_dir

    for name, sid in (("nightly", "raysubmit_abc"), ("weekly", "weekly-1a2b3c")):
        jdir = JobDir(name)
        private_dir(jdir.root)
        jdir.save(JobRecord(name=name, spec_file="x", cluster="demo", owns_cluster=False,
                            submission_id=sid, start_time=1))
    (JobDir("weekly").root / "job.log").write_text("KEPT WITH THE JOB\n")
    assert _names(cluster, jobs=("nightly",)) == ["job:raysubmit_abc"]
    weekly = logs.sources(cluster, logs.Selection(jobs=("weekly",)))
    assert [s.name for s in weekly] == ["job:weekly-1a2b3c"]
    assert weekly[0].path.read_text() == "KEPT WITH THE JOB\n"


def test_tail_is_per_source(cluster: ClusterDir) -> None:
    out = io.BytesIO()
    logs.show(lambda strict: logs.sources(cluster, logs.Selection(groups=("big", "small")),
                                          strict), out, prefix=True, tail_lines=1)
    assert out.getvalue().decode().splitlines() == ["small-0 | small-0 line 2",
                                                    "big-1   | big-1 line 2"]


def test_follow_goes_on_where_a_moved_job_log_left_off(tmp_path: Path) -> None:
    """`down` copies a job's live log out of the temp dir it deletes: no second copy."""
    live, kept = tmp_path / "live.log", tmp_path / "kept.log"
    live.write_text("one\n")
    current = [logs.Source("job:raysubmit_1", live, "job")]
    out = io.BytesIO()
    done = threading.Event()
    follower = threading.Thread(target=logs.show, args=(lambda strict: list(current), out, False),
                                kwargs={"follow": True, "stop": done.is_set})
    follower.start()
    try:
        deadline = time.monotonic() + 5
        while b"one" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        kept.write_text("one\ntwo\n")
        current[:] = [logs.Source("job:raysubmit_1", kept, "job")]
        live.unlink()
        deadline = time.monotonic() + 5
        while b"two" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        follower.join(timeout=5)
    assert out.getvalue() == b"one\ntwo\n"
