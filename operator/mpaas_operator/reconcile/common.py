"""Status pieces every kind shares.

Conditions follow the kstatus conventions GitOps tools read (Flux, Argo CD,
kpt): `Ready` says whether the resource does its job, `Reconciling=True` while
the operator is still converging (a rollout in progress), `Stalled=True` when
it cannot make progress without a change from the user (an invalid spec, a
missing Secret, a conflict). `status.observedGeneration` and each condition's
`observedGeneration` say which spec the status describes.

A change of the Ready condition is also posted as a Kubernetes Event.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from mpaas.api import InvalidResource, Kind
from mpaas.kube import DEPLOYMENTS, PODS, KubeClient

from .. import conditions, events, metrics
from ..builders.common import selector_string
from ..kubeapi import patch_status
from .applied import summarize

log = logging.getLogger(__name__)

# Ready=False reasons that need the user: Stalled=True and a Warning event.
STALLED_REASONS = frozenset(
    {"InvalidSpec", "CredentialsMissing", "CredentialsInvalid", "Conflict", "ProgressDeadlineExceeded"}
)
# Ready=False reasons worth a Warning event although the operator keeps working on them.
WARNING_REASONS = STALLED_REASONS | {"Unavailable", "Degraded"}
# Ready=True reasons someone should look at: the resource serves, but something went wrong (a release that
# paused itself on its install failures).
WARNING_TRUE_REASONS = frozenset({"AutoPaused"})
# The kinds whose component is not built yet report Ready=False with this reason (never Ready=True).
NOT_IMPLEMENTED = "NotImplemented"


def identity(body: dict[str, Any]) -> tuple[str, str, int]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], int(meta.get("generation") or 0)


def previous_conditions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return (body.get("status") or {}).get("conditions") or []


def kstatus(
    ready: dict[str, Any], *, reconciling: bool = False, progress: str = "", reason: str = "RolloutInProgress"
) -> list[dict[str, Any]]:
    """Ready plus the Reconciling and Stalled conditions derived from it; `reason`: Reconciling's while True."""
    stalled = ready["status"] == "False" and ready["reason"] in STALLED_REASONS
    return [
        ready,
        conditions.condition(
            "Reconciling",
            reconciling,
            reason if reconciling else "Reconciled",
            progress if reconciling else "",
        ),
        conditions.condition(
            "Stalled", stalled, ready["reason"] if stalled else "Reconciled", ready["message"] if stalled else ""
        ),
    ]


async def report_invalid(
    client: KubeClient, kind: Kind, body: dict[str, Any], err: InvalidResource, *, keep: tuple[str, ...] = ()
) -> None:
    """Ready=False/InvalidSpec with what to fix. Children stay as the last valid spec left them, and so do the
    conditions of the types in `keep` (facts the spec change does not touch)."""
    namespace, name, _ = identity(body)
    log.warning("%s %s/%s has an invalid spec: %s", kind.kind, namespace, name, err.detail)
    kept = [
        {k: c.get(k, "") for k in ("type", "status", "reason", "message")}
        for c in previous_conditions(body)
        if c.get("type") in keep
    ]
    await report(client, kind, body, [*kstatus(conditions.condition("Ready", False, "InvalidSpec", err.detail)), *kept])


async def report(
    client: KubeClient,
    kind: Kind,
    body: dict[str, Any],
    conds: list[dict[str, Any]],
    *,
    resource_version: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Write status as computed from `body`; with `resource_version`, only if the resource is still at it (a 409
    ApiError otherwise)."""
    namespace, name, generation = identity(body)
    status = {
        "observedGeneration": generation,
        "conditions": conditions.merge(previous_conditions(body), conds, generation),
        **fields,
    }
    await patch_status(client, kind, namespace, name, status, resource_version=resource_version)
    ready = conditions.get(conds, "Ready")
    if ready is not None and ready["status"] == "False" and ready["reason"] in STALLED_REASONS:
        metrics.mark("stalled")
    await _post_ready_change(client, body, conditions.get(previous_conditions(body), "Ready"), conds)
    return status


async def _post_ready_change(
    client: KubeClient, body: dict[str, Any], before: dict[str, Any] | None, conds: list[dict[str, Any]]
) -> None:
    ready = conditions.get(conds, "Ready")
    if ready is None:
        return
    # A problem that needs the user is repeated on every reconcile that still finds it (a new spec, a
    # changed Secret): the Event's count grows. Otherwise only a new status or reason is news (replica
    # counts move the message on every pod).
    if ready["reason"] not in STALLED_REASONS and before is not None:
        if (before.get("status"), before.get("reason")) == (ready["status"], ready["reason"]):
            return
    warn = ready["reason"] in (WARNING_REASONS if ready["status"] == "False" else WARNING_TRUE_REASONS)
    type_ = events.WARNING if warn else events.NORMAL
    await events.post(client, body, type_, ready["reason"], ready["message"] or ready["reason"])


# Held only while a status is written: a resource's lock goes away with its last writer.
_status_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
# (the Deployment or None, the workload's pods) -> conditions, other status fields
WorkloadStatus = Callable[[dict[str, Any] | None, list[dict[str, Any]]], tuple[list[dict[str, Any]], dict[str, Any]]]


async def report_workload(
    client: KubeClient,
    kind: Kind,
    body: dict[str, Any],
    deployment_name: str,
    selector: dict[str, str],
    compute: WorkloadStatus,
) -> dict[str, Any] | None:
    """Status of a resource with a Deployment, from the Deployment and its pods (`selector`) as they are now.

    A reconcile, Deployment events and pod events report concurrently; each write for one resource takes its
    lock and reads the Deployment and pods inside it, so an older view never overwrites a newer one.
    """
    namespace = identity(body)[0]
    async with status_lock(body):
        current = await _current(client, kind, body)
        if current is None:
            return None
        deployment = await client.get(DEPLOYMENTS, namespace, deployment_name)
        conds, fields = compute(deployment, await _pods(client, namespace, selector))
        return await report(client, kind, {**body, "status": current.get("status")}, conds, **fields)


async def report_applied_only(client: KubeClient, kind: Kind, body: dict[str, Any], selector: dict[str, str]) -> None:
    """The applied-generation fields alone, from the pods as they are now, for a resource whose spec the operator
    refused: its conditions stay (InvalidSpec), its children stay as the last valid spec left them, and its pods
    go on telling which generation they run (a rule only the operator checks, such as the image allow-list,
    does not stop them from applying the rest of the spec)."""
    namespace, name, generation = identity(body)
    async with status_lock(body):
        if await _current(client, kind, body) is None:
            return
        applied = summarize(await _pods(client, namespace, selector), kind.kind, namespace, name, generation)
        await patch_status(client, kind, namespace, name, applied.fields())


def status_lock(body: dict[str, Any]) -> asyncio.Lock:
    """The lock every status write of this resource takes in this process."""
    namespace, name, _ = identity(body)
    key = body["metadata"].get("uid", f"{namespace}/{name}")
    lock = _status_locks.get(key)
    if lock is None:
        lock = _status_locks[key] = asyncio.Lock()
    return lock


async def _current(client: KubeClient, kind: Kind, body: dict[str, Any]) -> dict[str, Any] | None:
    """The resource as it is now, or None when it is going or a newer spec was handled meanwhile (whose reconcile
    reports)."""
    namespace, name, generation = identity(body)
    current = await client.get(kind.resource, namespace, name)
    if current is None or current["metadata"].get("deletionTimestamp"):
        return None
    if int((current.get("status") or {}).get("observedGeneration") or 0) > generation:
        return None
    return current


async def _pods(client: KubeClient, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    return (await client.list(PODS, namespace, label_selector=selector_string(selector))).get("items") or []


def workload_conditions(deployment: dict[str, Any] | None) -> tuple[dict[str, Any], bool, str, dict[str, int]]:
    """Ready from a Deployment's status, whether it is still rolling out, a progress line, and replica counts."""
    if deployment is None:
        return conditions.condition("Ready", False, "DeploymentMissing", "waiting for the Deployment"), True, "", {}
    spec, st = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = int(spec.get("replicas") or 0)
    counts = {
        "replicas": int(st.get("replicas") or 0),
        "readyReplicas": int(st.get("readyReplicas") or 0),
        "updatedReplicas": int(st.get("updatedReplicas") or 0),
    }
    seen = int(st.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0)
    settled = seen and counts["updatedReplicas"] >= desired and counts["replicas"] == desired
    progressing = conditions.get(st.get("conditions"), "Progressing") or {}
    msg = f"{counts['readyReplicas']}/{desired} replicas ready"
    if desired == 0:
        ready = conditions.condition("Ready", True, "ScaledToZero", "0 replicas requested")
    elif settled and counts["readyReplicas"] >= desired:
        ready = conditions.condition("Ready", True, "Available", msg)
    elif progressing.get("reason") == "ProgressDeadlineExceeded":
        ready = conditions.condition(
            "Ready", False, "ProgressDeadlineExceeded", f"{msg}; the rollout stopped: {progressing.get('message', '')}"
        )
    elif settled and progressing.get("reason") == "NewReplicaSetAvailable":
        # The rollout finished, yet pods are not ready: they crash or fail their probes.
        reason = "Unavailable" if counts["readyReplicas"] == 0 else "Degraded"
        ready = conditions.condition("Ready", False, reason, msg)
    else:
        ready = conditions.condition("Ready", False, "Progressing", msg)
    return ready, ready["reason"] == "Progressing", msg, counts
