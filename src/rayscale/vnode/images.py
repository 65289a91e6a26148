"""Images the virtual node knows: an image reference -> a program of this machine.

The vnode runs no container images. It runs a container only when its image is
in the vnode's image map; a container of any other image waits with
``ErrImagePull`` and a message naming the image, instead of running something
that is not what the manifest asked for. The default map:

* ``rayproject/ray`` (and ``ray-ml``, ``ray-llm``): this environment's Ray (the
  venv's ``ray`` and ``python`` first on the pod's PATH), whatever the tag;
* ``rayscale``: this environment's rayscale (the operator, the autoscaler);
* ``python``: this machine's ``python3`` (the venv's);
* ``busybox``: this machine's ``sh`` and coreutils (``sleep``, ``cat``, ``echo``…);
* ``redis``: the host's ``redis-server`` (KubeRay's external-Redis sample).

An entry is the image's Docker metadata, mapped onto this machine:

* ``entrypoint`` and ``cmd``: what runs when the container has no ``command``
  (Docker semantics: ``command`` replaces the entrypoint, ``args`` replace
  ``cmd``). The program is found on the pod's PATH. Official images' entrypoint
  scripts run ``args`` that start with the program itself as they are
  (``args: [redis-server, /etc/redis.conf]``), and so does the vnode.
* ``volumes``: the image's ``VOLUME`` paths; each pod gets a fresh directory
  of its own there (Docker's anonymous volume), also when ``command`` is set.
* ``working_dir``: the image's ``WORKDIR`` (a container's ``workingDir`` wins).

Matching ignores the tag and digest and Docker Hub's implicit prefixes:
``redis``, ``redis:7.4.0``, ``docker.io/library/redis@sha256:…`` are one image.
An entry's ``image`` may be a glob over repositories (``registry.example.com/team/*``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    image: str = Field(min_length=1)  # a repository or a glob: redis, ghcr.io/team/*
    entrypoint: list[str] = Field(default_factory=list)
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

    @model_validator(mode="after")
    def _runs_something(self) -> ImageProgram:
        if not self.entrypoint and not self.cmd:
            raise ValueError("an image needs an entrypoint or a cmd")
        return self

    def matches(self, reference: str) -> bool:
        return fnmatchcase(repository(reference), repository(self.image))

    def argv(self, args: list[str]) -> list[str]:
        """The command line of a container of this image without ``command``."""
        if not self.entrypoint:
            return list(args or self.cmd)
        if args and args[0] == self.entrypoint[-1]:
            return list(args)  # `args: [redis-server, …]`: the entrypoint script runs it as is
        return [*self.entrypoint, *(args or self.cmd)]


def default_images() -> list[ImageProgram]:
    """The images the vnode runs out of the box (see the module docstring); their
    ``cmd`` is the image's own (Ray's and busybox's: a shell; python's: ``python3``)."""
    return [
        ImageProgram(image="rayproject/ray", cmd=["bash"]),
        ImageProgram(image="rayproject/ray-ml", cmd=["bash"]),
        ImageProgram(image="rayproject/ray-llm", cmd=["bash"]),
        ImageProgram(image="rayscale", cmd=["rayscale"]),
        ImageProgram(image="python", cmd=["python3"]),
        ImageProgram(image="busybox", cmd=["sh"]),
        # ENTRYPOINT redis-server via its script, WORKDIR and VOLUME /data
        ImageProgram(image="redis", entrypoint=["redis-server"], volumes=["/data"],
                     working_dir="/data"),
    ]


def find_image(images: list[ImageProgram], reference: str | None) -> ImageProgram | None:
    """The first entry for ``reference`` (None: an image the vnode does not run)."""
    if not reference:
        return None
    return next((i for i in images if i.matches(reference)), None)


def unknown_image_message(reference: str | None, images: list[ImageProgram]) -> str:
    """The waiting message of a container whose image the vnode does not run."""
    known = ", ".join(dict.fromkeys(i.image for i in images)) or "none"
    what = f"image {reference!r}" if reference else "a container without an image"
    return (f"the virtual node cannot run {what}: it runs no images, only those its "
            f"image map names ({known}); add it under `images:` in the vnode's config")
