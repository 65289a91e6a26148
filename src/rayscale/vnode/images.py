"""Images the virtual node knows: an image reference -> a program of this machine.

The vnode runs no container images. A container normally needs a ``command``;
for a few well-known images it knows what the image would run, so manifests
written for a real cluster work unchanged (KubeRay's external-Redis sample runs
``redis:7.4.0``). An entry is the image's Docker metadata, mapped onto this
machine:

* ``entrypoint`` (+ ``cmd``): what runs when the container has no ``command``
  (Docker semantics: ``command`` replaces the entrypoint, ``args`` replace
  ``cmd``). The program is found on the pod's PATH (the host's
  ``/usr/bin/redis-server`` for ``redis``). Official images' entrypoint scripts
  run ``args`` that start with the program itself as they are
  (``args: [redis-server, /etc/redis.conf]``), and so does the vnode.
* ``volumes``: the image's ``VOLUME`` paths; each pod gets a fresh directory
  of its own there (Docker's anonymous volume), also when ``command`` is set.
* ``working_dir``: the image's ``WORKDIR`` (a container's ``workingDir`` wins).

Matching ignores the tag and digest and Docker Hub's implicit prefixes:
``redis``, ``redis:7.4.0``, ``docker.io/library/redis@sha256:…`` are one image.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HUB_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def repository(reference: str) -> str:
    """An image reference without tag, digest and Docker Hub's implicit prefixes."""
    ref = reference.strip().split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:  # a tag (a colon before the last slash is a registry port)
        ref = ref[:colon]
    for prefix in _HUB_PREFIXES:
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    return ref.removeprefix("library/")


class ImageProgram(BaseModel):
    """What a container of one image runs here (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)  # a repository: redis, bitnami/redis, ghcr.io/x/y
    entrypoint: list[str] = Field(min_length=1)
    cmd: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    working_dir: str | None = None

    @field_validator("volumes")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"volume path {path!r} must be absolute")
        return value

    def argv(self, args: list[str]) -> list[str]:
        """The command line of a container of this image without ``command``."""
        if args and args[0] == self.entrypoint[-1]:
            return list(args)  # `args: [redis-server, …]`: the entrypoint script runs it as is
        return [*self.entrypoint, *(args or self.cmd)]


def default_images() -> list[ImageProgram]:
    """The official ``redis`` image (ENTRYPOINT redis-server via its script, WORKDIR and
    VOLUME /data)."""
    return [ImageProgram(image="redis", entrypoint=["redis-server"], volumes=["/data"],
                         working_dir="/data")]


def find_image(images: list[ImageProgram], reference: str | None) -> ImageProgram | None:
    """The entry for ``reference`` (None: an image the vnode does not know)."""
    if not reference:
        return None
    wanted = repository(reference)
    return next((i for i in images if repository(i.image) == wanted), None)
