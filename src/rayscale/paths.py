"""Where rayscale keeps its state on this machine, private to the user who runs it.

Cluster files hold what must stay the user's (the verbatim cluster file, soon
Redis passwords; the auth token): every directory rayscale creates is 0700 and
every file 0600, whatever the umask. A shared parent that already exists but
is not ours (or is a symlink) is refused rather than used.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class UnsafePathError(RuntimeError):
    """A directory rayscale would use is owned by someone else or is a symlink."""


def rayscale_home() -> Path:
    """``$RAYSCALE_HOME``, default ``~/.rayscale``: local clusters, dev clusters, vnodes."""
    return Path(os.environ.get("RAYSCALE_HOME", str(Path.home() / ".rayscale")))


def private_dir(path: Path) -> Path:
    """``mkdir -p path``: each directory it creates is 0700; ``path`` itself ends 0700.

    An existing ``path`` must be a real directory owned by this user; it is
    tightened to 0700 (it is rayscale's own).
    """
    missing = []
    probe = path
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it: checked below
            directory.mkdir(mode=PRIVATE_DIR_MODE)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} is not a directory (a symlink?): refusing to use it")
    if info.st_uid != os.getuid():
        raise UnsafePathError(f"{path} belongs to uid {info.st_uid}, not to you: refusing it")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> int:
    """Open ``path`` for writing (created/truncated) as 0600; returns the descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # an existing file keeps its mode otherwise
    return fd


def append_private(path: Path, text: str) -> None:
    """Append ``text`` to ``path``, creating it 0600 (an existing file keeps its mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "a") as out:
        out.write(text)


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` atomically (temp file + rename), 0600, in a private directory."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(private_file(tmp), "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
