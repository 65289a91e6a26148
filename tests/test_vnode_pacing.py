"""The vnode's machine-wide pacing of container starts."""

from __future__ import annotations

from rayscale.vnode.pacing import StartPacer


def test_at_most_limit_starts_per_window_then_more_as_the_window_moves() -> None:
    pacer = StartPacer(limit=3, window_s=8.0)
    assert [pacer.admit(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert not pacer.admit(7.9)  # the first three are still in the window
    assert pacer.admit(8.0) and pacer.admit(8.0) and pacer.admit(8.0)
    assert not pacer.admit(8.1)


def test_the_default_scales_with_the_cores() -> None:
    pacer = StartPacer.for_this_machine()
    assert pacer.limit >= 2 and pacer.window_s > 0
