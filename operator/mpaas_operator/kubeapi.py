"""Every write the operator makes to the API server goes through here.

Children are written with server-side apply under one field manager, each
with a controller owner reference to its resource, so garbage collection
removes them with it and another manager's fields (an HPA's replica count,
a user's annotation) are left alone.
"""

from __future__ import annotations

import logging
from typing import Any

from mpaas.api import Kind
from mpaas.kube import BUILTIN, KubeClient

from .builders.common import MANAGED_BY, Children
from .settings import SETTINGS

log = logging.getLogger(__name__)


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
    for child in children.apply:
        child["metadata"]["ownerReferences"] = [ref]
        applied[child["kind"]] = await client.apply(BUILTIN[child["kind"]], child, field_manager=SETTINGS.field_manager)
    namespace = owner["metadata"]["namespace"]
    for kind, name in children.absent:
        existing = await client.get(BUILTIN[kind], namespace, name)
        if existing is None:
            continue
        owned = any(r.get("uid") == ref["uid"] for r in existing["metadata"].get("ownerReferences", []))
        if owned and existing["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == MANAGED_BY:
            await client.delete(BUILTIN[kind], namespace, name)
            log.info("deleted %s %s/%s: no longer wanted by %s", kind, namespace, name, owner["kind"])
    return applied


async def patch_status(client: KubeClient, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Replace the fields we compute in status (merge patch on the status subresource)."""
    await client.merge_patch(kind.resource, namespace, name, {"status": status}, subresource="status")
