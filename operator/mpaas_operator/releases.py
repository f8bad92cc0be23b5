"""The operator-wide loop that checks DeliveryTask packages and advances their stages.

Nothing here runs per resource on a kopf timer or daemon: kopf puts a finalizer on every resource a timer or
daemon serves, and no resource carries one (handlers.py). One asyncio task, started by the startup handler,
lists the DeliveryTasks every PERIOD_SECONDS (sooner when a stage ends or a check is due, at once when a spec
changes or a check finishes), and brings each one's status up to date through `delivery_task.sync`.

kopf pauses its handlers while another replica is the active peer, but gives the application no handle on
that pause. So the loop reads the peering object itself and applies kopf's rule (`Peering` below): it works
only while this replica's own entry is alive and no live peer has a priority as high. A handover can leave
two replicas working for a moment, as it can kopf's handlers; every status write is conditional on the
resourceVersion it was computed from, so of two writers one wins and the other recomputes.

Every COUNTS_SECONDS a pass also reads a started task's counts (hits, downloads, installs, failures per stage)
from the delivery component's Redis, for `sync` to write into status and judge spec.autoPause on (not every
pass: a busy release's hits change all the time, and each change is a status write); a task that is gone has
its counts dropped. With Redis down, the pass goes on without counts (what status holds stays).

A verified task with spec.diffs has its diff packages built (diff_builds.py): one build at a time across
tasks, each in a child process; results go into status through `sync`, failures are tried again later.

A package is checked once (it is immutable); a check that fails is repeated after 10 s, then 20 s, doubling
up to 5 minutes; a new spec, or an operator start, checks it again at once. At most CONCURRENT_CHECKS run at a
time, each in a thread of its own (package_check.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mpaas.api import DELIVERY_TASK, GROUP, MPAAS_GATEWAY, VERSION, InvalidResource
from mpaas.api.delivery import Package
from mpaas.delivery.packages import verify
from mpaas.delivery.reports import TaskCounts, forget, read_counts
from mpaas.kube import ApiError, KubeClient, ResourceType
from mpaas.stores import Counters, ObjectStore

from . import diff_builds, link_stats, metrics, package_check, push_stats
from .package_check import Result, Stopped
from .reconcile import counts as counting
from .reconcile import delivery_task

log = logging.getLogger(__name__)

PERIOD_SECONDS = 5.0
STANDBY_POLL_SECONDS = 1.0
CONCURRENT_CHECKS = 2
RETRY_FIRST_SECONDS = 10.0
RETRY_MAX_SECONDS = 300.0
COUNTS_SECONDS = 15.0
NO_REDIS = "the operator has no Redis to read counts from: set MPAAS_REDIS_URL (chart: delivery.redis)"

CLUSTER_KOPF_PEERINGS = ResourceType("kopf.dev", "v1", "clusterkopfpeerings")
KOPF_PEERINGS = ResourceType("kopf.dev", "v1", "kopfpeerings")


def retry_delay(failures: int) -> float:
    """Seconds until the next check after `failures` failed ones in a row (1, 2, ...)."""
    return min(RETRY_FIRST_SECONDS * 2 ** max(failures - 1, 0), RETRY_MAX_SECONDS)


class Peering:
    """Whether this replica is the one kopf lets work: kopf's own rule, read from the peering objects."""

    def __init__(
        self, client: KubeClient, *, name: str, identity: str, priority: int, namespaces: list[str], standalone: bool
    ):
        self.client, self.name, self.identity, self.priority = client, name, identity, priority
        self.namespaces, self.standalone = namespaces, standalone

    async def active(self) -> bool:
        if self.standalone:
            return True
        wanted: list[tuple[ResourceType, str | None]] = [(KOPF_PEERINGS, ns) for ns in self.namespaces]
        for rt, ns in wanted or [(CLUSTER_KOPF_PEERINGS, None)]:
            obj = await self.client.get(rt, ns, self.name)
            if obj is None or not self.leads(obj.get("status") or {}, datetime.now(UTC)):
                return False
        return True

    def leads(self, peers: dict[str, Any], now: datetime) -> bool:
        """kopf pauses a replica that sees a live peer of a higher or equal priority; until its own first
        keep-alive it has not joined (kopf starts paused)."""
        mine = peers.get(self.identity)
        if not isinstance(mine, dict) or not _alive(mine, now):
            return False
        return not any(
            isinstance(info, dict) and _alive(info, now) and int(info.get("priority") or 0) >= self.priority
            for peer, info in peers.items()
            if peer != self.identity
        )


def _alive(info: dict[str, Any], now: datetime) -> bool:
    seen = info.get("lastseen")
    if not isinstance(seen, str):
        return True  # kopf counts a peer without lastseen as seen now
    try:
        at = datetime.fromisoformat(seen.replace("Z", "+00:00"))
    except ValueError:
        return False
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (now - at).total_seconds() < int(info.get("lifetime") or 60)


@dataclass
class CheckState:
    """What this replica knows of one task's package check (lost on restart: a start checks again at once)."""

    result: Result | None = None
    failures: int = 0
    due: float = 0.0  # time.monotonic() of the next check
    running: asyncio.Task[None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    stages: list[int] = field(default_factory=list)  # whose counts to drop when the task is gone
    counts_due: float = 0.0  # time.monotonic() of the next read of its counts
    diffs_built: dict[str, dict[str, Any]] = field(default_factory=dict)  # from sha256 -> status entry
    diffs_failed: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # -> (why, failures, retry at)
    diff_from: str | None = None  # the build running: from this sha256


class Releases:
    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checks: dict[str, CheckState] = {}
        self._slots = asyncio.Semaphore(CONCURRENT_CHECKS)
        self.counters: Counters | None = None
        self._counts_failing = False
        self._diff_build: asyncio.Task[None] | None = None  # one at a time, across tasks
        self.link_redis: Any = None  # the link pods' Redis: their figures go into Link channels' status
        self._link_stats = link_stats.LinkStats()
        self.push_stats: push_stats.PushStats | None = None
        self._stats_due = 0.0
        self._push_due = 0.0
        self.diff_limits = diff_builds.Limits()

    def start(
        self,
        client: KubeClient,
        objects: ObjectStore | None,
        peering: Peering,
        namespaces: list[str],
        counters: Counters | None = None,
        diff_limits: diff_builds.Limits | None = None,
        link_redis: Any = None,
        push_figures: push_stats.PushStats | None = None,
    ) -> None:
        self.client, self.objects, self.peering, self.namespaces = client, objects, peering, namespaces
        self.counters = counters
        self.diff_limits = diff_limits or diff_builds.Limits()
        self.link_redis = link_redis
        self.push_stats = push_figures
        self._counts_failing = False
        delivery_task.spec_changed = self.recheck
        if self._task is not None:  # a startup handler retried
            self._task.cancel()
        self._task = asyncio.create_task(self._run(), name="delivery releases")

    async def stop(self) -> None:
        delivery_task.spec_changed = delivery_task.no_loop
        self._stop_checks()
        if self.push_stats is not None:
            await self.push_stats.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def recheck(self, uid: str) -> None:
        """A task's spec changed or it was resumed: a package not verified yet is checked at once."""
        state = self._checks.get(uid)
        if state is not None and state.running is None:
            state.due = 0.0
        self._wake.set()

    async def _run(self) -> None:
        while True:
            delay = PERIOD_SECONDS
            self._wake.clear()  # a wake-up during the pass (a check done) cuts the next wait short
            try:
                if await self.peering.active():
                    delay = await self.run_pass()
                    if self.link_redis is not None and time.monotonic() >= self._stats_due:
                        self._stats_due = time.monotonic() + link_stats.STATS_SECONDS
                        await self._link_stats.refresh(self.client, self.link_redis, self.namespaces)
                    if self.push_stats is not None and time.monotonic() >= self._push_due:
                        self._push_due = time.monotonic() + push_stats.STATS_SECONDS
                        await self.push_stats.refresh(self.client, self.link_redis, self.namespaces)
                else:
                    # What this replica knew goes stale while another one works.
                    self._stop_checks()
                    self._checks.clear()
                    delay = STANDBY_POLL_SECONDS
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("DeliveryTask pass failed: %s", e)
            except Exception:
                log.exception("DeliveryTask pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        wanted: list[str | None] = [*self.namespaces] or [None]
        for ns in wanted:
            items += (await self.client.list(DELIVERY_TASK.resource, ns)).get("items") or []
        return items

    async def run_pass(self) -> float:
        """One look at every task; returns the seconds until the next is due."""
        seen: set[str] = set()
        wake = PERIOD_SECONDS
        no_counts = "" if self.counters is not None else NO_REDIS
        counts_down = False  # after one failure, not asked again this pass: each would wait out its timeout
        parsed: list[tuple[dict[str, Any], Any]] = []
        for body in await self._list():
            meta = body.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            body.setdefault("kind", DELIVERY_TASK.kind)
            seen.add(str(meta.get("uid") or ""))
            try:
                parsed.append((body, delivery_task.parse(body)))
            except InvalidResource:
                continue  # its reconcile reports InvalidSpec; the release holds where it is
        shelves = diff_builds.candidates(parsed)
        keys = await self._delivery_keys()
        for body, spec in parsed:
            meta = body["metadata"]
            uid = str(meta.get("uid") or "")
            state = self._checks.setdefault(uid, CheckState())
            counts: TaskCounts | None = None
            state.stages = counting.stage_indexes(body.get("status") or {})
            if self.counters is not None and state.stages and not counts_down and state.counts_due <= time.monotonic():
                try:
                    counts = await read_counts(self.counters, uid, state.stages)
                    state.counts_due = time.monotonic() + COUNTS_SECONDS
                    self._counts_failing = False
                except Exception as e:
                    counts_down = True
                    if not self._counts_failing:
                        log.warning("DeliveryTask counts not read (the delivery component's Redis): %r", e)
                    self._counts_failing = True
            view = self._diffs(body, spec, shelves, state)
            try:
                end = await delivery_task.sync(
                    self.client,
                    body,
                    spec=spec,
                    result=state.result,
                    counts=counts,
                    no_counts=no_counts or ("the delivery component's Redis did not answer" if counts_down else ""),
                    diffs=view,
                )
            except ApiError as e:
                log.warning("DeliveryTask %s/%s: status not written: %s", meta.get("namespace"), meta.get("name"), e)
                continue
            if end is not None:
                wake = min(wake, (end - datetime.now(UTC)).total_seconds())
            if spec.package is not None and not _verified(body) and not (state.result and state.result.ok):
                if state.running is None:
                    left = state.due - time.monotonic()
                    if left <= 0:
                        self._start_check(uid, meta, spec.package, state, keys.get((spec.app_id, spec.workspace_id)))
                    else:
                        wake = min(wake, left)
        for uid in list(self._checks):
            if uid not in seen:
                gone = self._checks.pop(uid)
                gone.stop.set()
                await self._forget(uid, gone.stages)
        return max(wake, 0.05)

    def _diffs(
        self,
        body: dict[str, Any],
        spec: Any,
        shelves: dict[diff_builds.Shelf, list[diff_builds.Candidate]],
        state: CheckState,
    ) -> diff_builds.View | None:
        """What is known of the task's diff packages; starts the next build that is due when none runs."""
        if spec.diffs is None or spec.package is None:
            return None
        wanted = diff_builds.sources(body, spec, shelves) if diff_builds.package_verified(body) else []
        listed = {
            e.get("fromSha256") for e in (body.get("status") or {}).get("diffPackages") or [] if isinstance(e, dict)
        }
        now = time.monotonic()
        if self._diff_build is None and self.objects is not None:
            for source in wanted:
                sha = source.package.sha256
                if sha in listed or sha in state.diffs_built:
                    continue
                failed = state.diffs_failed.get(sha)
                if failed is not None and failed[2] > now:
                    continue
                state.diff_from = sha
                meta = body.get("metadata") or {}
                self._diff_build = asyncio.create_task(
                    self._build_diff(f"{meta.get('namespace')}/{meta.get('name')}", source, spec, state),
                    name=f"diff build {meta.get('uid')}",
                )
                break
        failed_now = {sha: why for sha, (why, _, _) in state.diffs_failed.items()}
        if self.objects is None:
            failed_now = {s.package.sha256: "no object store is configured (MPAAS_OBJECTS_URL)" for s in wanted}
        return diff_builds.View(wanted, dict(state.diffs_built), failed_now, state.diff_from)

    async def _build_diff(self, who: str, source: diff_builds.Source, spec: Any, state: CheckState) -> None:
        sha = source.package.sha256
        try:
            log.info("DeliveryTask %s: building the diff from %s (%s)", who, source.package.version, source.task)
            entry = await diff_builds.build(
                source, spec.package, str(spec.resource_type), str(spec.platform), self.diff_limits
            )
            state.diffs_built[sha] = entry
            state.diffs_failed.pop(sha, None)
            metrics.DIFF_BUILDS.labels("Built").inc()
            log.info("DeliveryTask %s: diff from %s built, %s bytes", who, source.package.version, entry["sizeBytes"])
        except diff_builds.Failed as e:
            failures = (state.diffs_failed.get(sha, ("", 0, 0.0))[1]) + 1
            delay = diff_builds.retry_delay(failures)
            state.diffs_failed[sha] = (f"{e}; tried again in {delay:.0f} s", failures, time.monotonic() + delay)
            metrics.DIFF_BUILDS.labels("Failed").inc()
            log.warning("DeliveryTask %s: diff from %s not built: %s", who, source.package.version, e)
        except Exception as e:  # the child could not be started: tried again as a failure
            failures = (state.diffs_failed.get(sha, ("", 0, 0.0))[1]) + 1
            delay = diff_builds.retry_delay(failures)
            state.diffs_failed[sha] = (f"{e!r}; tried again in {delay:.0f} s", failures, time.monotonic() + delay)
            log.exception("DeliveryTask %s: diff build failed", who)
        finally:
            state.diff_from = None
            self._diff_build = None
            self._wake.set()  # the next pass writes it, and starts the next build

    async def _forget(self, uid: str, stages: list[int]) -> None:
        if self.counters is None or not stages:
            return
        try:
            await forget(self.counters, uid, stages)
        except Exception as e:  # a few KiB left behind, no more
            log.warning("counts of deleted DeliveryTask %s not dropped: %r", uid, e)

    async def _delivery_keys(self) -> dict[tuple[str, str], str]:
        """(appId, workspaceId) -> the app's deliveryPublicKey, from the MpaasGateways (the first, by namespace
        and name, of those that give one)."""
        keys: dict[tuple[str, str], str] = {}
        gateways: list[dict[str, Any]] = []
        wanted: list[str | None] = [*self.namespaces] or [None]
        for ns in wanted:
            gateways += (await self.client.list(MPAAS_GATEWAY.resource, ns)).get("items") or []
        gateways.sort(key=lambda g: ((g.get("metadata") or {}).get("namespace") or "", g["metadata"].get("name")))
        for g in gateways:
            for app in (g.get("spec") or {}).get("apps") or []:
                key = app.get("deliveryPublicKey") if isinstance(app, dict) else None
                if isinstance(key, str) and key:
                    keys.setdefault((str(app.get("appId")), str(app.get("workspaceId"))), key)
        return keys

    def _start_check(
        self, uid: str, meta: dict[str, Any], package: Package, state: CheckState, public_key: str | None = None
    ) -> None:
        state.stop = threading.Event()
        state.running = asyncio.create_task(
            self._check(uid, f"{meta.get('namespace')}/{meta.get('name')}", package, state, public_key),
            name=f"package check {uid}",
        )

    async def _check(
        self, uid: str, who: str, package: Package, state: CheckState, public_key: str | None = None
    ) -> None:
        try:
            async with self._slots:
                if state.stop.is_set():
                    return
                log.info("DeliveryTask %s: checking package %s", who, package.uri)
                run = functools.partial(verify, public_key=public_key)
                result = await package_check.check(package, self.objects, state.stop, run=run)
        except Stopped:
            return
        finally:
            state.running = None
        metrics.PACKAGE_CHECKS.labels(result.reason).inc()
        if result.ok:
            state.failures = 0
            log.info("DeliveryTask %s: %s", who, result.message)
        else:
            state.failures += 1
            delay = retry_delay(state.failures)
            state.due = time.monotonic() + delay
            result = Result(result.reason, f"{result.message}; checked again in {delay:.0f} s")
            log.warning("DeliveryTask %s: package not verified (%s): %s", who, result.reason, result.message)
        if self._checks.get(uid) is state:
            state.result = result
            self._wake.set()  # the next pass writes it

    def _stop_checks(self) -> None:
        if self._diff_build is not None:
            self._diff_build.cancel()  # kills the builder process (diff_builds.build)
        for state in self._checks.values():
            state.stop.set()
            if state.running is not None:
                state.running.cancel()


def _verified(body: dict[str, Any]) -> bool:
    return any(
        c.get("type") == delivery_task.PACKAGE_VERIFIED and c.get("status") == "True"
        for c in (body.get("status") or {}).get("conditions") or []
        if isinstance(c, dict)
    )


RELEASES = Releases()
