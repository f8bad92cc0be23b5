"""Handler registration: which event runs which reconcile. No logic lives here.

Create, update and resume all run the same idempotent reconcile. Watches on
the children the operator owns heal drift at once: a deleted child is
recreated, a child changed by hand (a scaled Deployment, an edited Service) is
applied back, and Deployment status changes refresh the owner's status, as do
changes of the workloads' pods (ready or not, and the spec generation each one
reports it has applied, `mpaas.applied`). A
change to a Secret that a vendor PushChannel names re-checks that channel's
credentials. No kopf timer or daemon runs (kopf would put a finalizer on every
resource one serves), so no resource carries a finalizer: deleting one never
needs the operator (garbage collection removes the children), and it can be
deleted after the operator is uninstalled. What runs by the clock, the
DeliveryTask package checks and stages, is one operator-wide loop
(releases.py), started with the operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from mpaas.api import DELIVERY_TASK, GROUP, KINDS, MPAAS_GATEWAY, PUSH_CHANNEL, SYNC_TOPIC, VERSION
from mpaas.kube import BUILTIN, ApiError, KubeClient

from . import events, kubeapi, metrics
from .builders.common import MANAGED_BY, OWNER_KIND_LABEL, OWNER_NAME_LABEL
from .reconcile import delivery_task, gateway, push_channel, sync_topic
from .reconcile.applied import pod_signature

log = logging.getLogger(__name__)

Reconcile = Callable[[KubeClient, dict[str, Any]], Awaitable[Any]]
RECONCILERS: dict[str, Reconcile] = {
    MPAAS_GATEWAY.kind: gateway.reconcile,
    PUSH_CHANNEL.kind: push_channel.reconcile,
    DELIVERY_TASK.kind: delivery_task.reconcile,
    SYNC_TOPIC.kind: sync_topic.reconcile,
}
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
# Children whose spec changes bump metadata.generation (they have a status subresource); for the
# others every modification is checked.
CHILDREN_WITH_GENERATION = ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress")
CHILDREN_WITHOUT_GENERATION = ("Service", "ServiceAccount", "Role", "RoleBinding")


async def _run(reconcile: Reconcile, client: KubeClient, body: dict[str, Any]) -> Any:
    kind, outcome = str(body.get("kind") or ""), "error"
    metrics.OUTCOME.set("ok")
    started = time.perf_counter()
    try:
        result = await reconcile(client, body)
        outcome = metrics.OUTCOME.get()  # `report` marks a stalled one
        return result
    except ApiError as e:
        if e.status in (409, 429) or e.status >= 500:
            outcome = "retry"
            raise kopf.TemporaryError(f"API server: {e}", delay=5) from e
        if e.status == 404:
            outcome = "gone"
            return None  # the resource went away while we worked
        raise kopf.TemporaryError(str(e), delay=30) from e
    finally:
        metrics.RECONCILES.labels(kind, outcome).inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


def _register(plural: str, reconcile: Reconcile) -> None:
    @kopf.on.resume(GROUP, VERSION, plural, id="reconcile")
    @kopf.on.create(GROUP, VERSION, plural, id="reconcile")
    @kopf.on.update(GROUP, VERSION, plural, id="reconcile", field="spec")
    async def on_change(memo: kopf.Memo, body: kopf.Body, **_: Any) -> None:
        await _run(reconcile, memo.kube, dict(body))


for _kind in KINDS.values():
    _register(_kind.plural, RECONCILERS[_kind.kind])


async def _owner(client: KubeClient, child: dict[str, Any]) -> dict[str, Any] | None:
    """The live resource a child belongs to, or None when it is gone or going."""
    lbls = child["metadata"].get("labels") or {}
    kind = KINDS.get(lbls.get(OWNER_KIND_LABEL, ""))
    owner_name = lbls.get(OWNER_NAME_LABEL)
    if kind is None or not owner_name:
        return None
    owner = await client.get(kind.resource, child["metadata"]["namespace"], owner_name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return None
    return owner


async def _heal(client: KubeClient, owner: dict[str, Any], child: dict[str, Any], deleted: bool) -> None:
    """Reconcile the owner of a child that was deleted or changed; say so when the child had drifted."""
    kind, name = child["kind"], child["metadata"]["name"]
    if deleted:
        await events.post(client, owner, events.NORMAL, "Restoring", f"{kind} {name} was deleted; recreating it")
    changed: set[tuple[str, str]] = set()
    token = kubeapi.CHANGED.set(changed)  # apply_children notes the existing children its apply changed back
    try:
        await _run(RECONCILERS[owner["kind"]], client, owner)
    finally:
        kubeapi.CHANGED.reset(token)
    if not deleted and (kind, name) in changed:
        await events.post(
            client, owner, events.NORMAL, "DriftCorrected", f"{kind} {name} was changed outside the operator; restored"
        )


def _watch_children(kind: str, with_generation: bool) -> None:
    rt = BUILTIN[kind]
    seen: dict[str, int] = {}  # child uid -> last seen metadata.generation

    @kopf.on.event(rt.group, rt.version, rt.plural, labels=MANAGED, id=f"child-{kind}")
    async def child_event(memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
        child: dict[str, Any] = dict(event["object"])
        child.setdefault("kind", kind)
        uid, generation = child["metadata"].get("uid", ""), int(child["metadata"].get("generation") or 0)
        client: KubeClient = memo.kube
        try:
            if event["type"] == "DELETED":
                seen.pop(uid, None)
                owner = await _owner(client, child)
                if owner is not None:
                    log.info("%s %s of %s/%s was deleted; recreating", kind, child["metadata"]["name"], *_who(owner))
                    await _heal(client, owner, child, deleted=True)
                return
            previous = seen.get(uid)
            seen[uid] = generation
            if event["type"] is None:  # the initial listing: the resume handlers reconcile every owner
                changed = False
            elif with_generation:
                changed = previous is not None and previous != generation
            else:
                changed = event["type"] == "MODIFIED"
            owner = await _owner(client, child) if changed or kind == "Deployment" else None
            if owner is None:
                return
            if changed:
                await _heal(client, owner, child, deleted=False)
            elif owner["kind"] == MPAAS_GATEWAY.kind:
                await gateway.refresh(client, owner)
            elif owner["kind"] == PUSH_CHANNEL.kind:
                await push_channel.refresh(client, owner)
        except (ApiError, kopf.TemporaryError) as e:
            log.warning("handling a change of %s %s failed: %s", kind, child["metadata"].get("name"), e)


def _who(owner: dict[str, Any]) -> tuple[str, str]:
    return owner["kind"], owner["metadata"]["name"]


for _child in CHILDREN_WITH_GENERATION:
    _watch_children(_child, with_generation=True)
for _child in CHILDREN_WITHOUT_GENERATION:
    _watch_children(_child, with_generation=False)


# Pod events of one resource within this window are folded into one status refresh (a rollout, or a new spec
# applied by every pod at once, changes many pods within milliseconds).
POD_REFRESH_DELAY_SECONDS = 0.3
_pod_refresh_pending: set[tuple[str, str, str]] = set()  # (namespace, owner kind, owner name)
_pod_seen: dict[str, tuple[Any, ...]] = {}  # pod uid -> what the status reads from it, as last seen


@kopf.on.event("", "v1", "pods", labels=MANAGED, id="pod-applied")
async def pod_event(memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
    """Refresh the owner's status when one of its pods becomes ready or not, reports a newly applied generation
    (mpaas.applied), or goes away. The initial listing changes nothing: the resume handlers report every owner."""
    pod: dict[str, Any] = dict(event["object"])
    meta = pod.get("metadata") or {}
    uid, namespace = meta.get("uid", ""), meta.get("namespace") or ""
    lbls = meta.get("labels") or {}
    if lbls.get(OWNER_KIND_LABEL) not in (MPAAS_GATEWAY.kind, PUSH_CHANNEL.kind):
        return
    if event["type"] == "DELETED":
        _pod_seen.pop(uid, None)
    else:
        signature, previous = pod_signature(pod), _pod_seen.get(uid)
        _pod_seen[uid] = signature
        if event["type"] is None or signature == previous:
            return
    key = (namespace, lbls[OWNER_KIND_LABEL], lbls.get(OWNER_NAME_LABEL, ""))
    if key in _pod_refresh_pending:
        return  # a refresh is waiting: it reads the pods after this change
    _pod_refresh_pending.add(key)
    try:
        await asyncio.sleep(POD_REFRESH_DELAY_SECONDS)
    finally:
        _pod_refresh_pending.discard(key)
    client: KubeClient = memo.kube
    try:
        owner = await _owner(client, {**pod, "metadata": meta})
        if owner is None:
            return
        if owner["kind"] == MPAAS_GATEWAY.kind:
            await gateway.refresh(client, owner)
        else:
            await push_channel.refresh(client, owner)
    except (ApiError, kopf.TemporaryError) as e:
        log.warning("refreshing the status of %s %s/%s after a pod change failed: %s", key[1], namespace, key[2], e)


@kopf.index(GROUP, VERSION, PUSH_CHANNEL.plural)
def channel_secrets(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str] | None:
    """(namespace, Secret name) -> the PushChannels naming it in credentialsSecretRef or link.tokenSecretRef."""
    secret = (spec.get("credentialsSecretRef") or {}).get("name") or (
        ((spec.get("link") or {}).get("tokenSecretRef") or {}).get("name")
    )
    return {(namespace or "", secret): name} if secret else None


@kopf.on.event("", "v1", "secrets", id="channel-credentials")
async def secret_event(memo: kopf.Memo, event: kopf.RawEvent, namespace: str | None, name: str, **kwargs: Any) -> None:
    if event["type"] is None or namespace is None:  # the initial listing: the resume handlers check every channel
        return
    client: KubeClient = memo.kube
    index: kopf.Index[tuple[str, str], str] = kwargs["channel_secrets"]  # kopf passes indexes by their id
    for channel in index.get((namespace, name), ()):
        body = await client.get(PUSH_CHANNEL.resource, namespace, channel)
        if body is not None and not body["metadata"].get("deletionTimestamp"):
            log.info("Secret %s/%s changed; re-checking PushChannel %s", namespace, name, channel)
            try:
                await _run(push_channel.reconcile, client, body)
            except (ApiError, kopf.TemporaryError) as e:
                log.warning("re-checking PushChannel %s/%s failed: %s", namespace, channel, e)
