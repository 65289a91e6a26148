"""Where Ray keeps a local node's own logs, and the job logs `down` saves from them.

Each node's Ray temp dir (``ClusterRecord.node_temp_dir``) holds
``session_latest/logs/``: raylet.out, gcs_server.out (head), worker-*.out,
and ``job-driver-<submission id>.log`` for each Ray job whose driver ran on
that node. `down` removes the temp dirs; it first copies the job drivers'
logs into ``clusters/<name>/logs/jobs/`` (small, and what users look for after
a run), so `rayscale logs` still finds a job's output until the next `up`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from rayscale.local.store import ClusterDir, ClusterRecord
from rayscale.paths import private_dir, private_file

JOB_DRIVER_PREFIX = "job-driver-"


def session_logs(temp_dir: str | Path) -> Path | None:
    """The logs directory of the node's latest Ray session, if there is one."""
    root = Path(temp_dir)
    latest = root / "session_latest" / "logs"
    if latest.is_dir():
        return latest
    found = sorted(root.glob("session_*/logs"))  # session names sort by start time
    return found[-1] if found else None


def ray_log_files(temp_dir: str | Path) -> list[Path]:
    """Ray's own log files of a node (job drivers' logs are a source of their own)."""
    logs = session_logs(temp_dir)
    if logs is None:
        return []
    return sorted(p for p in logs.iterdir()
                  if p.suffix in (".out", ".err", ".log") and p.is_file()
                  and not p.name.startswith(JOB_DRIVER_PREFIX))


def submission_id(path: Path) -> str:
    return path.name.removeprefix(JOB_DRIVER_PREFIX).removesuffix(".log")


def live_job_logs(record: ClusterRecord) -> dict[str, Path]:
    """Submission id → the driver log of each Ray job in the cluster's temp dirs."""
    out: dict[str, Path] = {}
    for path in sorted(Path(record.temp_dir).glob(f"*/session_*/logs/{JOB_DRIVER_PREFIX}*.log")):
        out.setdefault(submission_id(path), path)
    return out


def kept_job_logs(cluster: ClusterDir) -> dict[str, Path]:
    """Submission id → the driver log `down` kept."""
    where = cluster.logs / "jobs"
    if not where.is_dir():
        return {}
    return {submission_id(p): p for p in sorted(where.glob(f"{JOB_DRIVER_PREFIX}*.log"))}


def keep_job_logs(cluster: ClusterDir, record: ClusterRecord) -> None:
    """Copy the jobs' driver logs out of the temp dirs `down` is about to remove."""
    found = live_job_logs(record)
    if not found:
        return
    where = private_dir(cluster.logs / "jobs")
    for sid, path in found.items():
        with contextlib.suppress(OSError), path.open("rb") as src, \
                os.fdopen(private_file(where / f"{JOB_DRIVER_PREFIX}{sid}.log"), "wb") as dst:
            shutil.copyfileobj(src, dst)  # streamed: a job may have printed a lot
