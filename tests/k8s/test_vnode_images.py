"""The vnode's image map: which program a known image's container runs (pure), and a
``redis`` container without ``command`` serving for real on the dev cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from pydantic import ValidationError

from rayscale.ports import free_port
from rayscale.vnode.config import load_config
from rayscale.vnode.images import ImageProgram, default_images, find_image, repository
from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import wait_phase


@pytest.mark.parametrize("ref", [
    "redis", "redis:7.4.0", "docker.io/library/redis", "docker.io/library/redis:7.4.0",
    "library/redis:latest", "index.docker.io/library/redis",
    "redis@sha256:0123456789abcdef", "redis:7.4.0@sha256:0123456789abcdef",
])
def test_official_redis_references_are_one_image(ref: str) -> None:
    assert repository(ref) == "redis"
    found = find_image(default_images(), ref)
    assert found is not None and found.entrypoint == ["redis-server"]


@pytest.mark.parametrize("ref", [
    "bitnami/redis:7.4", "myregistry:5000/redis", "rediss", "rayproject/ray:2.52.0", "", None,
])
def test_other_images_are_not_redis(ref: str | None) -> None:
    assert find_image(default_images(), ref) is None


def test_a_registry_port_is_not_a_tag() -> None:
    assert repository("myregistry:5000/team/redis:7") == "myregistry:5000/team/redis"


def test_entrypoint_semantics() -> None:
    redis = default_images()[0]
    assert redis.argv([]) == ["redis-server"]
    assert redis.argv(["--port", "7000"]) == ["redis-server", "--port", "7000"]
    # the official image's entrypoint script runs `redis-server …` args as they are
    assert redis.argv(["redis-server", "/etc/r.conf"]) == ["redis-server", "/etc/r.conf"]
    with_cmd = ImageProgram(image="x/y", entrypoint=["prog"], cmd=["--default"])
    assert with_cmd.argv([]) == ["prog", "--default"]
    assert with_cmd.argv(["--mine"]) == ["prog", "--mine"]
    assert redis.volumes == ["/data"] and redis.working_dir == "/data"


def test_the_map_is_configurable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "vnode.yaml"
    path.write_text(yaml.safe_dump({"images": [
        {"image": "docker.io/bitnami/redis", "entrypoint": ["redis-server"],
         "volumes": ["/bitnami/redis/data"]}]}))
    cfg = load_config(path)
    assert find_image(cfg.images, "bitnami/redis:7.4") is not None
    assert find_image(cfg.images, "redis") is None  # the map replaces the default
    assert find_image(load_config(None).images, "redis:7.4.0") is not None
    with pytest.raises(ValidationError, match=r"images\.0\.volumes"):
        load_config(_write(tmp_path, {"images": [
            {"image": "redis", "entrypoint": ["redis-server"], "volumes": ["data"]}]}))
    with pytest.raises(ValidationError, match=r"images\.0\.entrypoint"):
        load_config(_write(tmp_path, {"images": [{"image": "redis", "entrypoint": []}]}))


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_redis_container_without_command_runs_redis_server(
    kube: Client, vnode: VNodeProcess, namespace: str
) -> None:
    port = free_port()
    kube.create(Pod.from_dict({  # type: ignore[arg-type]
        "metadata": {"name": "cache", "namespace": namespace},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                 "containers": [{
                     "name": "redis", "image": "docker.io/library/redis:7.4.0",
                     "args": ["--port", str(port), "--bind", "$(POD_IP)", "--save", ""],
                     "env": [{"name": "POD_IP",
                              "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 }]}}))
    pod = wait_phase(kube, "cache", namespace, {"Running"})
    assert pod.status is not None and pod.status.podIP

    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-h", pod.status.podIP, "-p", str(port), *args],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    wait_for(lambda: cli("PING") == "PONG", 30, "PONG from the pod's redis-server")
    # the image's WORKDIR is its VOLUME /data: a directory of the pod's own, mounted there
    assert cli("CONFIG", "GET", "dir").splitlines() == ["dir", "/data"]
    assert cli("CONFIG", "GET", "port").splitlines() == ["port", str(port)]
    kube.delete(Pod, "cache", namespace=namespace)
