"""Every write the operator makes to the API server goes through here.

Children are written with server-side apply under one field manager, each
with a controller owner reference to its resource, so garbage collection
removes them with it and another manager's fields (an HPA's replica count,
a user's annotation) are left alone. Creating a child or changing a
Deployment's replica count is posted as an Event on the owner.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from mpaas.api import Kind
from mpaas.kube import BUILTIN, KubeClient

from . import events
from .builders.common import MANAGED_BY, Children
from .settings import SETTINGS

log = logging.getLogger(__name__)

# Set by a caller that wants to know which existing children an apply changed back (kind, name): drift healing.
CHANGED: contextvars.ContextVar[set[tuple[str, str]] | None] = contextvars.ContextVar("changed", default=None)
# Children whose spec changes bump metadata.generation; for the others any write moves resourceVersion.
_WITH_GENERATION = frozenset({"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"})


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def apply_children(client: KubeClient, owner: dict[str, Any], children: Children) -> dict[str, dict[str, Any]]:
    """Apply the desired children, delete the unwanted optional ones; returns applied objects by kind."""
    ref = owner_reference(owner)
    applied: dict[str, dict[str, Any]] = {}
    namespace = owner["metadata"]["namespace"]
    for child in children.apply:
        kind, name = child["kind"], child["metadata"]["name"]
        child["metadata"]["ownerReferences"] = [ref]
        before = await client.get(BUILTIN[kind], namespace, name)
        applied[kind] = await client.apply(BUILTIN[kind], child, field_manager=SETTINGS.field_manager)
        changed = CHANGED.get()
        if changed is not None and before is not None:
            key = "generation" if kind in _WITH_GENERATION else "resourceVersion"
            if applied[kind]["metadata"].get(key) != before["metadata"].get(key):
                changed.add((kind, name))
        if before is None:
            await events.post(client, owner, events.NORMAL, "Created", f"Created {kind} {name}")
        elif kind == "Deployment":
            old, new = (before.get("spec") or {}).get("replicas"), (applied[kind].get("spec") or {}).get("replicas")
            if "replicas" in child["spec"] and old != new:
                await events.post(client, owner, events.NORMAL, "Scaled", f"Scaled {kind} {name} from {old} to {new}")
    for kind, name in children.absent:
        existing = await client.get(BUILTIN[kind], namespace, name)
        if existing is None:
            continue
        owned = any(r.get("uid") == ref["uid"] for r in existing["metadata"].get("ownerReferences", []))
        if owned and existing["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == MANAGED_BY:
            await client.delete(BUILTIN[kind], namespace, name)
            log.info("deleted %s %s/%s: no longer wanted by %s", kind, namespace, name, owner["kind"])
            await events.post(client, owner, events.NORMAL, "Deleted", f"Deleted {kind} {name}: no longer needed")
    return applied


async def patch_status(
    client: KubeClient,
    kind: Kind,
    namespace: str,
    name: str,
    status: dict[str, Any],
    *,
    resource_version: str | None = None,
) -> None:
    """Replace the fields we compute in status (merge patch on the status subresource). With `resource_version`
    the API server refuses the patch (409) unless the resource is still at that version."""
    patch: dict[str, Any] = {"status": status}
    if resource_version is not None:
        patch["metadata"] = {"resourceVersion": resource_version}
    await client.merge_patch(kind.resource, namespace, name, patch, subresource="status")
