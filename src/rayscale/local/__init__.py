"""Local mode: Ray heads and workers as processes on this machine's loopback."""
