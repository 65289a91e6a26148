"""The ClusterState document (plan-format.md), parsed and checked.

Parsing is strict about types (a count given as ``"3"`` is an error) and
lenient about unknown keys (documents written by newer tools still parse).
Every error names its JSON path: ``nodes[3].group: unknown group 'gpu'``.

Numbers are bounded by what Ray can hold, so that nothing overflows later:
a resource amount is at most :data:`MAX_AMOUNT` (Ray keeps amounts as int64
ten-thousandths, its ``FixedPoint``), and every integer (counts, ``min``,
``max``, ``max_nodes``, ``priority``) fits an int64, as in Ray's protobufs.
Times and fractions only need to be finite.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayscale.planner.selectors import Selector, key_error, parse_selector

NodeStatus = Literal["running", "pending", "terminating"]
GangStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
UpscalingMode = Literal["Default", "Conservative", "Aggressive"]

#: The largest resource amount Ray can hold: (2^63 - 1) / 10^4, in whole units.
MAX_AMOUNT = 922_337_203_685_477
#: The largest integer (Ray's int64).
MAX_INT = 2**63 - 1

NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_INT)]
Int64 = Annotated[int, Field(ge=-MAX_INT - 1, le=MAX_INT)]
Amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Resources = dict[str, Amount]


class PlanFormatError(ValueError):
    """A document that does not follow plan-format.md; the message names the path."""


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


def _checked_selector(selector: dict[str, str]) -> dict[str, str]:
    """A label selector in Ray's syntax (selectors.py); the error names the key."""
    for key, condition in selector.items():
        try:
            parse_selector({key: condition})
        except ValueError as exc:
            raise ValueError(f".{key}: {exc}") from None
    return selector


def _checked_labels(labels: dict[str, str] | None) -> dict[str, str] | None:
    for key in labels or {}:
        problem = key_error(key)
        if problem:
            raise ValueError(problem)
    return labels


LabelSelector = dict[str, str]


class Group(_Model):
    resources: Resources
    min: NonNegInt = 0
    max: NonNegInt | None = None
    idle_timeout_s: NonNegFloat | None = None
    priority: Int64 = 0
    launchable: bool = True
    memory_target_fraction: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    #: What one node of the group takes from each quota, by the quota's own keys
    #: (``{"pods": 1, "requests.cpu": 2}``); empty: the group is not under quotas.
    cost: dict[str, Amount] = Field(default_factory=dict)

    _labels = field_validator("labels")(_checked_labels)

    @property
    def upper(self) -> float:
        """max as a number (unbounded when absent)."""
        return math.inf if self.max is None else self.max


class Node(_Model):
    id: Annotated[str, Field(min_length=1)]
    group: str
    status: NodeStatus
    total: Resources | None = None
    available: Resources | None = None
    idle_s: NonNegFloat | None = None
    memory_used_fraction: NonNegFloat | None = None
    #: The node's Ray labels; None: its group's labels (a fixed node: none).
    labels: dict[str, str] | None = None

    _labels = field_validator("labels")(_checked_labels)


class FallbackOption(_Model):
    """One entry of Ray's ``fallback_strategy``."""

    label_selector: LabelSelector = Field(default_factory=dict)

    _selector = field_validator("label_selector")(_checked_selector)


class Shape(_Model):
    resources: Resources
    count: NonNegInt = 1
    #: Ray's ``label_selector``: the nodes this demand may use (empty: any).
    label_selector: LabelSelector = Field(default_factory=dict)
    #: Ray's ``fallback_strategy``: further selectors, tried in order after the first.
    fallback_strategy: list[FallbackOption] = Field(default_factory=list)

    _selector = field_validator("label_selector")(_checked_selector)

    def alternatives(self) -> tuple[Selector, ...]:
        """The selectors this demand may use, preferred first; () when it may use any node."""
        return _alternatives([self.label_selector, *(f.label_selector for f in
                                                     self.fallback_strategy)])


class Gang(_Model):
    strategy: GangStrategy
    bundles: Annotated[list[Resources], Field(min_length=1)]
    count: NonNegInt = 1
    #: Ray's ``bundle_label_selector``: one selector per bundle (empty list: none).
    bundle_label_selector: list[LabelSelector] = Field(default_factory=list)

    @field_validator("bundle_label_selector")
    @classmethod
    def _selectors(cls, selectors: list[LabelSelector]) -> list[LabelSelector]:
        for i, selector in enumerate(selectors):
            try:
                _checked_selector(selector)
            except ValueError as exc:
                raise ValueError(f"[{i}]{exc}") from None
        return selectors

    @model_validator(mode="after")
    def _one_per_bundle(self) -> Gang:
        if self.bundle_label_selector and len(self.bundle_label_selector) != len(self.bundles):
            raise ValueError(
                f".bundle_label_selector: one selector per bundle, got "
                f"{len(self.bundle_label_selector)} for {len(self.bundles)} bundles"
            )
        return self

    def bundle_alternatives(self, i: int) -> tuple[Selector, ...]:
        """Bundle ``i``'s selector as alternatives (one, or none)."""
        if not self.bundle_label_selector:
            return ()
        return _alternatives([self.bundle_label_selector[i]])


def _alternatives(selectors: list[LabelSelector]) -> tuple[Selector, ...]:
    """Parsed selectors; () when the first is empty (any node: fallbacks never apply)."""
    parsed = tuple(parse_selector(s) for s in selectors)
    if not parsed or not parsed[0]:
        return ()
    return parsed


class Demand(_Model):
    tasks: list[Shape] = Field(default_factory=list)
    gangs: list[Gang] = Field(default_factory=list)
    floor: list[Shape] = Field(default_factory=list)


class Quota(_Model):
    """What may still be launched under one quota (a namespace's ResourceQuota, what
    Kueue admitted): ``left`` by key; a group's ``cost`` says what a node takes."""

    name: Annotated[str, Field(min_length=1)]
    left: dict[str, Amount]


class Options(_Model):
    upscaling_mode: UpscalingMode = "Default"
    idle_timeout_s: NonNegFloat = 60.0
    max_nodes: NonNegInt | None = None


class ClusterState(_Model):
    groups: dict[str, Group] = Field(default_factory=dict)
    nodes: list[Node] = Field(default_factory=list)
    demand: Demand = Field(default_factory=Demand)
    options: Options = Field(default_factory=Options)
    quotas: list[Quota] = Field(default_factory=list)

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: dict[str, Group]) -> dict[str, Group]:
        for name in groups:
            if not name:
                raise ValueError("a group name must not be empty")
        return groups


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "$"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    # pydantic adds the tag of a union/literal member; drop those from the path
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    reason = _reason(err)
    if reason.startswith((".", "[")):  # the validator went deeper: its own path comes first
        return f"{_path(loc)}{reason}"
    return f"{_path(loc)}: {reason}"


def _reason(err: Any) -> str:
    kind, value = err["type"], err.get("input")
    big = isinstance(value, int) and not isinstance(value, bool)
    if kind == "float_type" and big:  # an integer no float can hold
        return f"out of range, got {_shown(value)}"
    if kind == "less_than_equal":
        bound = int((err.get("ctx") or {}).get("le", 0))
        why = " (the most Ray can hold)" if bound == MAX_AMOUNT else " (an int64)"
        return f"must be at most {bound}{why}, got {_shown(value)}"
    if kind == "greater_than_equal" and big and value < -MAX_INT:
        return f"must be at least {-MAX_INT - 1} (an int64), got {_shown(value)}"
    return str(err["msg"]).removeprefix("Value error, ")


def _shown(value: object) -> str:
    """``repr(value)`` for a message, short (an int of 5000 digits has no repr)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {int(abs(value).bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:25]}... ({len(text)} chars)"


def _check_consistency(state: ClusterState) -> None:
    for name, group in state.groups.items():
        if group.max is not None and group.max < group.min:
            raise PlanFormatError(
                f"groups.{name}.max: must be >= min ({group.max} < {group.min})"
            )
    seen: dict[str, int] = {}
    for i, node in enumerate(state.nodes):
        if node.id in seen:
            raise PlanFormatError(
                f"nodes[{i}].id: duplicate node id {node.id!r} (also nodes[{seen[node.id]}])"
            )
        seen[node.id] = i
        # A node outside `groups` is fixed (the head). Only nodes we launched can
        # be pending, so a pending node must belong to a scalable group.
        if node.status == "pending" and node.group not in state.groups:
            raise PlanFormatError(f"nodes[{i}].group: unknown group {node.group!r}")


def parse_state(document: Any) -> ClusterState:
    """Validate a ClusterState document; raise :class:`PlanFormatError` naming the path."""
    if not isinstance(document, Mapping):
        raise PlanFormatError(f"$: expected a JSON object, got {type(document).__name__}")
    # Validating 10,000 nodes creates a few hundred thousand objects, none of
    # them garbage; the cyclic collector, which would walk the whole heap for
    # nothing now and then (20-30 ms), waits until the document is parsed.
    collecting = gc.isenabled()
    gc.disable()
    try:
        state = ClusterState.model_validate(dict(document))
    except ValidationError as exc:
        raise PlanFormatError(_first_error(exc)) from None
    finally:
        if collecting:
            gc.enable()
    _check_consistency(state)
    return state
