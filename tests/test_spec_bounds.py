"""Issue 9: every quantity of a cluster file is bounded when the file is read.

Kubernetes quantities are at most 2^63-1; a Ray resource of one node is at
most 10^14 (Ray's MAX_RESOURCE_QUANTITY); a YAML file nested too deeply, too
large once aliases expand, or holding an integer Python cannot convert is
refused before PyYAML builds it. Each error names the field (or the line),
and a bad file starts nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rayscale.api import SpecError
from rayscale.api.errors import path_of
from rayscale.api.quantity import MAX_QUANTITY, QuantityError, parse_quantity
from rayscale.api.resources import MAX_NODE_RESOURCE
from rayscale.spec import load_cluster_spec, parse_cluster_spec, ray_resources
from tests import fuzzdocs
from tests.test_spec import W0, W0_CONTAINER, W0_LIMITS, base_doc, errors_of, mutate

RAY_BOUND = "must be at most 100000000000000 (1e14, the most Ray accepts for one node)"
K8S_BOUND = "is out of range (Kubernetes quantities are at most 2^63-1 = 9223372036854775807)"


@pytest.mark.parametrize(
    "text", ["9223372036854775808", "1e30", "999999999999Ei", "10E", "8Ei", "1e31", "1e500",
             10**40, 1e300, -(2**63)]
)
def test_quantities_beyond_int64_are_refused(text: object) -> None:
    with pytest.raises(QuantityError, match="out of range"):
        parse_quantity(text)


@pytest.mark.parametrize("text", ["9223372036854775807", "8E", "7Ei", "1e18", 2**63 - 1])
def test_quantities_up_to_int64_parse(text: object) -> None:
    assert parse_quantity(text) <= MAX_QUANTITY


def test_a_huge_exponent_or_integer_is_described_not_echoed() -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity("1e" + "9" * 5000)
    assert len(str(info.value)) < 200
    with pytest.raises(QuantityError, match="an integer of 5001 digits"):
        parse_quantity(10**5000)


PARAMS = (*W0, "rayStartParams")
JSON_OBJECT = "must be a JSON object like '{\"custom\": 1}'"
FIELD_CASES: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    "k8s-string": ((*W0_LIMITS, "cpu"), "1e30", f"'1e30' {K8S_BOUND}"),
    "k8s-int": ((*W0_LIMITS, "cpu"), 10**30, f"{10**30} {K8S_BOUND}"),
    "k8s-giant-int": ((*W0_LIMITS, "cpu"), 10**300, f"an integer of 301 digits {K8S_BOUND}"),
    "cpu": ((*W0_LIMITS, "cpu"), "1e15", f"{RAY_BOUND}, got '1e15'"),
    "memory": ((*W0_LIMITS, "memory"), "100Ti", f"{RAY_BOUND}, got '100Ti'"),
    "gpu": ((*W0_LIMITS, "nvidia.com/gpu"), 10**15, f"{RAY_BOUND}, got 1000000000000000"),
    "request": (
        (*W0_CONTAINER, "resources", "requests", "cpu"), "2e14", f"{RAY_BOUND}, got '2e14'"
    ),
    "group-map": ((*W0, "resources", "custom"), "2e14", f"{RAY_BOUND}, got '2e14'"),
    "num-cpus": (
        (*PARAMS, "num-cpus"), "9" * 30, f"{RAY_BOUND}, got '{'9' * 30}'"
    ),
    "param-memory": (
        (*PARAMS, "memory"), "100000000000001", f"{RAY_BOUND} (bytes), got '100000000000001'"
    ),
    "json-float": (
        (*PARAMS, "resources"), '{"a": 1e300}', f"resource 'a' {RAY_BOUND}, got number 1e+300"
    ),
    "json-int": (
        (*PARAMS, "resources"), '{"a": 1' + "0" * 400 + "}",
        f"resource 'a' {RAY_BOUND}, got an integer of 401 digits",
    ),
    "json-deep": (
        (*PARAMS, "resources"), "[" * 100_000 + "]" * 100_000, f"{JSON_OBJECT}: nested too deeply"
    ),
    "head": (
        ("spec", "headGroupSpec", "rayStartParams", "num-cpus"), "100000000000001",
        f"{RAY_BOUND}, got '100000000000001'",
    ),
    "float-field": (
        (*W0, "idleTimeoutSeconds"), 10**400, "is out of range, got an integer of 401 digits"
    ),
    "int-field": (
        (*W0, "maxReplicas"), 10**5000, "must be <= 2147483647, got an integer of 5001 digits"
    ),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_bounds_name_the_field(case: str) -> None:
    path, value, message = FIELD_CASES[case]
    doc = fuzzdocs._set(base_doc(), path, value)  # (creates the group's resources map)
    assert errors_of(doc) == [f"{path_of(path)}: {message}"]


@pytest.mark.parametrize("amount", [str(MAX_NODE_RESOURCE), "90Ti", "100T"])
def test_the_bound_itself_is_accepted(amount: str) -> None:
    doc = base_doc()
    mutate(doc, (*W0_LIMITS, "memory"), amount)
    mutate(doc, (*W0_LIMITS, "cpu"), amount)
    group = parse_cluster_spec(doc).worker_groups[0]
    assert group.ray_resources["CPU"] == float(parse_quantity(amount))


def test_ray_resources_bounds_name_relative_paths() -> None:
    with pytest.raises(SpecError) as info:
        ray_resources({}, {"resources": {"limits": {"cpu": "2e14"}}}, {"GPU": "1e15"})
    assert info.value.errors == [
        f"resources.GPU: {RAY_BOUND}, got '1e15'",
        f"container.resources.limits.cpu: {RAY_BOUND}, got '2e14'",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: " + "[" * 100_000 + "]" * 100_000, "nested more than 100 levels deep"),
        ("a: " + "[" * 101 + "]" * 101, "nested more than 100 levels deep"),
        ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 200)),
         "nested more than 100 levels deep"),
        ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
            for i in range(9)
        ), "more than 1000000 values once aliases are expanded"),
        ("a: " + "9" * 5000, "an integer of 5000 digits"),
    ],
    ids=["flow-deep", "flow-101", "block-deep", "billion-laughs", "giant-int"],
)
def test_yaml_too_deep_too_large_or_unconvertible(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_cluster_spec(path)
    [message] = info.value.errors
    assert message.startswith(f"{path}: invalid YAML at line ")
    assert message.endswith(problem)


def test_anchors_and_moderate_depth_still_load(tmp_path: Path) -> None:
    import yaml

    doc = base_doc()
    text = yaml.safe_dump(doc).replace("limits:", "limits: &res", 1)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_cluster_spec(path).name == "test-cluster"


# ----------------------------------------------------------- hostile files


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_cluster_files_give_a_spec_or_a_clear_error(data: st.DataObject) -> None:
    """Random bad files (the classes of fuzzdocs): a SpecError naming paths, or a
    spec whose first autoscaler round plans without error. Never anything else."""
    case = fuzzdocs.spec_case(fuzzdocs.DrawSource(data.draw))
    outcome, detail = fuzzdocs.spec_verdict(case, timeout=20)
    assert outcome != "crash", detail


BAD_FILES = {
    "cpu-1e30": ((*W0_LIMITS, "cpu"), "1e30"),
    "num-cpus": ((*W0, "rayStartParams", "num-cpus"), "9" * 30),
    "json-deep": ((*W0, "rayStartParams", "resources"), "[" * 5000 + "]" * 5000),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_up_with_a_bad_file_exits_2_naming_the_field_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from rayscale.cli.main import app

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RAYSCALE_HOME", str(home))
    path_, value = BAD_FILES[name]
    doc = base_doc()
    mutate(doc, path_, value)
    cluster = tmp_path / "cluster.json"  # JSON is YAML
    cluster.write_text(fuzzdocs.dumps(doc, yaml=True))
    result = CliRunner().invoke(app, ["up", str(cluster), "--timeout", "5"])
    assert result.exit_code == 2, result.output
    assert "workerGroupSpecs[0]." in result.stderr
    assert not any(home.iterdir()), list(home.iterdir())
