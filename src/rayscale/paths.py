"""Where rayscale keeps its state on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def rayscale_home() -> Path:
    """``$RAYSCALE_HOME``, default ``~/.rayscale``: local clusters, dev clusters, vnodes."""
    return Path(os.environ.get("RAYSCALE_HOME", str(Path.home() / ".rayscale")))
