"""Serve configs and RayService files for local mode: every problem named by field, and
what local mode sets in the config Serve gets (address, port, proxies)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayscale.api.serveconfig import ServeConfig
from rayscale.local.serve import RunningServe, local_document, preflight
from rayscale.local.service import kubernetes_only_fields
from rayscale.spec import (
    SpecError,
    load_serve_config,
    load_service,
    parse_serve_config,
    parse_service,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rayservice-local.yaml"
HEAD = "127.10.0.2"


def _service() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def _serve() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_service()["spec"]["serveConfigV2"])
    return config


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_serve_config(config)
    return caught.value.errors


def test_the_example_rayservice_loads_its_cluster_and_serve_config() -> None:
    spec = load_service(EXAMPLE)
    assert spec.name == "translator" == spec.cluster.name
    assert spec.cluster.metadata.labels["ray.io/originated-from-crd"] == "RayService"
    assert spec.cluster.spec == spec.service.spec.ray_cluster_config
    app = spec.serve.applications[0]
    assert (app.name, app.import_path, app.route_prefix) == (
        "translator", "translator:app", "/translate")
    translator = app.deployments[1]
    assert translator.autoscaling_config is not None
    assert (translator.autoscaling_config.min_replicas,
            translator.autoscaling_config.max_replicas) == (1, 3)
    assert translator.user_config == {"language": "fr"}
    # `serve deploy` takes the RayService file too: its serveConfigV2
    assert load_serve_config(EXAMPLE) == spec.serve
    assert kubernetes_only_fields(spec) == []


def test_fields_are_kept_as_written_for_serve() -> None:
    config = _serve()
    config["applications"][0]["deployments"][1]["graceful_shutdown_timeout_s"] = 3
    config["logging_config"] = {"encoding": "JSON"}
    document = parse_serve_config(config).to_document()
    assert document["applications"][0]["deployments"][1]["graceful_shutdown_timeout_s"] == 3
    assert document["logging_config"] == {"encoding": "JSON"}
    assert "http_options" not in document  # nothing added that was not written


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["applications"][0].pop("import_path"),
     "applications[0].import_path: required"),
    (lambda c: c["applications"][0].update(import_path="translator"),
     "applications[0].import_path: must be 'module.attribute' or 'module:attribute'"),
    (lambda c: c["applications"][0].update(import_path=3),
     "applications[0].import_path: "),
    (lambda c: c["applications"][0].update(route_prefix="translate"),
     "applications[0].route_prefix: must start with '/'"),
    (lambda c: c["applications"][0]["deployments"][1].update(num_replicas=2),
     "applications[0].deployments[1].num_replicas: give num_replicas or autoscaling_config"),
    (lambda c: c["applications"][0]["deployments"][1]["autoscaling_config"].update(
        max_replicas=0), "applications[0].deployments[1].autoscaling_config.max_replicas: "),
    (lambda c: c["applications"][0]["deployments"][1]["autoscaling_config"].update(
        min_replicas=5), "autoscaling_config.max_replicas: must be >= min_replicas (3 < 5)"),
    (lambda c: c["applications"][0]["deployments"][1]["ray_actor_options"].update(
        num_cpus=-1), "applications[0].deployments[1].ray_actor_options.num_cpus: "),
    (lambda c: c["applications"][0]["deployments"][0].pop("name"),
     "applications[0].deployments[0].name: required"),
    (lambda c: c["applications"][0]["deployments"].append({"name": "Api"}),
     "applications[0].deployments[2].name: duplicate deployment name 'Api'"),
    (lambda c: c["applications"].append(copy.deepcopy(c["applications"][0])),
     "applications[1].name: duplicate application name 'translator'"),
    (lambda c: c.update(applications=[]), "applications: must have at least 1 item(s)"),
    (lambda c: c.update(proxy_location="Everywhere"), "proxy_location: must be one of"),
    (lambda c: c.update(http_options={"port": 70000}), "http_options.port: must be <= 65535"),
])
def test_a_bad_serve_config_names_the_field(change: Any, message: str) -> None:
    config = _serve()
    change(config)
    problems = _problems(config)
    assert any(message in p for p in problems), problems


def test_every_problem_of_a_rayservice_is_reported_at_once_by_field() -> None:
    doc = _service()
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = -1
    config = _serve()
    config["applications"][0].pop("import_path")
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    with pytest.raises(SpecError) as caught:
        parse_service(doc)
    errors = "\n".join(caught.value.errors)
    assert "rayClusterConfig.workerGroupSpecs[0].maxReplicas" in errors
    assert "serveConfigV2.applications[0].import_path: required" in errors


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["spec"].pop("serveConfigV2"), "serveConfigV2: required"),
    (lambda d: d["spec"].update(serveConfigV2="applications: [oops"),
     "serveConfigV2: invalid YAML at line 1"),
    (lambda d: d["spec"].update(serveConfigV2="- a\n- b\n"), "serveConfigV2: expected a mapping"),
    (lambda d: d["spec"].update(serveConfigV2={"applications": []}), "serveConfigV2: "),
    (lambda d: d["spec"].update(suspend=True), "suspend: a suspended RayService runs nothing"),
    (lambda d: d.update(kind="RayCluster"), "kind: must be 'RayService'"),
    (lambda d: d["metadata"].update(name="Not_A_Name"), "metadata.name: must be a DNS-1035"),
])
def test_a_bad_rayservice_names_the_field(change: Any, message: str) -> None:
    doc = _service()
    change(doc)
    with pytest.raises(SpecError) as caught:
        parse_service(doc)
    assert any(message in p for p in caught.value.errors), caught.value.errors


def test_kubernetes_only_fields_are_named() -> None:
    doc = _service()
    doc["spec"]["upgradeStrategy"] = {"type": "NewCluster"}
    doc["spec"]["rayClusterDeletionDelaySeconds"] = 10
    assert kubernetes_only_fields(parse_service(doc)) == [
        "upgradeStrategy", "rayClusterDeletionDelaySeconds"]


def _local(config: dict[str, Any], running: RunningServe | None = None,
           taken: tuple[int, ...] = ()) -> Any:
    return local_document(ServeConfig.model_validate(config), HEAD, running,
                          pick_port=lambda: 41234,
                          port_free=lambda host, port: port not in taken)


def test_local_mode_serves_on_the_heads_loopback_address_with_one_proxy() -> None:
    local = _local(_serve())
    assert local.document["http_options"] == {"host": HEAD, "port": 41234}  # a free port
    assert local.document["proxy_location"] == "HeadOnly"
    assert (local.host, local.port, local.notices) == (HEAD, 41234, [])
    # what KubeRay manifests often say: every address, a proxy per node
    config = {**_serve(), "http_options": {"host": "0.0.0.0", "port": 8000},
              "proxy_location": "EveryNode"}
    local = _local(config)
    assert local.document["http_options"] == {"host": HEAD, "port": 8000}
    assert local.document["proxy_location"] == "HeadOnly"
    assert any(n.startswith("proxy_location: EveryNode runs as HeadOnly") for n in local.notices)
    assert any(n.startswith("http_options.host: ") for n in local.notices)
    disabled = _local({**_serve(), "proxy_location": "Disabled"})
    assert disabled.port is None and disabled.document["proxy_location"] == "Disabled"


def test_a_running_serve_keeps_its_port_and_a_config_asking_for_another_is_refused() -> None:
    running = RunningServe(HEAD, 40000, "HeadOnly")
    assert _local(_serve(), running).document["http_options"]["port"] == 40000
    with pytest.raises(SpecError, match=r"http_options.port: Serve already listens on port "
                                        r"40000"):
        _local({**_serve(), "http_options": {"port": 8000}}, running)
    with pytest.raises(SpecError, match="proxy_location: Serve already runs with EveryNode"):
        _local(_serve(), RunningServe(HEAD, 40000, "EveryNode"))
    with pytest.raises(SpecError, match=r"http_options.host: Serve already runs in this "
                                        r"cluster listening on 0\.0\.0\.0"):
        _local(_serve(), RunningServe("0.0.0.0", 8000, "HeadOnly"))
    with pytest.raises(SpecError, match=f"http_options.port: port 8000 is in use on {HEAD}"):
        _local({**_serve(), "http_options": {"port": 8000}}, taken=(8000,))


def test_a_serve_started_again_gets_its_previous_port_back_when_it_is_free() -> None:
    config = ServeConfig.model_validate(_serve())
    again = local_document(config, HEAD, None, pick_port=lambda: 41234,
                           port_free=lambda host, port: True, previous_port=40000)
    assert again.port == 40000
    taken = local_document(config, HEAD, None, pick_port=lambda: 41234,
                           port_free=lambda host, port: port != 40000, previous_port=40000)
    assert taken.port == 41234


def test_grpc_servicers_and_missing_local_code_are_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    config = {**_serve(), "grpc_options": {"grpc_servicer_functions": ["m:add"]}}
    with pytest.raises(SpecError, match=r"grpc_options.grpc_servicer_functions: .*\[::\]"):
        preflight(parse_serve_config(config), EXAMPLE.parent)
    preflight(parse_serve_config(_serve()), EXAMPLE.parent)  # serve_app/ is there
    with pytest.raises(SpecError, match=r"applications\[0\].runtime_env.working_dir: no such"):
        preflight(parse_serve_config(_serve()), tmp_path)
    # Ray Serve's own schema, with the field named
    config = _serve()
    config["applications"][0]["deployments"][1]["max_queued_requests"] = "many"
    with pytest.raises(SpecError, match=r"applications\[0\].deployments\[1\]."
                                        r"max_queued_requests"):
        preflight(parse_serve_config(config), EXAMPLE.parent)
