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
from rayscale.vnode.images import (
    ImageProgram,
    default_images,
    find_image,
    repository,
    unknown_image_message,
)
from tests.devtools import VNodeProcess, wait_for
from tests.k8s.helpers import pod_body, pod_log, wait_phase


@pytest.mark.parametrize("ref", [
    "redis", "redis:7.4.0", "docker.io/library/redis", "docker.io/library/redis:7.4.0",
    "library/redis:latest", "index.docker.io/library/redis",
    "redis@sha256:0123456789abcdef", "redis:7.4.0@sha256:0123456789abcdef",
])
def test_official_redis_references_are_one_image(ref: str) -> None:
    assert repository(ref) == "redis"
    found = find_image(default_images(), ref)
    assert found is not None and found.entrypoint == ["redis-server"]


@pytest.mark.parametrize(("ref", "entry"), [
    ("rayproject/ray:2.3.0", "rayproject/ray"),  # seed 000's tag: this machine's Ray runs
    ("rayproject/ray:nightly-gpu", "rayproject/ray"),
    ("docker.io/rayproject/ray-ml:2.9.0", "rayproject/ray-ml"),
    ("python:3.12-slim", "python"),
    ("busybox:1.36", "busybox"),
    ("rayscale:0.1.0", "rayscale"),
])
def test_the_default_map(ref: str, entry: str) -> None:
    found = find_image(default_images(), ref)
    assert found is not None and found.image == entry


@pytest.mark.parametrize("ref", [
    "bitnami/redis:7.4", "myregistry:5000/redis", "rediss", "rayproject/rayx",
    "quay.io/rayproject/ray:2.60.0", "nginx", "", None,
])
def test_other_images_are_not_run(ref: str | None) -> None:
    assert find_image(default_images(), ref) is None


def test_a_registry_port_is_not_a_tag() -> None:
    assert repository("myregistry:5000/team/redis:7") == "myregistry:5000/team/redis"


def test_entrypoint_semantics() -> None:
    redis = find_image(default_images(), "redis")
    assert redis is not None
    assert redis.argv([]) == ["redis-server"]
    assert redis.argv(["--port", "7000"]) == ["redis-server", "--port", "7000"]
    # the official image's entrypoint script runs `redis-server …` args as they are
    assert redis.argv(["redis-server", "/etc/r.conf"]) == ["redis-server", "/etc/r.conf"]
    with_cmd = ImageProgram(image="x/y", entrypoint=["prog"], cmd=["--default"])
    assert with_cmd.argv([]) == ["prog", "--default"]
    assert with_cmd.argv(["--mine"]) == ["prog", "--mine"]
    assert redis.volumes == ["/data"] and redis.working_dir == "/data"
    python = find_image(default_images(), "python:3.12")
    assert python is not None  # no entrypoint: args replace cmd
    assert python.argv([]) == ["python3"] and python.argv(["-V"]) == ["-V"]


def test_the_map_is_configurable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "vnode.yaml"
    path.write_text(yaml.safe_dump({"images": [
        {"image": "docker.io/bitnami/redis", "entrypoint": ["redis-server"],
         "volumes": ["/bitnami/redis/data"]},
        {"image": "registry.example.com/team/*", "cmd": ["bash"]}]}))
    cfg = load_config(path)
    found = find_image(cfg.image_map(), "bitnami/redis:7.4")
    assert found is not None and found.volumes == ["/bitnami/redis/data"]
    assert find_image(cfg.image_map(), "registry.example.com/team/ray-custom:1") is not None
    assert find_image(cfg.image_map(), "redis") is not None  # the defaults still apply
    path.write_text(yaml.safe_dump({"default_images": False, "images": [
        {"image": "bitnami/redis", "entrypoint": ["redis-server"]}]}))
    assert find_image(load_config(path).image_map(), "redis") is None
    with pytest.raises(ValidationError, match=r"images\.0\.volumes"):
        load_config(_write(tmp_path, {"images": [
            {"image": "redis", "entrypoint": ["redis-server"], "volumes": ["data"]}]}))
    with pytest.raises(ValidationError, match=r"images\.0\n.*entrypoint or a cmd"):
        load_config(_write(tmp_path, {"images": [{"image": "redis", "entrypoint": []}]}))


def test_the_unknown_image_message_names_the_image_and_the_fix() -> None:
    message = unknown_image_message("nginx:1.27", default_images())
    assert "'nginx:1.27'" in message and "rayproject/ray" in message and "images:" in message


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


def test_an_unknown_image_waits_with_err_image_pull_and_runs_nothing(
    kube: Client, vnode: VNodeProcess, namespace: str
) -> None:
    marker = f"ran-{namespace}"
    kube.create(pod_body("web", namespace, ["sh", "-c", f"echo {marker}; sleep 60"],
                         container={"image": "nginx:1.27"}))
    kube.create(pod_body("init", namespace, ["sleep", "60"], extra_spec={"initContainers": [
        {"name": "setup", "image": "ghcr.io/acme/setup:1", "command": ["true"]}]}))

    def waiting(name: str, init: bool) -> dict[str, str] | None:
        pod = kube.get(Pod, name, namespace=namespace)
        assert pod.status is not None
        statuses = (pod.status.initContainerStatuses if init
                    else pod.status.containerStatuses) or []
        waits = [s.state.waiting for s in statuses if s.state and s.state.waiting]
        if not waits or waits[0].reason != "ErrImagePull":
            return None
        assert pod.status.phase == "Pending"
        return {"message": waits[0].message or "", "id": statuses[0].containerID or ""}

    web = wait_for(lambda: waiting("web", init=False), 60, "web in ErrImagePull")
    assert "'nginx:1.27'" in web["message"] and "rayproject/ray" in web["message"]
    assert web["id"] == ""  # never started
    init = wait_for(lambda: waiting("init", init=True), 60, "init in ErrImagePull")
    assert "'ghcr.io/acme/setup:1'" in init["message"]
    main = kube.get(Pod, "init", namespace=namespace)
    assert main.status is not None and main.status.containerStatuses
    assert main.status.containerStatuses[0].state.waiting is not None  # type: ignore[union-attr]
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert marker not in out
    assert pod_log(vnode, kube.get(Pod, "web", namespace=namespace), "main") == ""


def test_python_and_busybox_images_run_without_command(
    kube: Client, vnode: VNodeProcess, namespace: str
) -> None:
    """Docker's rules: no ``command`` runs the image's entrypoint with ``args`` in place of
    its ``cmd`` (python's is ``python3``, no entrypoint: args are the whole command)."""
    kube.create(pod_body("py", namespace, [], container={
        "image": "python:3.12-slim", "command": None,
        "args": ["python3", "-c", "import sys; print('python', sys.version_info[0])"]}))
    kube.create(pod_body("bb", namespace, ["sh", "-c", "echo busybox $((6*7))"],
                         container={"image": "busybox:1.36"}))
    for name, expected in (("py", "python 3"), ("bb", "busybox 42")):
        pod = wait_phase(kube, name, namespace, {"Succeeded", "Failed"})
        out = pod_log(vnode, pod)
        assert pod.status is not None and pod.status.phase == "Succeeded", out
        assert expected in out.splitlines(), out
        statuses = pod.status.containerStatuses or []
        entry = {"py": "python", "bb": "busybox"}[name]
        assert statuses and statuses[0].imageID == f"rayscale-vnode://{entry}"
