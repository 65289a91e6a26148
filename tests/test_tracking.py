"""The node lifecycle the autoscaler tracks (pending -> running -> draining -> stopping)
and per-group failure backoff."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from rayscale.autoscaler.snapshot import NodeView
from rayscale.autoscaler.tracking import GroupBackoff, NodeTracker, TransitionError
from rayscale.labels import HEAD_GROUP
from rayscale.planner.state import NodeStatus

TIMEOUT = 60.0


def view(node_id: str, status: NodeStatus, launched_at: float | None = 0.0,
         group: str = "w") -> NodeView:
    ray_id = None if status == "pending" else f"ray-{node_id}"
    return NodeView(id=node_id, group=group, status=status, launched_at=launched_at,
                    ray_node_id=ray_id)


def observe(tracker: NodeTracker, *views: NodeView, now: float = 1.0,
            listed: set[str] | None = None) -> tuple[list[str], list[str]]:
    ids = {v.id for v in views} if listed is None else listed
    out = tracker.observe(list(views), ids, now)
    return [v.id for v in out.registered], [v.id for v in out.timed_out]


def pending_future() -> Future[None]:
    return Future()


def done_future() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


def test_pending_node_registers_once() -> None:
    tracker = NodeTracker(TIMEOUT)
    assert observe(tracker, view("a", "pending")) == ([], [])
    assert tracker.phase("a") == "pending"
    assert observe(tracker, view("a", "running"), now=2.0) == (["a"], [])
    node = tracker.get("a")
    assert node is not None and node.phase == "running" and node.since == 2.0
    assert observe(tracker, view("a", "running"), now=3.0) == ([], [])  # announced once


def test_running_node_seen_first_is_adopted_and_announced() -> None:
    tracker = NodeTracker(TIMEOUT)
    assert observe(tracker, view("a", "running")) == (["a"], [])
    assert tracker.phase("a") == "running"


def test_head_external_and_terminating_nodes_are_not_tracked() -> None:
    tracker = NodeTracker(TIMEOUT)
    head = view("h", "running", group=HEAD_GROUP)
    external = view("x", "running", group="external")
    assert observe(tracker, head, external, view("t", "terminating")) == ([], [])
    assert tracker.nodes == {}


def test_launch_times_out_only_after_the_timeout() -> None:
    tracker = NodeTracker(TIMEOUT)
    late = view("a", "pending", launched_at=100.0)
    assert observe(tracker, late, now=100.0 + TIMEOUT) == ([], [])
    assert observe(tracker, late, now=100.0 + TIMEOUT + 0.1) == ([], ["a"])
    # a pending node without a launch time (KubeRay's not-yet-created pods) never times out
    assert observe(tracker, view("b", "pending", launched_at=None), now=1e9) == ([], [])


def test_running_node_cannot_stop_without_a_drain() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "running"))
    started: list[str] = []

    def start() -> Future[None]:
        started.append("a")
        return pending_future()

    with pytest.raises(TransitionError, match="running cannot become stopping"):
        tracker.stopping("a", start, 2.0)
    assert started == [] and tracker.phase("a") == "running"
    tracker.drained("a", 2.0)
    assert tracker.phase("a") == "draining"
    tracker.stopping("a", start, 3.0)
    assert started == ["a"] and tracker.phase("a") == "stopping"
    assert tracker.stop_under_way("a")


def test_pending_node_stops_without_a_drain_and_cannot_be_drained() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "pending"))
    with pytest.raises(TransitionError, match="pending cannot become draining"):
        tracker.drained("a", 2.0)
    tracker.stopping("a", pending_future, 2.0)
    assert tracker.phase("a") == "stopping"


def test_untracked_node_has_no_transitions() -> None:
    tracker = NodeTracker(TIMEOUT)
    with pytest.raises(TransitionError, match="not tracked"):
        tracker.drained("nope", 1.0)
    with pytest.raises(TransitionError, match="not tracked"):
        tracker.stopping("nope", pending_future, 1.0)


def test_a_stop_under_way_cannot_start_twice_and_hides_the_node() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "pending", launched_at=0.0))
    stop = pending_future()
    tracker.stopping("a", lambda: stop, 2.0)
    with pytest.raises(TransitionError, match="stopping cannot become stopping"):
        tracker.stopping("a", pending_future, 2.0)
    # neither timed out again nor announced while its stop runs, nor forgotten when unlisted
    assert observe(tracker, view("a", "pending", launched_at=0.0), now=1e9) == ([], [])
    assert observe(tracker, view("a", "running"), now=1e9) == ([], [])
    assert observe(tracker, now=1e9, listed=set()) == ([], [])
    assert tracker.phase("a") == "stopping"
    stop.set_result(None)
    assert not tracker.stop_under_way("a")
    observe(tracker, now=1e9, listed=set())
    assert tracker.get("a") is None  # stopped and gone from the provider: forgotten


def test_a_returned_stop_of_a_node_still_listed_is_followed_again() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "running"))
    tracker.drained("a", 2.0)
    tracker.stopping("a", done_future, 2.0)
    # still drained in Ray: stays stopping
    assert observe(tracker, view("a", "terminating")) == ([], [])
    assert tracker.phase("a") == "stopping"
    # the stop failed and Ray runs it again: running, not announced a second time
    assert observe(tracker, view("a", "running")) == ([], [])
    assert tracker.phase("a") == "running"
    # and it must be drained again before another stop
    with pytest.raises(TransitionError):
        tracker.stopping("a", pending_future, 3.0)


def test_node_ray_lost_goes_back_to_pending_and_is_not_announced_again() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "running", launched_at=0.0), now=1.0)
    assert observe(tracker, view("a", "pending", launched_at=0.0), now=2.0) == ([], [])
    assert tracker.phase("a") == "pending"
    assert observe(tracker, view("a", "running", launched_at=0.0), now=3.0) == ([], [])
    # never registering again in time is a failed launch like any other
    assert observe(tracker, view("a", "pending", launched_at=0.0), now=TIMEOUT + 1) == ([], ["a"])


def test_nodes_the_provider_no_longer_lists_are_forgotten() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "running"), view("b", "pending"))
    observe(tracker, view("a", "running"), listed={"a"})
    assert set(tracker.nodes) == {"a"}


def test_exited_forgets_and_says_what_the_node_was() -> None:
    tracker = NodeTracker(TIMEOUT)
    observe(tracker, view("a", "running"), view("b", "pending"))
    a = tracker.exited("a")
    b = tracker.exited("b")
    assert a is not None and a.registered and a.phase == "running"
    assert b is not None and not b.registered and b.phase == "pending"
    assert tracker.exited("a") is None and tracker.nodes == {}


def test_pending_node_is_due_for_cancel_only_after_the_grace() -> None:
    tracker = NodeTracker(TIMEOUT)
    assert tracker.unneeded_for({"a", "b"}, 10.0, grace_s=5.0) == set()
    assert tracker.unneeded_for({"a", "b"}, 14.9, grace_s=5.0) == set()
    # b was needed again for a round: its grace starts over
    assert tracker.unneeded_for({"a"}, 15.0, grace_s=5.0) == {"a"}
    assert tracker.unneeded_for({"a", "b"}, 16.0, grace_s=5.0) == {"a"}
    assert tracker.unneeded_for({"a", "b"}, 21.0, grace_s=5.0) == {"a", "b"}


def test_backoff_doubles_per_outage_up_to_the_max_and_clears_on_success() -> None:
    backoff = GroupBackoff(first_s=10.0, max_s=50.0)
    assert backoff.failed("g", 0.0) == 10.0
    assert backoff.failed("g", 5.0) is None  # same outage: a batch fails together
    assert backoff.blocked(9.9) == {"g"} and backoff.blocked(10.0) == set()
    assert backoff.failed("g", 10.0) == 20.0
    assert backoff.failed("g", 30.0) == 40.0
    assert backoff.failed("g", 70.0) == 50.0  # capped
    assert backoff.failed("other", 70.0) == 10.0  # per group
    assert backoff.blocked(75.0) == {"g", "other"}
    backoff.succeeded("g")
    assert backoff.blocked(75.0) == {"other"}
    assert backoff.failed("g", 75.0) == 10.0  # starts over
