"""Building blocks shared by the four resource kinds.

Models here are the single source of truth for the CRD schemas: field bounds,
patterns and defaults become OpenAPI, and `cel(...)` rules become
`x-kubernetes-validations` (see `mpaas.api.crdgen`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "mpaas.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 labels) and shared identifier patterns.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
APP_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
VERSION_STRING = r"^[0-9]+(\.[0-9]+){0,3}$"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One CEL rule for `x-kubernetes-validations`."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def immutable(message: str) -> dict[str, Any]:
    """Field extra: the value may not change once set."""
    return {"x-kubernetes-validations": [cel("self == oldSelf", message)]}


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, strict about unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        frozen=False,
    )
    # CEL rules on the object itself (cross-field checks).
    __cel__: ClassVar[list[dict[str, str]]] = []

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def named_list(key: str = "name") -> dict[str, Any]:
    """Field extra: a list of named objects, merged by key under server-side apply."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the resource's current state, in the standard Kubernetes condition form."""

    type: str = Field(
        max_length=64,
        pattern=r"^[A-Z][A-Za-z0-9]*$",
        description="Kind of condition, in CamelCase, e.g. Ready: whether the resource is in effect as specified.",
    )
    status: ConditionStatus = Field(description="Whether the condition holds: True, False or Unknown.")
    reason: str = Field(
        max_length=128,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Why the condition has its status, one CamelCase word, e.g. Available, or InvalidSpec "
        "(the spec breaks a rule: the message says what to fix).",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details of the reason, e.g. what to fix in the spec. Empty when there are none.",
    )
    last_transition_time: datetime = Field(description="When the status last changed (RFC 3339 timestamp).")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the condition was computed from; lower than the resource's "
        "generation means the condition may be out of date.",
    )


class CommonStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the operator last reconciled, valid or not. Lower than the "
        "resource's generation: the latest change has not been looked at yet.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra=named_list("type"),
        description="Current state, one entry per condition type. Ready tells whether the spec is in effect; "
        "with reason InvalidSpec the message says what to fix (the previous valid spec stays in effect).",
    )


class WorkloadStatus(CommonStatus):
    """Observed state of a resource served by pods, with the spec generation they have applied. A pod tells
    it with a condition on itself (mpaas.io/ConfigApplied), written when it swaps in a config compiled from a
    new generation."""

    applied_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation every ready pod has applied (the oldest of theirs). Absent until "
        "every ready pod has reported one, or while no pod is ready.",
    )
    pods_on_current_generation: int | None = Field(
        default=None,
        ge=0,
        description="Ready pods that have applied the current metadata.generation. Fewer than the ready pods while "
        "some still run an older spec (then Reconciling=True, reason ConfigPending) or have not reported yet.",
    )


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class SecretRef(ApiModel):
    """A Secret in the resource's own namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="Name of the Secret."
    )


class SecretKeyRef(ApiModel):
    """One key of a Secret in the resource's own namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="Name of the Secret."
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret's data."
    )


class ResourceRequirements(ApiModel):
    """Container resources, as in a Pod spec (quantities as strings: "250m", "256Mi")."""

    requests: dict[str, str] = Field(
        default_factory=dict,
        max_length=8,
        description="Resources reserved for the container, by name, e.g. cpu: 250m, memory: 256Mi. "
        "Empty: none reserved.",
    )
    limits: dict[str, str] = Field(
        default_factory=dict,
        max_length=8,
        description='Most the container may use, by name, e.g. cpu: "1", memory: 512Mi. Empty: no limit.',
    )


class Autoscaling(ApiModel):
    """Scaling on CPU load: the operator creates a HorizontalPodAutoscaler, which then owns the replica count."""

    __cel__ = [cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")]

    min_replicas: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Fewest pods, 1-1000. Above 1 the operator also creates a PodDisruptionBudget "
        "(at most one pod down at a time). Default 2.",
    )
    max_replicas: int = Field(
        default=10, ge=1, le=1000, description="Most pods, 1-1000; not less than minReplicas. Default 10."
    )
    target_cpu_utilization_percent: int = Field(
        default=70,
        ge=10,
        le=100,
        description="Average CPU use the autoscaler steers the pods to, in percent of their CPU request, 10-100; "
        "set resources.requests.cpu for it to work. Default 70.",
    )


class RateLimit(ApiModel):
    """A token bucket: `requestsPerSecond` sustained, `burst` at once.

    The buckets live in the gateway's shared state (`spec.sharedState`), so every pod and worker draws from
    the same one; without shared state each gateway process has its own.
    """

    requests_per_second: int = Field(
        ge=1, le=10_000_000, description="Requests allowed per second, sustained (the bucket's refill rate)."
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Requests allowed at once after a quiet spell (the bucket's size). Unset: requestsPerSecond.",
    )


class VersionRange(ApiModel):
    """Inclusive range of dotted versions; either end may be open."""

    min: str | None = Field(
        default=None,
        max_length=32,
        pattern=VERSION_STRING,
        description="Lowest version in the range (inclusive), e.g. 2.0. Unset: no lower bound.",
    )
    max: str | None = Field(
        default=None,
        max_length=32,
        pattern=VERSION_STRING,
        description="Highest version in the range (inclusive), e.g. 2.9.99. Unset: no upper bound.",
    )
