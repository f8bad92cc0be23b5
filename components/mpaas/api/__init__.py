"""The platform's custom resources (group mpaas.io, version v1alpha1).

These pydantic models are the single source of truth: `hack/gen-crds` renders
`crds/*.yaml` from them, the operator and the components parse resources with
them, and CI fails when the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ..kube import ResourceType
from . import delivery, gateway, push, sync
from .base import API_VERSION, GROUP, VERSION, ApiModel, CommonStatus, Condition, ConditionStatus


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec: type[ApiModel]
    status: type[CommonStatus]
    printer_columns: list[dict[str, Any]]
    scale: dict[str, str] | None = field(default=None)
    # CEL rules on the whole object (the only place metadata.name is visible to CEL).
    root_rules: list[dict[str, str]] = field(default_factory=list)

    @property
    def resource(self) -> ResourceType:
        return ResourceType(GROUP, VERSION, self.plural)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def parse_spec(self, obj: dict[str, Any]) -> ApiModel:
        """Validate a resource's spec; raises InvalidResource with a readable message."""
        try:
            spec = self.spec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            raise InvalidResource(self.kind, obj, explain(e)) from None
        from .checks import CHECKS

        problems = CHECKS[self.spec](spec) if self.spec in CHECKS else []
        if problems:
            raise InvalidResource(self.kind, obj, "; ".join(problems))
        return spec


def _kind(info: dict[str, Any]) -> Kind:
    return Kind(
        kind=info["kind"],
        plural=info["plural"],
        singular=info["singular"],
        short_names=info["shortNames"],
        spec=info["spec"],
        status=info["status"],
        printer_columns=info["printerColumns"],
        scale=info.get("scale"),
        root_rules=info.get("rootRules", []),
    )


MPAAS_GATEWAY = _kind(gateway.KIND_INFO)
DELIVERY_TASK = _kind(delivery.KIND_INFO)
PUSH_CHANNEL = _kind(push.KIND_INFO)
SYNC_TOPIC = _kind(sync.KIND_INFO)
KINDS: dict[str, Kind] = {k.kind: k for k in (MPAAS_GATEWAY, DELIVERY_TASK, PUSH_CHANNEL, SYNC_TOPIC)}


class InvalidResource(ValueError):
    """A resource that does not satisfy its model; the message says what to fix."""

    def __init__(self, kind: str, obj: dict[str, Any], message: str):
        meta = obj.get("metadata") or {}
        self.kind, self.name, self.namespace = kind, meta.get("name"), meta.get("namespace")
        super().__init__(f"{kind} {self.namespace}/{self.name}: {message}")
        self.detail = message


def explain(err: ValidationError) -> str:
    """One line per problem: `spec.apis[0].upstream: field required`."""
    parts = []
    for e in err.errors():
        loc = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


__all__ = [
    "API_VERSION",
    "DELIVERY_TASK",
    "GROUP",
    "KINDS",
    "MPAAS_GATEWAY",
    "PUSH_CHANNEL",
    "SYNC_TOPIC",
    "VERSION",
    "BaseModel",
    "Condition",
    "ConditionStatus",
    "InvalidResource",
    "Kind",
    "explain",
    "key",
]
