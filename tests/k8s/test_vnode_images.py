"""The vnode's image map (no cluster needed): which program a known image's container runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from rayscale.vnode.config import load_config
from rayscale.vnode.images import ImageProgram, default_images, find_image, repository


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
