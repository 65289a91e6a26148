"""Hostile input for `rayscale plan` and for cluster files: the classes of issue 9.

Each case is a valid document with one to three mutations, written out as
bytes: a value replaced by a hostile one (integers beyond 64 bits, numbers
beyond what Ray holds, non-finite numbers, wrong types, negatives, very deep
nesting, huge counts), a key deleted, or the bytes corrupted (invalid UTF-8,
truncation). The same generator serves the hypothesis tests (through
:class:`DrawSource`) and the one-off fuzz run (through :class:`RandomSource`)::

    python -m tests.fuzzdocs plan 2000 --seed 0
    python -m tests.fuzzdocs spec 2000 --seed 0

which prints how many cases were valid, how many ended in a clear error
(exit 2, every line naming a path) and how many crashed (a traceback, another
exit status, a message without a path, or more than ``--timeout`` seconds),
with the first crashes of each kind. Run it with a memory limit (``ulimit -v``):
a crash may be an allocation of many gigabytes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Source(Protocol):
    """Where the random choices come from (random.Random or hypothesis)."""

    def integers(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...


class RandomSource:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integers(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]


class DrawSource:
    """Choices drawn by hypothesis (``st.data()``), so failures shrink."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw

    def integers(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        return int(self.draw(st.integers(lo, hi)))

    def choice(self, options: Sequence[T]) -> T:
        from hypothesis import strategies as st

        return options[int(self.draw(st.integers(0, len(options) - 1)))]


class Raw:
    """A value written out as this exact text (numbers no Python object can hold)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r})"


DELETE = object()
DEPTH = 100_000  # deeper than any recursive parser's stack

# -------------------------------------------------------------- plan documents

BASE_STATE: dict[str, Any] = {
    "groups": {
        "small": {"resources": {"CPU": 1, "memory": 1073741824}, "min": 0, "max": 10,
                  "idle_timeout_s": None, "priority": 0, "launchable": True,
                  "memory_target_fraction": None, "labels": {}},
        "big": {"resources": {"CPU": 8, "GPU": 1, "memory": 34359738368}, "max": None,
                "priority": 1, "memory_target_fraction": 0.8},
    },
    "nodes": [
        {"id": "head", "group": "head", "status": "running",
         "total": {"CPU": 0}, "available": {"CPU": 0}, "idle_s": 0},
        {"id": "w-1", "group": "small", "status": "running",
         "total": {"CPU": 1}, "available": {"CPU": 0}, "idle_s": 0,
         "memory_used_fraction": 0.35},
        {"id": "w-2", "group": "small", "status": "pending"},
        {"id": "w-3", "group": "big", "status": "running",
         "total": {"CPU": 8, "GPU": 1}, "available": {"CPU": 8, "GPU": 1}, "idle_s": 300},
    ],
    "demand": {
        "tasks": [{"resources": {"CPU": 1}, "count": 15},
                  {"resources": {"CPU": 0.5, "GPU": 1}, "count": 2}],
        "gangs": [{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1}, {"CPU": 1}],
                   "count": 1}],
        "floor": [{"resources": {"CPU": 1}, "count": 4}],
    },
    "options": {"upscaling_mode": "Default", "idle_timeout_s": 60, "max_nodes": None},
}

PLAN_VALUES: list[Any] = [
    # integers at and beyond 64 bits, and beyond a float
    Raw(str(2**63 - 1)), Raw(str(2**63)), Raw(str(2**64)), Raw(str(-(2**63) - 1)),
    Raw("1" + "0" * 30), Raw("1" + "0" * 400), Raw("9" * 5000),
    # numbers beyond what Ray holds, tiny and non-finite ones
    Raw("1e15"), Raw("1e16"), Raw("1e19"), Raw("1e300"), Raw("1.7976931348623157e308"),
    Raw("1e400"), Raw("-1e300"), Raw("5e-324"), Raw("0.00001"),
    Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
    # counts that are valid but large
    Raw("1000000"), Raw("1000000000"), Raw("1000000000000"),
    # wrong types and signs
    "3", True, False, None, [], {}, "", "CPU", -1, -0.5, 0, 1, 2.5,
    # strings Python cannot print as UTF-8, long ones
    Raw('"\\ud800"'), "x" * 10_000,
    # nesting deeper than any stack
    Raw("[" * DEPTH + "]" * DEPTH), Raw('{"a":' * DEPTH + "1" + "}" * DEPTH),
]
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\x00"]


def plan_case(src: Source) -> bytes:
    """A mutated ClusterState document, as the bytes `rayscale plan -` reads."""
    doc = copy.deepcopy(BASE_STATE)
    byte_edits: list[Callable[[bytes], bytes]] = []
    for _ in range(src.integers(1, 3)):
        kind = src.choice(["value"] * 6 + ["count", "delete", "bytes"])
        if kind == "value":
            _set(doc, src.choice(_paths(doc)), copy.deepcopy(src.choice(PLAN_VALUES)))
        elif kind == "count":
            # a huge count of one shape, with the groups unbounded
            groups = doc.get("groups") if isinstance(doc, dict) else None
            for group in groups.values() if isinstance(groups, dict) else []:
                if isinstance(group, dict):
                    group["max"] = None
            kind_paths = [p for p in _paths(doc) if p and p[-1] == "count"]
            if kind_paths:
                _set(doc, src.choice(kind_paths), 10 ** src.integers(6, 12))
        elif kind == "delete":
            _set(doc, src.choice(_paths(doc)), DELETE)
        else:
            byte_edits.append(_byte_edit(src))
    data = dumps(doc).encode("utf-8", "surrogatepass")
    for edit in byte_edits:
        data = edit(data)
    return data


def _byte_edit(src: Source) -> Callable[[bytes], bytes]:
    where = src.integers(0, 10_000)
    if src.choice([True, False]):
        bad = src.choice(BAD_BYTES)
        return lambda data: data[: where % (len(data) + 1)] + bad + data[where % (len(data) + 1):]
    return lambda data: data[: where % (len(data) + 1)]


# ------------------------------------------------------------- cluster files

SPEC_VALUES: list[Any] = [
    # Kubernetes quantities beyond int64 and beyond what Ray accepts for a node
    "1e30", "999999999999Ei", "1E", "8E", "1e18", "9223372036854775808", "100000000000001",
    "1e14", "1e-30", "0.0001", "1e400", "1e31", "-1", "1Pi", "90Ti",
    # integers and floats beyond 64 bits / float range
    10**30, 2**63, 2**31, Raw("1" + "0" * 400), Raw("9" * 5000), -1,
    Raw("1.0e+300"), Raw(".inf"), Raw(".nan"), Raw("1.0e+15"),
    # rayStartParams values
    "9" * 30, "9" * 5000, '{"a": 1e300}', '{"a": 1' + "0" * 400 + "}", '{"a": NaN}',
    '{"a": 1e15}', "[" * DEPTH + "]" * DEPTH, '{"a":' * 5000 + "1" + "}" * 5000,
    # wrong types
    True, None, [], {}, "", "abc", 0.5,
    # nesting deeper than any stack
    Raw("[" * DEPTH + "]" * DEPTH),
]
_W0 = ("spec", "workerGroupSpecs", 0)
_RESOURCE_PATHS: list[tuple[Any, ...]] = [
    (*_W0, "template", "spec", "containers", 0, "resources", "limits", "cpu"),
    (*_W0, "template", "spec", "containers", 0, "resources", "limits", "memory"),
    (*_W0, "template", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"),
    (*_W0, "template", "spec", "containers", 0, "resources", "requests", "cpu"),
    (*_W0, "template", "spec", "containers", 0, "resources", "limits", "google.com/tpu"),
    (*_W0, "rayStartParams", "num-cpus"),
    (*_W0, "rayStartParams", "num-gpus"),
    (*_W0, "rayStartParams", "memory"),
    (*_W0, "rayStartParams", "object-store-memory"),
    (*_W0, "rayStartParams", "resources"),
    (*_W0, "resources", "CPU"),
    (*_W0, "resources", "memory"),
    (*_W0, "resources", "custom"),
    ("spec", "headGroupSpec", "rayStartParams", "num-cpus"),
    ("spec", "headGroupSpec", "template", "spec", "containers", 0, "resources", "limits", "cpu"),
    (*_W0, "maxReplicas"),
    (*_W0, "minReplicas"),
    (*_W0, "idleTimeoutSeconds"),
    (*_W0, "priority"),
    ("spec", "autoscalerOptions", "idleTimeoutSeconds"),
]


def base_cluster() -> dict[str, Any]:
    from tests.test_spec import base_doc

    return base_doc()


def spec_case(src: Source) -> bytes:
    """A mutated RayCluster manifest, as the bytes of a YAML file."""
    doc = base_cluster()
    byte_edits: list[Callable[[bytes], bytes]] = []
    for _ in range(src.integers(1, 3)):
        kind = src.choice(["resource"] * 4 + ["value"] * 2 + ["delete", "bytes"])
        if kind == "resource":
            _set(doc, src.choice(_RESOURCE_PATHS), copy.deepcopy(src.choice(SPEC_VALUES)))
        elif kind == "value":
            _set(doc, src.choice(_paths(doc)), copy.deepcopy(src.choice(SPEC_VALUES)))
        elif kind == "delete":
            _set(doc, src.choice(_paths(doc)), DELETE)
        else:
            byte_edits.append(_byte_edit(src))
    # JSON is YAML's flow style; YAML 1.1 wants floats as 1.0e+30 (else a string)
    data = dumps(doc, yaml=True).encode("utf-8", "surrogatepass")
    for edit in byte_edits:
        data = edit(data)
    return data


# ------------------------------------------------------------------- helpers


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if not prefix else []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Set (DELETE: remove) the entry at ``path``, creating mappings on the way."""
    if not path:
        return doc
    parent = doc
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            if not isinstance(parent, dict):
                return doc
            parent[key] = {}
            parent = parent[key]
    key = path[-1]
    try:
        if value is DELETE:
            del parent[key]
        else:
            parent[key] = value
    except (KeyError, IndexError, TypeError):
        pass
    return doc


def dumps(value: Any, yaml: bool = False) -> str:
    """JSON text, with :class:`Raw` values written as they are."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(
            f"{json.dumps(str(k))}: {dumps(v, yaml)}" for k, v in value.items()
        ) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v, yaml) for v in value) + "]"
    if yaml and isinstance(value, float) and value == value and abs(value) != float("inf"):
        return repr(value) if "e" not in repr(value) else f"{value:.17e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # json.dumps refuses more than 4300 digits
    return json.dumps(value)


# ----------------------------------------------------------------- verdicts

# "nodes[3].group: ...", "$: ...", "groups.small.resources.CPU: ...",
# "workerGroupSpecs[0].template...limits[nvidia.com/gpu]: ...", "<file>: ..."
PATH_LINE = re.compile(r"^[^\s:]+(?:\[[^\]]*\])*(?:\.[^\s:]+)*: \S")


class Timeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise Timeout(f"more than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_plan_cli(data: bytes) -> tuple[int | None, str, str, BaseException | None]:
    """`rayscale plan -` in this process: (exit code, stdout, stderr, exception)."""
    from typer.testing import CliRunner

    from rayscale.cli.main import app

    result = CliRunner().invoke(app, ["plan", "-"], input=data)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return result.exit_code, result.stdout, result.stderr, exc


def plan_verdict(data: bytes, timeout: float = 10.0) -> tuple[str, str]:
    """("valid" | "error" | "crash", detail) for one document through `rayscale plan -`."""
    try:
        with deadline(timeout):
            code, out, err, exc = run_plan_cli(data)
    except Timeout as t:
        return "crash", f"Timeout: {t}"
    if exc is not None:
        return "crash", _describe(exc)
    if code == 0:
        try:
            json.loads(out)
        except ValueError:
            return "crash", "exit 0 without a JSON plan"
        return "valid", ""
    lines = err.strip().splitlines()
    if code == 2 and len(lines) == 1 and PATH_LINE.match(lines[0]):
        return "error", lines[0][:200]
    return "crash", f"exit {code}: {err.strip()[:200]!r}"


def spec_verdict(data: bytes, timeout: float = 10.0) -> tuple[str, str]:
    """The same for a cluster file: load it, then plan one round for it as the autoscaler does."""
    from rayscale.api import SpecError
    from rayscale.autoscaler.snapshot import Snapshot, cluster_state
    from rayscale.observe.ray_state import Observation
    from rayscale.planner import plan
    from rayscale.planner.state import Shape
    from rayscale.spec import load_cluster_spec

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_bytes(data)
        try:
            with deadline(timeout):
                try:
                    spec = load_cluster_spec(path)
                except SpecError as exc:
                    bad = [m for m in exc.errors if not PATH_LINE.match(m)]
                    if not exc.errors or bad:
                        return "crash", f"SpecError without a path: {bad[:1]!r}"
                    return "error", exc.errors[0][:200]
                observation = Observation(
                    nodes=[], tasks=[Shape(resources={"CPU": 1}, count=100)]
                )
                state = cluster_state(spec, Snapshot(nodes=[], observation=observation), set())
                plan(state)
        except Timeout as t:
            return "crash", f"Timeout: {t}"
        except Exception as exc:
            return "crash", _describe(exc)
    return "valid", ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Timeout):
        return f"Timeout: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}: {str(exc)[:120]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["plan", "spec"])
    parser.add_argument("cases", type=int, nargs="?", default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--show", type=int, default=3, help="examples per kind of crash")
    args = parser.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    make, verdict = (plan_case, plan_verdict) if args.kind == "plan" else (spec_case, spec_verdict)
    src = RandomSource(args.seed)
    tally: Counter[str] = Counter()
    crashes: dict[str, list[str]] = {}
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    for i in range(args.cases):
        data = make(src)
        outcome, detail = verdict(data, args.timeout)
        tally[outcome] += 1
        if outcome == "crash":
            kind = detail.split(":")[0]
            kinds[kind] += 1
            crashes.setdefault(kind, [])
            if len(crashes[kind]) < args.show:
                crashes[kind].append(f"case {i}: {detail}")
    took = time.monotonic() - started
    print(
        f"{args.kind}: {args.cases} cases (seed {args.seed}) in {took:.0f} s: "
        f"{tally['valid']} valid, {tally['error']} clear errors, {tally['crash']} crashes"
    )
    for kind, examples in sorted(crashes.items()):
        print(f"  {kind}: {kinds[kind]}")
        for example in examples:
            print(f"    {example}")
    return 1 if tally["crash"] else 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main())
