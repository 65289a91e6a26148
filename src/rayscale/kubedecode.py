"""Warm lightkube's decoders up on one thread before several threads use them.

lightkube decodes API responses with msgspec, which compiles a type's decoder
on first use. Several threads doing that at once for the same type crash the
process with SIGSEGV: 20 of 20 fresh processes in a reproduction with 8
threads, 0 of 20 after this warm-up. Every process that decodes from several
threads (the operator under kopf, the vnode's watches) calls :func:`warm_up`
first, with every resource type it uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

_MINIMAL = b'{"apiVersion":"v1","kind":"X","metadata":{"name":"x","namespace":"y"}}'


def warm_up(resources: Iterable[Any]) -> None:
    """Decode each resource type once, as an object, a list and from a dict.

    The minimal documents need not validate: compiling the decoders is the point.
    """
    from lightkube.core import decoders

    for res in resources:
        for decode in (
            lambda r: decoders.decode_object(_MINIMAL, r),
            lambda r: decoders.decode_list(b'{"metadata":{},"items":[]}', r),
            lambda r: r.from_dict({"metadata": {"name": "x"}}),
        ):
            with contextlib.suppress(Exception):
                decode(res)
    with contextlib.suppress(Exception):
        decoders.decode_status(b'{"kind":"Status","apiVersion":"v1","metadata":{}}')
    with contextlib.suppress(Exception):
        decoders.decode_watch_event(b'{"type":"ADDED","object":{}}')
