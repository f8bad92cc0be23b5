"""Handler registration: which event runs which reconcile. No logic lives here.

Create, update and resume all run the same idempotent reconcile. Events on our
Deployments refresh the owner's status (pods became ready, someone scaled) or,
when a child was deleted by hand, reconcile the owner to put it back. A slow
timer re-reconciles everything to heal drift and re-check credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from mpaas.api import DELIVERY_TASK, GROUP, KINDS, MPAAS_GATEWAY, PUSH_CHANNEL, SYNC_TOPIC, VERSION
from mpaas.kube import ApiError, KubeClient

from .builders.common import MANAGED_BY, OWNER_KIND_LABEL, OWNER_NAME_LABEL
from .reconcile import delivery_task, gateway, push_channel, sync_topic
from .settings import SETTINGS

log = logging.getLogger(__name__)

Reconcile = Callable[[KubeClient, dict[str, Any]], Awaitable[Any]]
RECONCILERS: dict[str, Reconcile] = {
    MPAAS_GATEWAY.kind: gateway.reconcile,
    PUSH_CHANNEL.kind: push_channel.reconcile,
    DELIVERY_TASK.kind: delivery_task.reconcile,
    SYNC_TOPIC.kind: sync_topic.reconcile,
}


async def _run(reconcile: Reconcile, memo: kopf.Memo, body: kopf.Body) -> None:
    try:
        await reconcile(memo.kube, dict(body))
    except ApiError as e:
        if e.status in (409, 429) or e.status >= 500:
            raise kopf.TemporaryError(f"API server: {e}", delay=5) from e
        if e.status == 404:
            return  # the resource went away while we worked
        raise kopf.TemporaryError(str(e), delay=30) from e


def _register(plural: str, reconcile: Reconcile) -> None:
    @kopf.on.resume(GROUP, VERSION, plural, id="reconcile")
    @kopf.on.create(GROUP, VERSION, plural, id="reconcile")
    @kopf.on.update(GROUP, VERSION, plural, id="reconcile", field="spec")
    async def on_change(memo: kopf.Memo, body: kopf.Body, **_: Any) -> None:
        await _run(reconcile, memo, body)

    @kopf.timer(
        GROUP,
        VERSION,
        plural,
        id="resync",
        interval=SETTINGS.status_interval_seconds,
        initial_delay=SETTINGS.status_interval_seconds,
        idle=SETTINGS.status_interval_seconds / 2,
    )
    async def resync(memo: kopf.Memo, body: kopf.Body, **_: Any) -> None:
        await _run(reconcile, memo, body)


for _kind in KINDS.values():
    _register(_kind.plural, RECONCILERS[_kind.kind])


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def child_deployment_event(memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
    deployment: dict[str, Any] = dict(event["object"])
    lbls = deployment["metadata"].get("labels") or {}
    kind = KINDS.get(lbls.get(OWNER_KIND_LABEL, ""))
    owner_name = lbls.get(OWNER_NAME_LABEL)
    if kind is None or not owner_name:
        return
    client: KubeClient = memo.kube
    owner = await client.get(kind.resource, deployment["metadata"]["namespace"], owner_name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    try:
        if event["type"] == "DELETED":
            log.info("%s of %s/%s was deleted; recreating", deployment["metadata"]["name"], kind.kind, owner_name)
            await RECONCILERS[kind.kind](client, owner)
        elif kind is MPAAS_GATEWAY:
            await gateway.refresh(client, owner, deployment)
        elif kind is PUSH_CHANNEL:
            await push_channel.refresh(client, owner, deployment)
    except ApiError as e:
        log.warning("status refresh of %s %s failed: %s", kind.kind, owner_name, e)
