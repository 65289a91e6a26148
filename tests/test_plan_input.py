"""Issue 9: `rayscale plan` on hostile input: exit 2 and one line naming the path.

Numbers are bounded by what Ray holds (resource amounts at most MAX_AMOUNT,
integers int64), bytes must be UTF-8, and JSON too deep for Python's parser or
with integers too long for it is refused at ``$`` with its place in the text.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rayscale.cli.main import app
from rayscale.planner import PlanFormatError, plan_json
from rayscale.planner.state import MAX_AMOUNT, MAX_INT
from tests import fuzzdocs

AMOUNT_BOUND = f"must be at most {MAX_AMOUNT} (the most Ray can hold)"
INT_BOUND = f"must be at most {MAX_INT} (an int64)"


def plan_cli(data: bytes) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["plan", "-"], input=data)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr


def state_with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(fuzzdocs.BASE_STATE))
    return fuzzdocs._set(doc, path, value)  # type: ignore[no-any-return]


CASES: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    "group-amount": (
        ("groups", "small", "resources", "CPU"), 1e15, f"{AMOUNT_BOUND}, got 1000000000000000.0"
    ),
    "node-total": (("nodes", 1, "total", "memory"), 2**63, f"{AMOUNT_BOUND}, got {2**63}"),
    "node-available": (
        ("nodes", 3, "available", "GPU"), 10**400, "out of range, got an integer of 401 digits"
    ),
    "task-amount": (
        ("demand", "tasks", 0, "resources", "CPU"), 1e300, f"{AMOUNT_BOUND}, got 1e+300"
    ),
    "bundle": (
        ("demand", "gangs", 0, "bundles", 1, "CPU"), 1e16, f"{AMOUNT_BOUND}, got 1e+16"
    ),
    "count": (("demand", "tasks", 0, "count"), 2**64, f"{INT_BOUND}, got {2**64}"),
    "giant-count": (
        ("demand", "floor", 0, "count"), 10**5000, f"{INT_BOUND}, got an integer of 5001 digits"
    ),
    "max": (("groups", "big", "max"), 2**63, f"{INT_BOUND}, got {2**63}"),
    "max-nodes": (("options", "max_nodes"), 2**70, f"{INT_BOUND}, got {2**70}"),
    "priority": (
        ("groups", "small", "priority"), -(2**63) - 1,
        f"must be at least {-MAX_INT - 1} (an int64), got {-(2**63) - 1}",
    ),
    "idle-s": (("nodes", 3, "idle_s"), 10**400, "out of range, got an integer of 401 digits"),
    "nan": (
        ("groups", "small", "resources", "CPU"), float("nan"), "Input should be a finite number"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_numbers_beyond_what_ray_holds_name_the_path(case: str) -> None:
    path, value, reason = CASES[case]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    with pytest.raises(PlanFormatError) as info:
        plan_json(state_with(path, value))
    assert str(info.value) == f"{where}: {reason}"


def test_the_bounds_themselves_plan() -> None:
    doc = state_with(("demand", "tasks", 0, "resources", "CPU"), MAX_AMOUNT)
    doc = fuzzdocs._set(doc, ("demand", "tasks", 0, "count"), MAX_INT)
    doc = fuzzdocs._set(doc, ("groups", "big", "resources", "memory"), MAX_AMOUNT)
    doc = fuzzdocs._set(doc, ("groups", "small", "priority"), -MAX_INT - 1)
    plan = plan_json(doc)
    assert plan["infeasible"]["tasks"] == [{"resources": {"CPU": MAX_AMOUNT}, "count": MAX_INT}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff{}", "$: not UTF-8 text at line 1 (byte 0): invalid start byte"),
        (b'{"nodes": [\n{"id": "\xc3\x28"}]}', "$: not UTF-8 text at line 2 (byte 20): "
         "invalid continuation byte"),
        (b"[" * 100_000 + b"]" * 100_000, "$: invalid JSON: nested too deeply"),
        (b'{"a": {"b": ' * 50_000 + b"1" + b"}}" * 50_000, "$: invalid JSON: nested too deeply"),
        (b'{"demand": {"tasks": [{"resources": {}, "count": ' + b"9" * 5000 + b"}]}}",
         "$: invalid JSON at line 1 column 50: an integer of 5000 digits (out of range)"),
        (b'{"groups": {"a": {"resources": {"CPU": 1e400}}}}',
         "groups.a.resources.CPU: Input should be a finite number"),
        (b'{"groups": {"a": {"resources": {"CPU": NaN}}}}',
         "groups.a.resources.CPU: Input should be a finite number"),
        (b"", "$: invalid JSON at line 1 column 1: Expecting value"),
    ],
    ids=["bad-byte", "bad-continuation", "deep-list", "deep-object", "giant-int", "1e400",
         "nan", "empty"],
)
def test_cli_reading_exits_2_naming_the_path(data: bytes, message: str) -> None:
    code, out, err = plan_cli(data)
    assert (code, out, err.strip()) == (2, "", message)


def test_cli_still_plans_valid_documents() -> None:
    code, out, err = plan_cli(json.dumps(fuzzdocs.BASE_STATE).encode())
    assert code == 0, err
    assert json.loads(out)["launch"]


def test_a_lone_surrogate_is_refused_at_its_path() -> None:
    data = json.dumps(fuzzdocs.BASE_STATE).replace('"w-2"', '"\\ud800"').encode()
    code, _, err = plan_cli(data)
    assert code == 2
    assert err.startswith("nodes[2].id: Input should be a valid string")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_plan_documents_exit_0_or_2_with_a_path(data: st.DataObject) -> None:
    """Random mutations (tests/fuzzdocs: giant and non-finite numbers, wrong types,
    deep nesting, invalid UTF-8, truncation, huge counts with unbounded groups):
    a plan, or exit 2 with one line naming the path. Never a traceback."""
    case = fuzzdocs.plan_case(fuzzdocs.DrawSource(data.draw))
    outcome, detail = fuzzdocs.plan_verdict(case, timeout=20)
    assert outcome != "crash", detail
