"""An unreadable node provider (an API server that times out or fails): the loop holds.

Nothing is launched and nothing stopped on the last picture; each outage is
announced once; scaling resumes as soon as the provider answers, and a launch
made before the outage is not made again.
"""

from __future__ import annotations

from dataclasses import replace

import httpx2 as httpx

from rayscale.autoscaler.events import EventLog
from rayscale.autoscaler.loop import Autoscaler
from rayscale.autoscaler.providerwatch import ProviderWatch
from rayscale.observe.ray_state import Observation
from rayscale.planner.state import Shape
from tests.test_headwatch import HEAD, WORKER, Provider, Scripted, _spec


def test_an_outage_is_announced_once_and_its_end_once() -> None:
    watch = ProviderWatch()
    assert watch.answered(1.0) is None and not watch.down
    first = watch.failed(10.0, "ReadTimeout: timed out")
    assert first is not None and first.kind == "provider_unreachable"
    assert "ReadTimeout" in first.message and watch.down and watch.outages == 1
    assert watch.failed(11.0, "ReadTimeout: timed out") is None
    back = watch.answered(14.5)
    assert back is not None and back.kind == "provider_back" and "4.5s" in back.message
    assert not watch.down and watch.answered(15.0) is None
    assert watch.failed(20.0, "x") is not None and watch.outages == 2


class Flaky(Provider):
    """The test provider, whose reads fail while ``failing`` is set (as lightkube's do)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: Exception | None = None

    def nodes(self) -> list:  # type: ignore[type-arg]
        if self.failing is not None:
            raise self.failing
        return super().nodes()


def test_the_loop_launches_and_stops_nothing_while_the_provider_cannot_be_read() -> None:
    observer, provider, events = Scripted(), Flaky(), EventLog(None)
    spec = _spec()
    failing_spec: list[Exception] = []

    def refresh() -> object:
        if failing_spec:
            raise failing_spec[0]
        return spec

    loop = Autoscaler(spec, provider, observer, head_ip="127.10.0.2", events=events,
                      refresh_spec=refresh)  # type: ignore[arg-type]
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running", idle_s=0.0)])
    loop.tick()
    assert (provider.launched, provider.terminated) == ([], [])

    # w-0 idle for long (it would be stopped) and demand for 3 more CPUs (a launch)
    observer.next = Observation(nodes=[HEAD, WORKER],
                                tasks=[Shape(resources={"CPU": 1.0}, count=4)])
    provider.failing = httpx.ReadTimeout("timed out")
    for _ in range(3):
        loop.tick()
    failing_spec.append(httpx.ConnectError("connection refused"))
    provider.failing = None
    loop.tick()  # the CR read fails too: still nothing
    assert (provider.launched, provider.terminated, observer.drained) == ([], [], [])
    kinds = [e.kind for e in events.recent]
    assert kinds.count("provider_unreachable") == 1
    assert not {"launch", "stop", "drain", "error"} & set(kinds)
    assert loop.metrics.provider_reachable._value.get() == 0  # type: ignore[attr-defined]
    held = loop.metrics.held_rounds.labels("provider_unreachable")._value.get()  # type: ignore[attr-defined]
    assert held == 4
    assert loop.metrics.holding._value.get() == 1  # type: ignore[attr-defined]

    failing_spec.clear()  # back: the whole truth at once, scaling resumes
    loop.tick()
    loop.close()
    kinds = [e.kind for e in events.recent]
    assert "provider_back" in kinds and "launch" in kinds
    assert len(provider.launched) == 3
    assert loop.metrics.provider_reachable._value.get() == 1  # type: ignore[attr-defined]


def test_a_failing_round_is_reported_once_not_every_round() -> None:
    observer, provider, events = Scripted(), Provider(), EventLog(None)
    loop = Autoscaler(_spec(), provider, observer, head_ip="127.10.0.2", events=events)

    def boom(*_: object) -> list[str]:
        raise RuntimeError("patch refused")

    provider.launch = boom  # type: ignore[method-assign]
    observer.next = Observation(nodes=[HEAD, replace(WORKER, status="running", idle_s=0.0)],
                                tasks=[Shape(resources={"CPU": 1.0}, count=3)])
    for k in range(5):
        try:
            loop.tick()
        except RuntimeError as exc:
            loop._round_failed(exc, 100.0 + k)
    loop._round_failed(RuntimeError("patch refused"), 200.0)
    loop.close()
    errors = [e for e in events.recent if e.kind == "error"]
    assert len(errors) == 2 and "patch refused" in errors[0].message
