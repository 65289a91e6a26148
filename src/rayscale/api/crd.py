"""CustomResourceDefinitions of the ``ray.io/v1`` kinds, made from the models.

``crd("RayCluster")`` is the apiextensions.k8s.io/v1 CustomResourceDefinition
that ``rayscale crds`` writes to ``deploy/crds``. Its ``openAPIV3Schema`` is
the model's JSON schema (``model_json_schema(by_alias=True)``) in the
structural form Kubernetes wants:

- ``$ref`` inlined; titles, descriptions and defaults dropped (the API server
  stores what the manifest says; the models apply KubeRay's defaults);
- an optional field (``X | None``) is ``X``; ``required`` lists only the
  fields the model requires;
- integers bounded to int32 are ``format: int32``; an exclusive bound is
  OpenAPI 3.0's ``exclusiveMinimum: true``; a one-value ``Literal`` an enum;
- a map (``dict[str, str]``) keeps ``additionalProperties``; a quantity
  (``str | int | float``) is ``x-kubernetes-int-or-string``;
- a passthrough object (``dict[str, Any]``, a pod template) is an object whose
  fields are all kept (``x-kubernetes-preserve-unknown-fields``).

What Kubernetes needs beyond the models is in the tables below: the objects
whose unknown fields are kept, CEL rules, list-map keys, the name rule on
``metadata.name``, printer columns. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from rayscale.api.base import CRD_DEFAULT, Condition, KubeModel
from rayscale.api.pod import PodTemplateSpec
from rayscale.api.raycluster import (
    DNS1035_PATTERN,
    AutoscalerOptions,
    HeadGroupSpec,
    RayCluster,
    RayClusterStatus,
    WorkerGroupSpec,
)
from rayscale.api.raycronjob import RayCronJob, RayCronJobStatus
from rayscale.api.rayjob import RayJob, RayJobStatus
from rayscale.api.rayservice import RayService, RayServiceStatuses

GROUP = "ray.io"
VERSION = "v1"
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

#: The kinds, and the model each CRD is made from.
MODELS: dict[str, type[KubeModel]] = {
    "RayCluster": RayCluster,
    "RayJob": RayJob,
    "RayService": RayService,
    "RayCronJob": RayCronJob,
}

#: Objects kept as written, unpruned and unchecked: Kubernetes checks pods.
OPAQUE: frozenset[type[KubeModel]] = frozenset({PodTemplateSpec})

#: Objects whose fields beyond the model's are kept rather than pruned: the
#: group specs and autoscaler options (fields of newer KubeRay versions), and
#: status (what KubeRay or other tools write there).
PRESERVE_UNKNOWN: frozenset[type[KubeModel]] = frozenset({
    HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions, Condition,
    RayClusterStatus, RayJobStatus, RayServiceStatuses, RayCronJobStatus,
})

#: CEL rules (``x-kubernetes-validations``) of an object, as its model validates it.
VALIDATIONS: dict[type[KubeModel], list[dict[str, str]]] = {
    WorkerGroupSpec: [{
        "rule": "!has(self.minReplicas) || !has(self.maxReplicas)"
                " || self.minReplicas <= self.maxReplicas",
        "message": "maxReplicas must be >= minReplicas",
    }],
}
# rayStartParams keys are not checked here: a CEL rule over a map whose keys have
# no length bound costs ~80x the API server's budget. The models check them (the
# operator refuses the spec with an InvalidRayClusterSpec event).

#: Lists of these objects are maps keyed by these fields (server-side apply merges by key).
LIST_MAP_KEYS: dict[type[KubeModel], list[str]] = {Condition: ["type"]}

#: ``metadata.name`` rules, by kind, as the model checks them.
NAME_RULES: dict[str, dict[str, Any]] = {
    "RayCluster": {"type": "string", "maxLength": 63, "pattern": DNS1035_PATTERN},
}


def _column(name: str, type_: str, path: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("age", "date", ".metadata.creationTimestamp")
#: rayscale's own, only in ``-o wide`` (KubeRay's default columns stay as they are): the
#: Kueue LocalQueue a RayCluster or RayJob is queued in
_QUEUE = _column("queue", "string", r".metadata.labels.kueue\.x-k8s\.io/queue-name", priority=1)

#: ``kubectl get`` columns: KubeRay v1.7's ``+kubebuilder:printcolumn`` markers, in order
#: (and a wide ``queue`` column).
PRINTER_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "RayCluster": [
        _column("desired workers", "integer", ".status.desiredWorkerReplicas"),
        _column("available workers", "integer", ".status.availableWorkerReplicas"),
        _column("cpus", "string", ".status.desiredCPU"),
        _column("memory", "string", ".status.desiredMemory"),
        _column("gpus", "string", ".status.desiredGPU"),
        _column("tpus", "string", ".status.desiredTPU", priority=1),
        _column("status", "string", ".status.state"),
        _AGE,
        _column("head pod IP", "string", ".status.head.podIP", priority=1),
        _column("head service IP", "string", ".status.head.serviceIP", priority=1),
        _QUEUE,
    ],
    "RayJob": [
        _column("job status", "string", ".status.jobStatus"),
        _column("deployment status", "string", ".status.jobDeploymentStatus"),
        _column("ray cluster name", "string", ".status.rayClusterName"),
        _column("start time", "string", ".status.startTime"),
        _column("end time", "string", ".status.endTime"),
        _AGE,
        _QUEUE,
    ],
    "RayService": [
        _column("service status", "string", ".status.serviceStatus"),
        _column("num serve endpoints", "string", ".status.numServeEndpoints"),
    ],
    "RayCronJob": [
        _column("schedule", "string", ".spec.schedule"),
        _column("timezone", "string", ".spec.timeZone"),
        _column("last schedule", "date", ".status.lastScheduleTime"),
        _AGE,
        _column("suspend", "boolean", ".spec.suspend"),
    ],
}

#: JSON-schema keys that mean the same in a CRD, copied as they are.
_KEPT = frozenset({
    "type", "enum", "format", "pattern", "minLength", "maxLength", "minItems", "maxItems",
    "minimum", "maximum", "minProperties", "maxProperties", "x-kubernetes-validations",
})
#: Keys that carry no validation (documentation, defaults the models apply).
_DROPPED = frozenset({"title", "description", "default", "examples"})
_QUANTITY_TYPES = [{"type": "string"}, {"type": "integer"}, {"type": "number"}]


def plural(kind: str) -> str:
    return kind.lower() + "s"


def crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind`` (``RayCluster``, ``RayJob``...)."""
    if kind not in MODELS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(MODELS)})")
    document: dict[str, Any] = _fresh({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural(kind)}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "rayscale"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural(kind),
                "singular": kind.lower(),
                "categories": ["all"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS[kind],
                "schema": {"openAPIV3Schema": schema(kind)},
            }],
        },
    })
    return document


def _fresh(value: Any) -> Any:
    """A copy sharing no dict or list (with the tables, or between two places)."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


def schema(kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``kind``."""
    model = MODELS[kind]
    raw = model.model_json_schema(by_alias=True)
    defs = _definitions(raw, model)
    root = _Converter(defs).convert({k: v for k, v in raw.items() if k != "$defs"}, model)
    properties = root["properties"]
    # apiVersion, kind and metadata are the API machinery's; a CRD may only
    # constrain metadata.name and metadata.generateName.
    metadata: dict[str, Any] = {"type": "object"}
    if kind in NAME_RULES:
        metadata["properties"] = {"name": NAME_RULES[kind]}
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = metadata
    root["required"] = [f for f in root.get("required", []) if f in ("spec", "status")]
    if not root["required"]:
        del root["required"]
    return root


def _definitions(raw: dict[str, Any], model: type[KubeModel]) -> dict[str, tuple[type, Any]]:
    """``$defs`` by name, each with its model class (pydantic names them by class)."""
    classes = {cls.__name__: cls for cls in _models(model)}
    defs: dict[str, tuple[type, Any]] = {}
    for name, body in raw.get("$defs", {}).items():
        if name not in classes:
            raise ValueError(f"$defs/{name}: no model class of that name in {model.__name__}")
        defs[name] = (classes[name], body)
    defs[model.__name__] = (model, raw)
    return defs


def _models(model: type[KubeModel]) -> set[type[KubeModel]]:
    """``model`` and every model its fields use."""
    found: set[type[KubeModel]] = set()
    todo = [model]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.add(cls)
        for field in cls.model_fields.values():
            todo.extend(_model_args(field.annotation))
    return found


def _model_args(annotation: Any) -> list[type[KubeModel]]:
    if isinstance(annotation, type) and issubclass(annotation, KubeModel):
        return [annotation]
    out: list[type[KubeModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        out.extend(_model_args(arg))
    return out


class _Converter:
    def __init__(self, defs: dict[str, tuple[type, Any]]) -> None:
        self.defs = defs

    def convert(self, node: dict[str, Any], model: type | None = None) -> dict[str, Any]:
        """``node`` (a JSON schema; ``model`` if it is a model's) as a structural schema."""
        node = dict(node)
        if "$ref" in node:
            name = node.pop("$ref").rsplit("/", 1)[-1]
            cls, body = self.defs[name]
            return self.convert({**body, **node}, cls)
        if "anyOf" in node:
            return self._any_of(node)
        if "const" in node:
            node["enum"] = [node.pop("const")]
        out: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in node.items():
            if key == "default" and node.get(CRD_DEFAULT):
                out["default"] = value  # a default the API server applies (base.CRD_DEFAULT)
                continue
            if key in _DROPPED or key == CRD_DEFAULT:
                continue
            if key == "exclusiveMinimum":
                out["minimum"], out["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                out["maximum"], out["exclusiveMaximum"] = value, True
            elif key in _KEPT:
                out.setdefault(key, value)
            elif key in ("properties", "required", "additionalProperties", "items"):
                extra[key] = value
            else:
                raise ValueError(f"JSON schema key {key!r} has no CRD equivalent: {node}")
        if out.get("type") == "integer":
            _int_format(out)
        if "items" in extra:
            out["items"] = self.convert(extra["items"])
            item_model = _model_of(extra["items"], self.defs)
            if item_model in LIST_MAP_KEYS:
                out["x-kubernetes-list-type"] = "map"
                out["x-kubernetes-list-map-keys"] = LIST_MAP_KEYS[item_model]
        if out.get("type") == "object":
            self._object(out, extra, model)
        return out

    def _any_of(self, node: dict[str, Any]) -> dict[str, Any]:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        # the field's own keys (constraints written on the field) apply to the one type
        siblings = {k: v for k, v in node.items() if k not in _DROPPED}
        if options == _QUANTITY_TYPES and not siblings:
            return {"x-kubernetes-int-or-string": True}
        if len(options) != 1:
            raise ValueError(f"a union has no structural CRD schema: {options}")
        (option,) = options
        return self.convert({**option, **siblings})

    def _object(self, out: dict[str, Any], extra: dict[str, Any],
                model: type | None) -> None:
        if model in OPAQUE:
            out["x-kubernetes-preserve-unknown-fields"] = True
            if model is PodTemplateSpec:
                out["properties"] = _fresh(POD_TEMPLATE_DEFAULTS)
            return
        properties = extra.get("properties")
        more = extra.get("additionalProperties")
        if properties is None:
            if isinstance(more, dict):  # a map
                out["additionalProperties"] = self.convert(more)
            else:  # dict[str, Any]: anything goes
                out["x-kubernetes-preserve-unknown-fields"] = True
            return
        out["properties"] = {
            name: self.convert(prop) for name, prop in sorted(properties.items())
        }
        if extra.get("required"):
            out["required"] = sorted(extra["required"])
        if model in PRESERVE_UNKNOWN:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if model in VALIDATIONS:
            out["x-kubernetes-validations"] = VALIDATIONS[model]


def _kept(properties: dict[str, Any]) -> dict[str, Any]:
    """An object schema declaring ``properties``, every other field kept as written."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "properties": properties}


def _with_container_defaults() -> dict[str, Any]:
    container = _kept({
        "ports": {"type": "array", "items": _kept({"protocol": {"type": "string",
                                                                "default": "TCP"}})},
        "env": {"type": "array", "items": _kept({"valueFrom": _kept({"fileKeyRef": _kept({
            "optional": {"type": "boolean", "default": False}})})})},
    })
    return {"type": "array", "items": container}


#: What the API server fills into a pod template in a RayCluster, RayJob... as it does
#: under KubeRay's CRDs (the Kubernetes types' ``+default`` markers) where the value is
#: not Go's zero value: a container port's ``protocol: TCP``, a ``fileKeyRef``'s
#: ``optional: false``. The rest of a pod template stays as written. Kueue compares a
#: job's pod templates with its Workload's, whose CRD applies these defaults: without
#: them a queued RayJob with container ports never matched its own Workload (Kueue
#: deleted and re-created it forever and never started the job).
POD_TEMPLATE_DEFAULTS: dict[str, Any] = {"spec": _kept({
    kind: _with_container_defaults()
    for kind in ("containers", "initContainers", "ephemeralContainers")})}


def _model_of(node: dict[str, Any], defs: dict[str, tuple[type, Any]]) -> type | None:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]][0] if isinstance(ref, str) else None


def _int_format(out: dict[str, Any]) -> None:
    """An integer the model bounds to int32 is ``format: int32``; the bounds say no more."""
    if out.get("maximum") == INT32_MAX and out.get("minimum", INT32_MIN) >= INT32_MIN:
        out["format"] = "int32"
        del out["maximum"]
        if out.get("minimum") == INT32_MIN:
            del out["minimum"]
