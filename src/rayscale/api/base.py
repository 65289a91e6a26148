"""What every ``ray.io/v1`` model shares: KubeRay's field names, Kubernetes' null rule,
round-tripping of fields rayscale does not model, and the common object types.

Field names are Python's snake_case with KubeRay's camelCase as the alias
(``min_replicas`` / ``minReplicas``): documents are read and written by alias.
Models are frozen; change one with ``model_copy(update=...)``.
Fields a model does not declare are kept (``extra="allow"``), so a manifest
read and written back loses nothing (volumes, probes, fields of newer KubeRay).
As in Kubernetes, an explicit ``null`` means the same as an absent field.
Validation is strict about types (``replicas: "2"`` is an error, as it is for
the API server).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

from rayscale.api.quantity import QuantityError, parse_quantity

NonNegInt = Annotated[int, Field(ge=0)]
Int32 = Annotated[int, Field(le=2_147_483_647)]
NonNegInt32 = Annotated[int, Field(ge=0, le=2_147_483_647)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Ray resources of one node: ``CPU``, ``GPU``, ``memory`` (bytes),
#: ``object_store_memory`` (bytes) and custom names, as in Ray.
Resources = dict[str, NonNegFloat]


def _non_negative_quantity(value: Any) -> Any:
    """A Kubernetes quantity as written (``"500m"``, ``2``), checked, not converted."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            parsed = parse_quantity(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None
        if parsed < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return value
    raise ValueError(f"invalid quantity {value!r}")


#: A resource quantity (``cpu: 500m``, ``memory: 1Gi``, ``nvidia.com/gpu: 1``).
Quantity = Annotated[str | int | float, BeforeValidator(_non_negative_quantity)]


class KubeModel(BaseModel):
    """Base of every API model (see the module docstring)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=True,
        strict=True,
        serialize_by_alias=True,
        # built on first use, so importing the vocabulary (every CLI start) stays cheap
        defer_build=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    def to_manifest(self) -> dict[str, Any]:
        """The document form: KubeRay's names; what the document set or an update changed."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")


class ObjectMeta(KubeModel):
    """``metadata`` (the fields rayscale reads; the rest is kept)."""

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(KubeModel):
    """A ``metav1.Condition``."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


#: A field's ``json_schema_extra`` key: its default goes into the CRD (the API server
#: fills it in) rather than being applied by the models only. For a default other
#: controllers read from the stored object: Kueue reads a RayJob's ``submissionMode``
#: to count its submitter pod, and KubeRay's CRD defaults it to ``K8sJobMode``.
CRD_DEFAULT = "x-rayscale-crd-default"

#: ``spec.managedBy`` of RayClusters and RayJobs, as KubeRay has it: this operator
#: (``ray.io/kuberay-operator``, the default) or MultiKueue, which then runs the object
#: on a worker cluster and this operator leaves it alone; immutable.
KUBERAY_CONTROLLER = "ray.io/kuberay-operator"
MULTIKUEUE_CONTROLLER = "kueue.x-k8s.io/multikueue"
MANAGED_BY_RULES: list[JsonValue] = [
    {"rule": "self == oldSelf", "message": "the managedBy field is immutable"},
    {"rule": f"self in ['{KUBERAY_CONTROLLER}', '{MULTIKUEUE_CONTROLLER}']",
     "message": f"the managedBy field value must be either '{KUBERAY_CONTROLLER}' or "
                f"'{MULTIKUEUE_CONTROLLER}'"},
]


def managed_elsewhere(managed_by: str | None) -> str | None:
    """The external controller named by ``managedBy`` (None: this operator's object)."""
    return managed_by if managed_by and managed_by != KUBERAY_CONTROLLER else None
