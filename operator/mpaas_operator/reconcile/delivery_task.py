"""DeliveryTask: validation, the package's condition, the stages, and status.

The delivery component offers a task's package once the condition `PackageVerified` is True, to
`status.currentPercent` of the devices its targeting picks. The operator-wide loop (releases.py) checks
packages and advances stages; the reconcile here reports a new spec at once. Both write through `sync`, which
computes the whole status from the spec, the status (which holds every bit of state) and the time, writes it
only when it differs, and only if the resource is still at the version it read: of two writers (the moment a
standby takes over), one wins and the other recomputes from what the winner wrote, so no stage is advanced
twice.

Ready: True with reason `Serving`, or `Paused` (a held release is still served, at the stage it holds, and
pausing is what its owner asked for: a GitOps tool waiting for Ready must not fail on it), or `AutoPaused`
(held by spec.autoPause: served at its stage as when paused, with a Warning Event); False with
`PackageNotVerified` (nothing is offered), `RolledBack` (withdrawn), or `InvalidSpec`.

The releases loop reads the task's counts from the delivery component's Redis and passes them to `sync`, which
writes them (status.hits, ..., status.stages[]) and judges spec.autoPause on them (counts.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from mpaas.api import DELIVERY_TASK, InvalidResource
from mpaas.api.base import now as utcnow
from mpaas.api.delivery import DeliveryTaskSpec
from mpaas.delivery.packages import locate
from mpaas.delivery.reports import TaskCounts
from mpaas.kube import ApiError, KubeClient

from .. import conditions, diff_builds, events, metrics
from ..package_check import CHECKING, NO_PACKAGE, Result
from . import counts as counting
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
        # The package's check stays: the package is immutable, so no spec change makes it wrong; so does what
        # auto-paused the release, which holds where it is.
        await report_invalid(client, DELIVERY_TASK, body, e, keep=(PACKAGE_VERIFIED, counting.AUTO_PAUSED))
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
    auto_paused: bool = False  # newly, in this step


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
    spec: DeliveryTaskSpec,
    package: dict[str, Any],
    p: stages.Progress,
    now: datetime,
    auto_paused: dict[str, Any] | None = None,
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
    if auto_paused is not None and auto_paused["status"] == "True":
        return conditions.condition("Ready", True, "AutoPaused", f"auto-paused: {auto_paused['message']}")
    end = stages.ends_at(spec, p)
    until = f" until {stages.format_time(end)}" if end is not None else ""
    return conditions.condition("Ready", True, "Serving", f"serving {where}{until}")


def desired(
    spec: DeliveryTaskSpec,
    body: dict[str, Any],
    result: Result | None,
    now: datetime,
    counts: TaskCounts | None = None,
    no_counts: str = "",
    diffs: diff_builds.View | None = None,
) -> Desired:
    """`counts`: read from the delivery component's Redis this pass; None with `no_counts` saying why they could
    not be, or None alone (a reconcile of a new spec): what status holds stays. `diffs`: what the releases loop
    knows of spec.diffs' builds; None (a reconcile): the diff packages status lists stay."""
    status = body.get("status") or {}
    generation = identity(body)[2]
    package_before = conditions.get(status.get("conditions"), PACKAGE_VERIFIED)
    package = package_condition(spec, package_before, result)
    verified = package["status"] == "True"
    before = stages.Progress.from_status(status)
    auto = counting.AutoState.from_status(status)
    resumed = auto.paused and generation > (auto.paused_generation or 0)  # the owner changed the spec
    progress = stages.step(spec, before, verified=verified, now=now, hold=auto.paused and not resumed)
    entries = counting.stage_entries(spec, status.get("stages"), progress, counts)
    current = next((e for e in entries if e["index"] == progress.stage), {})
    if resumed:  # judged from here on: the counts known now are the baseline
        auto = counting.AutoState(
            stage=progress.stage, installs=current.get("installs") or 0, failures=current.get("failures") or 0
        )
    auto_cond, tripped = _auto_pause(spec, status, progress, auto, current, counts, no_counts, resumed, generation, now)
    if tripped:
        auto = counting.AutoState(now, generation, auto.stage, auto.installs, auto.failures)
        progress = replace(progress, paused_at=progress.paused_at or now)  # the clock stops as with spec.paused
    ready = ready_condition(spec, package, progress, now, auto_cond)
    checking = package["reason"] == CHECKING
    conds = [
        *kstatus(ready, reconciling=checking, progress="checking the package", reason="CheckingPackage"),
        package,
        *([auto_cond] if auto_cond is not None else []),
    ]
    fields = {**progress.fields(), "currentPercent": stages.percent(spec, progress) if verified else 0}
    if entries:
        fields["stages"] = entries
    if counts is not None:
        fields |= counting.totals(counts)
    if spec.auto_pause is not None or auto.paused:
        fields["autoPause"] = auto.fields()
    elif "autoPause" in status:
        fields["autoPause"] = None
    conds += _diff_packages(spec, status, diffs, verified, fields)
    end = stages.ends_at(spec, progress)
    return Desired(conds, fields, before, progress, package, package_before, end, tripped)


def _diff_packages(
    spec: DeliveryTaskSpec,
    status: dict[str, Any],
    view: diff_builds.View | None,
    verified: bool,
    fields: dict[str, Any],
) -> list[dict[str, Any]]:
    """The DiffPackages condition (none while spec.diffs was never set), with status.diffPackages into `fields`."""
    previous = conditions.get(status.get("conditions"), diff_builds.CONDITION)
    if spec.diffs is None:
        if status.get("diffPackages"):
            fields["diffPackages"] = []
        if previous is None:
            return []
        return [conditions.condition(diff_builds.CONDITION, True, "NotRequested", "spec.diffs is unset: none built")]
    if view is None:
        if previous is not None:
            return [_plain(previous)]
        return [conditions.condition(diff_builds.CONDITION, None, "Pending", "the operator looks for earlier releases")]
    entries = diff_builds.status_entries(view, status.get("diffPackages") or [])
    fields["diffPackages"] = entries
    return [diff_builds.condition(view, entries, verified)]


def _auto_pause(
    spec: DeliveryTaskSpec,
    status: dict[str, Any],
    p: stages.Progress,
    auto: counting.AutoState,
    current: dict[str, Any],
    counts: TaskCounts | None,
    no_counts: str,
    resumed: bool,
    generation: int,
    now: datetime,
) -> tuple[dict[str, Any] | None, bool]:
    """The AutoPaused condition (None without spec.autoPause), and whether the release pauses now."""
    previous = conditions.get(status.get("conditions"), counting.AUTO_PAUSED)
    if auto.paused and not resumed:
        if previous is not None and previous.get("status") == "True":
            return _plain(previous), False  # says what paused it, with the counts of then
        return conditions.condition(counting.AUTO_PAUSED, True, "FailureRate", "paused on its failure rate"), False
    rule = spec.auto_pause
    if rule is None:
        return None, False
    where = stages.describe(spec, p)
    if not p.started:
        return conditions.condition(counting.AUTO_PAUSED, False, "NotStarted", "no stage is served yet"), False
    if counts is None or p.stage not in counts.stages:
        if resumed:
            return conditions.condition(
                counting.AUTO_PAUSED,
                False,
                "Resumed",
                f"resumed by a spec change (generation {generation}): {where} is judged on the installs reported "
                "from now on",
            ), False
        if no_counts:
            return conditions.condition(counting.AUTO_PAUSED, None, "NoCounts", no_counts), False
        if previous is not None:
            return _plain(previous), False
        return conditions.condition(counting.AUTO_PAUSED, None, "NoCounts", "the counts were not read yet"), False
    installs, failures = counting.since(auto, p.stage or 0, current.get("installs") or 0, current.get("failures") or 0)
    after = " since it was resumed" if auto.stage == p.stage else ""
    said = f"{where}: {counting.share(installs, failures)}{after}"
    if counting.too_many_failures(rule, installs, failures):
        if stages.held(spec):
            return conditions.condition(
                counting.AUTO_PAUSED, False, "Held", f"{said}, above {rule.max_failure_percent}%; held by the spec"
            ), False
        return conditions.condition(
            counting.AUTO_PAUSED,
            True,
            "FailureRate",
            f"{said}, above autoPause.maxFailurePercent {rule.max_failure_percent}%: held at this stage since "
            f"{stages.format_time(now)}; change the spec to resume (for example set spec.paused, then clear it)",
        ), True
    return conditions.condition(
        counting.AUTO_PAUSED,
        False,
        "WithinLimit",
        f"{said}; pauses above {rule.max_failure_percent}% once {rule.min_installs} installs are reported",
    ), False


def unchanged(body: dict[str, Any], d: Desired) -> bool:
    status = body.get("status") or {}
    generation = identity(body)[2]
    if status.get("observedGeneration") != generation:
        return False
    if any(_pruned(status.get(k)) != _pruned(v) for k, v in d.fields.items()):
        return False
    for c in d.conds:
        prior = conditions.get(status.get("conditions"), c["type"])
        if prior is None or prior.get("observedGeneration") != generation:
            return False
        if any(prior.get(k) != c[k] for k in ("status", "reason", "message")):
            return False
    return True


def _pruned(value: Any) -> Any:
    """A status value as the API server keeps it: a merge patch's None removes a key."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


async def sync(
    client: KubeClient,
    body: dict[str, Any],
    *,
    spec: DeliveryTaskSpec | None = None,
    result: Result | None = None,
    counts: TaskCounts | None = None,
    no_counts: str = "",
    diffs: diff_builds.View | None = None,
    now: Callable[[], datetime] = utcnow,
) -> datetime | None:
    """Bring the task's status to what its spec, its status, the package check's `result`, the `counts` and the
    time say.

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
            d = desired(spec, body, result, now(), counts, no_counts, diffs)
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
    if d.auto_paused:
        metrics.AUTO_PAUSES.labels(identity(body)[0]).inc()  # its Warning Event is Ready's
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
