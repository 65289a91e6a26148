"""`rayscale logs NAME` for a local cluster: which files, in which order, followed how.

Sources, in this order (each line prefixed with its source's name when more
than one can show):

- ``head``: the head's `ray start` output (``logs/head.log``);
- ``autoscaler``: rayscale's autoscaler, one line per scaling event too;
- each worker node ever launched, by id (``small-3``), running or stopped:
  its `ray start` output (``logs/<id>.log``); its group comes from
  ``logs/nodes.jsonl``, written at launch, so ``--group`` finds stopped nodes;
- each Ray job (``job:<submission id>``): its driver's log in the node's Ray
  session while the cluster runs, the copy `down` kept afterwards, or, for a
  RayJob run by `rayscale job submit`, the copy kept with the job;
- with ``ray=True``, Ray's own files of the selected head/nodes
  (``small-3/raylet.out``), while their temp dirs exist (until `down`).

Everything under ``clusters/<name>/`` stays after `down` and is removed by the
next `up` of that name.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from rayscale import procs
from rayscale.labels import HEAD_GROUP
from rayscale.local import jobs
from rayscale.local.raylogs import kept_job_logs, live_job_logs, ray_log_files
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord
from rayscale.logtail import FOLLOW_POLL_S, FileTail, prefixed
from rayscale.spec import SpecError, load_cluster_spec

SourceKind = Literal["head", "autoscaler", "node", "job", "ray"]
HEAD, AUTOSCALER = "head", "autoscaler"
#: files in logs/ that are not a worker node's
_NOT_NODES = {HEAD, AUTOSCALER, "zygote"}
_NODE_ID = re.compile(r"^(.+)-(\d+)$")
#: while following, how often the sources are listed again (new nodes, new jobs)
RESCAN_S = 1.0


class LogsError(RuntimeError):
    """A cluster, node, group or job that is not there; the message lists what is."""


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    kind: SourceKind
    group: str | None = None
    #: its process runs (a job: the cluster runs and this is Ray's live file)
    running: bool = False


@dataclass(frozen=True)
class Selection:
    """What to show; empty: every source (Ray's own files only with ``ray``)."""

    nodes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    ray: bool = False

    @property
    def everything(self) -> bool:
        return not (self.nodes or self.groups or self.jobs)

    @property
    def single(self) -> bool:
        """One node or one job: its lines need no prefix (as `kubectl logs POD`)."""
        return len(self.nodes) + len(self.jobs) == 1 and not self.groups and not self.ray


def cluster_dir(name: str) -> ClusterDir:
    cluster = ClusterDir(name)
    if not cluster.exists():
        raise LogsError(
            f"no local cluster named {name!r} (its logs are kept from `rayscale down` until "
            "the next `rayscale up` of that name; a RayJob's own cluster goes with the job: "
            "`rayscale job logs JOB`; a cluster on Kubernetes: add -n NAMESPACE)")
    return cluster


def _nodes(cluster: ClusterDir) -> list[NodeRecord]:
    """Every worker the cluster launched: the index, the live records (a cluster started
    before the index existed) and any node log without either."""
    found = {n.id: n for n in cluster.indexed_nodes()}
    for node in cluster.nodes():
        found.setdefault(node.id, node)
    if cluster.logs.is_dir():
        for path in cluster.logs.glob("*.log"):
            match = _NODE_ID.match(path.stem)
            if path.stem in _NOT_NODES or path.stem in found or match is None:
                continue
            found[path.stem] = NodeRecord(id=path.stem, index=int(match.group(2)),
                                          group=match.group(1), ip="", launched_at=0)
    return sorted(found.values(), key=lambda n: n.index)


def _spec_groups(cluster: ClusterDir) -> list[str]:
    with contextlib.suppress(OSError, SpecError):
        return [g.group_name for g in load_cluster_spec(cluster.spec_copy).worker_groups]
    return []


def _job_logs(cluster: ClusterDir, record: ClusterRecord) -> tuple[dict[str, Path],
                                                                    dict[str, str]]:
    """Submission id → log file of each job of the cluster, and RayJob name → submission id."""
    files = kept_job_logs(cluster)
    files.update(live_job_logs(record))  # the live file while there is one
    aliases = {}
    for job in jobs.all_jobs():
        if job.cluster != cluster.name:
            continue
        aliases[job.name] = job.submission_id
        kept = jobs.JobDir(job.name).log_file
        if job.submission_id not in files and kept.exists():
            files[job.submission_id] = kept
    return files, aliases


def _unknown(what: str, asked: Iterable[str], known: Iterable[str], name: str) -> None:
    missing = [x for x in asked if x not in set(known)]
    if missing:
        listed = ", ".join(sorted(set(known))) or "none"
        raise LogsError(f"no {what} {', '.join(map(repr, missing))} in cluster {name!r} "
                        f"(known: {listed})")


def sources(cluster: ClusterDir, selection: Selection, strict: bool = True) -> list[Source]:
    """The log sources ``selection`` names, in display order.

    ``strict``: a node, group or job that is not there is a :class:`LogsError`
    (while following, the listing is done again without it: a group's first
    node may come later).
    """
    record = cluster.load()
    nodes = _nodes(cluster)
    live = {n.id for n in cluster.nodes()}
    job_files, aliases = _job_logs(cluster, record)
    if strict:
        _unknown("node", selection.nodes, [HEAD, AUTOSCALER, *(n.id for n in nodes)],
                 cluster.name)
        _unknown("group", selection.groups,
                 [HEAD_GROUP, *(n.group for n in nodes), *_spec_groups(cluster)], cluster.name)
        _unknown("job", selection.jobs, [*job_files, *aliases], cluster.name)
    every = selection.everything
    running = record.head_pid is not None and procs.is_alive(record.head_pid)

    def wanted_node(node_id: str, group: str) -> bool:
        return every or node_id in selection.nodes or group in selection.groups

    out: list[Source] = []
    if wanted_node(HEAD, HEAD_GROUP):
        out.append(Source(HEAD, cluster.logs / "head.log", "head", HEAD_GROUP, running))
        if selection.ray:
            out += [Source(f"{HEAD}/{p.name}", p, "ray", HEAD_GROUP, running)
                    for p in ray_log_files(record.head_temp_dir())]
    if every or AUTOSCALER in selection.nodes:
        out.append(Source(AUTOSCALER, cluster.logs / "autoscaler.log", "autoscaler", None,
                          record.autoscaler_pid is not None
                          and procs.is_alive(record.autoscaler_pid)))
    for node in nodes:
        if not wanted_node(node.id, node.group):
            continue
        out.append(Source(node.id, cluster.logs / f"{node.id}.log", "node", node.group,
                          node.id in live))
        if selection.ray:
            out += [Source(f"{node.id}/{p.name}", p, "ray", node.group, node.id in live)
                    for p in ray_log_files(record.node_temp_dir(f"w{node.index}"))]
    picked_jobs = {aliases.get(j, j) for j in selection.jobs}
    for sid, path in sorted(job_files.items()):
        if every or sid in picked_jobs:
            out.append(Source(f"job:{sid}", path, "job", None,
                              running and str(path).startswith(record.temp_dir)))
    return out


class Printer:
    """Lines to ``out``, each prefixed with its source when ``prefix``."""

    def __init__(self, out: BinaryIO, prefix: bool) -> None:
        self.out, self.prefix, self.width = out, prefix, 0

    def widen(self, names: Iterable[str]) -> None:
        self.width = max([self.width, *(len(n) for n in names)])

    def write(self, name: str, lines: list[bytes]) -> None:
        if not lines:
            return
        data = b"".join(prefixed(name, self.width, x) for x in lines) if self.prefix \
            else b"".join(lines)
        self.out.write(data)
        self.out.flush()


def show(
    listing: Callable[[bool], list[Source]],
    out: BinaryIO,
    prefix: bool,
    since: float | None = None,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
    tail_lines: int | None = None,
) -> None:
    """Print the sources ``listing(strict)`` gives, one after the other; with ``follow``,
    then their new lines as they come (every :data:`FOLLOW_POLL_S`), and those of
    sources that appear (listed again every :data:`RESCAN_S`), until ``stop()`` or
    Ctrl-C. ``since``: epoch seconds (see :class:`rayscale.logtail.SinceWindow`);
    ``tail_lines``: only the last lines of each source (of those ``since`` keeps)."""
    printer = Printer(out, prefix)
    found = listing(True)
    printer.widen(s.name for s in found)
    tails: dict[tuple[str, Path], FileTail] = {}
    for source in found:
        tail = tails[(source.name, source.path)] = FileTail(source.path, since)
        if tail.skip_all():  # not written since then
            tail.skip_to_end()
            continue
        if tail_lines is None:
            for lines in tail.chunks():
                printer.write(source.name, lines)
            if not follow:
                printer.write(source.name, tail.rest())
            continue
        last: deque[bytes] = deque(maxlen=tail_lines)
        for lines in tail.chunks():
            last.extend(lines)
        if not follow:
            last.extend(tail.rest())
        printer.write(source.name, list(last))
    if not follow:
        return
    for tail in tails.values():
        tail.since = None  # what is written from now on is new
    rescanned = time.monotonic()
    while not stop():
        time.sleep(FOLLOW_POLL_S)
        if time.monotonic() - rescanned >= RESCAN_S:
            rescanned = time.monotonic()
            try:
                listed = listing(False)
            except (OSError, ValueError):  # the cluster's files being rewritten (`up`)
                listed = []
            fresh = [s for s in listed if (s.name, s.path) not in tails]
            printer.widen(s.name for s in fresh)
            for source in fresh:  # appeared while following: all of it is new
                tail = tails[(source.name, source.path)] = FileTail(source.path, since)
                moved = [key for key in tails if key[0] == source.name and key[1] != source.path]
                for key in moved:  # the same log at a new path (`down` keeps a job's log)
                    tail.offset = max(tail.offset, tails.pop(key).offset)
        for (name, _), tail in tails.items():
            for lines in tail.chunks():
                printer.write(name, lines)
