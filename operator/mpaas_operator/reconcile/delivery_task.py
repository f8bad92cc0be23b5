"""DeliveryTask: validation, the package's condition, the stages, and status.

The delivery component offers a task's package once the condition `PackageVerified` is True, to
`status.currentPercent` of the devices its targeting picks. The operator-wide loop (releases.py) checks
packages and advances stages; the reconcile here reports a new spec at once. Both write through `sync`, which
computes the whole status from the spec, the status (which holds every bit of state) and the time, writes it
only when it differs, and only if the resource is still at the version it read: of two writers (the moment a
standby takes over), one wins and the other recomputes from what the winner wrote, so no stage is advanced
twice.

Ready: True with reason `Serving`, or `Paused` (a held release is still served, at the stage it holds, and
pausing is what its owner asked for: a GitOps tool waiting for Ready must not fail on it); False with
`PackageNotVerified` (nothing is offered), `RolledBack` (withdrawn), or `InvalidSpec`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mpaas.api import DELIVERY_TASK, InvalidResource
from mpaas.api.base import now as utcnow
from mpaas.api.delivery import DeliveryTaskSpec
from mpaas.delivery.packages import locate
from mpaas.kube import ApiError, KubeClient

from .. import conditions, events
from ..package_check import CHECKING, NO_PACKAGE, Result
from . import stages
from .common import identity, kstatus, report, report_invalid, status_lock

log = logging.getLogger(__name__)

PACKAGE_VERIFIED = "PackageVerified"
WRITE_ATTEMPTS = 3


def no_loop(uid: str) -> None:
    """The releases loop is not running: nobody to tell."""


# Set by the releases loop while it runs: told the uid of a task whose spec changed or that was resumed, so a
# package that failed its check is checked again at once.
spec_changed: Callable[[str], None] = no_loop


async def reconcile(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        spec = parse(body)
    except InvalidResource as e:
        # The package's check stays: the package is immutable, so no spec change makes it wrong.
        await report_invalid(client, DELIVERY_TASK, body, e, keep=(PACKAGE_VERIFIED,))
        return None
    spec_changed(str(body["metadata"].get("uid") or ""))
    await sync(client, body, spec=spec)
    return None


def parse(body: dict[str, Any]) -> DeliveryTaskSpec:
    spec: DeliveryTaskSpec = DELIVERY_TASK.parse_spec(body)  # type: ignore[assignment]
    if spec.package is not None:
        try:
            locate(spec.package.uri)
        except ValueError as e:
            raise InvalidResource(DELIVERY_TASK.kind, body, f"spec.package.uri: {e}") from None
    return spec


@dataclass(frozen=True)
class Desired:
    conds: list[dict[str, Any]]
    fields: dict[str, Any]
    before: stages.Progress
    progress: stages.Progress
    package: dict[str, Any]  # the PackageVerified condition
    package_before: dict[str, Any] | None
    stage_end: datetime | None


def package_condition(spec: DeliveryTaskSpec, previous: dict[str, Any] | None, result: Result | None) -> dict[str, Any]:
    if spec.package is None:
        return conditions.condition(PACKAGE_VERIFIED, True, NO_PACKAGE, "a Switch carries no package")
    if previous is not None and previous.get("status") == "True":
        return _plain(previous)  # checked once: the package is immutable
    if result is not None:
        return conditions.condition(PACKAGE_VERIFIED, result.ok, result.reason, result.message)
    if previous is not None and previous.get("status") == "False":
        return _plain(previous)
    return conditions.condition(
        PACKAGE_VERIFIED, None, CHECKING, "reading the package to compare its size and sha256 with the task's"
    )


def _plain(c: dict[str, Any]) -> dict[str, Any]:
    return {k: c.get(k, "") for k in ("type", "status", "reason", "message")}


def ready_condition(
    spec: DeliveryTaskSpec, package: dict[str, Any], p: stages.Progress, now: datetime
) -> dict[str, Any]:
    if spec.rollback:
        return conditions.condition(
            "Ready",
            False,
            "RolledBack",
            "rolled back: offered to no device (status.currentPercent 0), and clients that run it are told to "
            "roll back",
        )
    if package["status"] != "True":
        what = f"{package['reason']}: {package['message']}" if package["reason"] != CHECKING else "checking it"
        return conditions.condition("Ready", False, "PackageNotVerified", f"the package is not offered yet: {what}")
    where = stages.describe(spec, p)
    if spec.paused:
        left = stages.remaining_seconds(spec, p, now)
        rest = f"; {left} s of the stage left when resumed" if left is not None else ""
        return conditions.condition("Ready", True, "Paused", f"paused at {where}{rest}")
    end = stages.ends_at(spec, p)
    until = f" until {stages.format_time(end)}" if end is not None else ""
    return conditions.condition("Ready", True, "Serving", f"serving {where}{until}")


def desired(spec: DeliveryTaskSpec, body: dict[str, Any], result: Result | None, now: datetime) -> Desired:
    status = body.get("status") or {}
    package_before = conditions.get(status.get("conditions"), PACKAGE_VERIFIED)
    package = package_condition(spec, package_before, result)
    verified = package["status"] == "True"
    before = stages.Progress.from_status(status)
    progress = stages.step(spec, before, verified=verified, now=now)
    ready = ready_condition(spec, package, progress, now)
    checking = package["reason"] == CHECKING
    conds = [
        *kstatus(ready, reconciling=checking, progress="checking the package", reason="CheckingPackage"),
        package,
    ]
    fields = {**progress.fields(), "currentPercent": stages.percent(spec, progress) if verified else 0}
    return Desired(conds, fields, before, progress, package, package_before, stages.ends_at(spec, progress))


def unchanged(body: dict[str, Any], d: Desired) -> bool:
    status = body.get("status") or {}
    generation = identity(body)[2]
    if status.get("observedGeneration") != generation:
        return False
    if any(status.get(k) != v for k, v in d.fields.items()):
        return False
    for c in d.conds:
        prior = conditions.get(status.get("conditions"), c["type"])
        if prior is None or prior.get("observedGeneration") != generation:
            return False
        if any(prior.get(k) != c[k] for k in ("status", "reason", "message")):
            return False
    return True


async def sync(
    client: KubeClient,
    body: dict[str, Any],
    *,
    spec: DeliveryTaskSpec | None = None,
    result: Result | None = None,
    now: Callable[[], datetime] = utcnow,
) -> datetime | None:
    """Bring the task's status to what its spec, its status, the package check's `result` and the time say.

    Returns when the current stage ends (None: not while it stays as it is). A spec that does not validate is
    left alone (its reconcile reports it).
    """
    uid = body["metadata"].get("uid")
    async with status_lock(body):
        for _ in range(WRITE_ATTEMPTS):
            if spec is None:
                try:
                    spec = parse(body)
                except InvalidResource:
                    return None
            d = desired(spec, body, result, now())
            if unchanged(body, d):
                return d.stage_end
            try:
                await report(
                    client,
                    DELIVERY_TASK,
                    body,
                    d.conds,
                    resource_version=body["metadata"].get("resourceVersion"),
                    **d.fields,
                )
            except ApiError as e:
                if e.status != 409:
                    raise
                # Changed since it was read (a new spec, kopf's annotations, another replica): read it again.
                namespace, name, _ = identity(body)
                fresh = await client.get(DELIVERY_TASK.resource, namespace, name)
                if fresh is None or fresh["metadata"].get("deletionTimestamp") or fresh["metadata"].get("uid") != uid:
                    return None
                body, spec = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), **fresh}, None
                continue
            await _post_changes(client, body, spec, d)
            return d.stage_end
    namespace, name, _ = identity(body)
    log.info("DeliveryTask %s/%s kept changing while its status was written; the next pass writes it", namespace, name)
    return None


async def _post_changes(client: KubeClient, body: dict[str, Any], spec: DeliveryTaskSpec, d: Desired) -> None:
    """Events for a new package check result and a stage that started (report() posts Ready's)."""
    pkg, before = d.package, d.package_before
    if pkg["reason"] not in (CHECKING, NO_PACKAGE) and (
        before is None or (before.get("status"), before.get("reason")) != (pkg["status"], pkg["reason"])
    ):
        type_ = events.NORMAL if pkg["status"] == "True" else events.WARNING
        await events.post(client, body, type_, pkg["reason"], pkg["message"])
    p = d.progress
    if p.started and (p.stage, p.started_at) != (d.before.stage, d.before.started_at):
        end = f" until {stages.format_time(d.stage_end)}" if d.stage_end is not None else ""
        held = " (held: spec.paused or spec.rollback)" if p.paused_at is not None else ""
        await events.post(client, body, events.NORMAL, "StageStarted", f"{stages.describe(spec, p)} started{end}{held}")
