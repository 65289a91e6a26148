"""State and temp directories are private to the user, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayscale.paths import UnsafePathError, private_dir, write_private


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o000)  # the loosest: every bit rayscale does not clear shows
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_private_dir_makes_every_missing_level_0700(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    private_dir(target)
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", target)] == [0o700] * 3


def test_private_dir_tightens_an_existing_dir_and_refuses_a_symlink(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    private_dir(loose)
    assert mode(loose) == 0o700
    link = tmp_path / "link"
    link.symlink_to(loose)
    with pytest.raises(UnsafePathError, match="symlink"):
        private_dir(link)
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(UnsafePathError, match="not a directory"):
        private_dir(plain)


def test_write_private_is_0600_atomic_and_replaces_a_loose_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cluster.json"
    write_private(path, "{}")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    os.chmod(path, 0o666)
    write_private(path, b'{"a": 1}')
    assert mode(path) == 0o600 and path.read_text() == '{"a": 1}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["cluster.json"]
