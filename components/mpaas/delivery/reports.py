"""What clients did with a release, counted per task and stage: hits (checks that offered it), downloads, installs
and failed installs (docs/delivery.md, "Reports and counts").

    POST /v1/delivery/report
    {"appId": "SHOP", "workspaceId": "prod", "deviceId": "d-1", "task": "shop/v2", "event": "InstallFailed",
     "version": "2.1.0", "message": "INSTALL_FAILED_INSUFFICIENT_STORAGE"}

CodePush's status reports (codepush.py) land in the same counts; Expo Updates has no report protocol.

The counts live in the Counters store the seats' Redis holds (MPAAS_REDIS_URL; in-process under `mpaas dev`),
keyed by the task's uid, so a task created again under the same name starts at 0, and by the stage the task
was at when the event came. The operator reads them into the task's status (`read_counts`).

Downloads, installs and failures count devices, not reports: each goes into a HyperLogLog of device ids, so a
report sent again (a retry after a lost answer, or after StoreUnavailable) changes nothing, and a key stays 12
KiB whatever the audience (estimates within about 1 %, exact for small counts). Hits count checks: they are
summed in the process and added to Redis once a second, so the check never waits on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter

from ..http1 import Request
from ..resultcodes import ResultCode
from ..rules import version_key
from ..stores import Counters, MemoryCounters, RedisCounters
from . import codes
from .answer import Answer
from .check import Refused, _text
from .targeting import Catalog, Release

if TYPE_CHECKING:
    from ..config import LiveConfig
    from .check import DeliveryConfig

log = logging.getLogger("mpaas.delivery")

REPORT_PATH = "/v1/delivery/report"
EVENTS = {"Download": "downloads", "Install": "installs", "InstallFailed": "failures"}  # event -> count
COUNTS = ("hits", "downloads", "installs", "failures")
MAX_MESSAGE_CHARS = 1000
FLUSH_SECONDS = 1.0
FAILURE_LOG_SECONDS = 60.0  # one failure message logged per task and minute: a failing release floods nothing

_LABELS = ["app", "type", "version", "stage"]
REPORTED = {
    "downloads": Counter(
        "mpaas_delivery_reported_downloads_total", "Download reports, by app, type, version and stage", _LABELS
    ),
    "installs": Counter("mpaas_delivery_installs_total", "Install reports, by app, type, version and stage", _LABELS),
    "failures": Counter(
        "mpaas_delivery_install_failures_total", "Failed-install reports, by app, type, version and stage", _LABELS
    ),
}


def counts_prefix(redis_prefix: str) -> str:
    """The Counters prefix of the counts, under the component's Redis prefix (MPAAS_REDIS_PREFIX)."""
    return redis_prefix + "counts:"


def key(uid: str, stage: int, count: str) -> str:
    """`{uid}:stage:count`: every key of one task in one Redis Cluster slot, so its stages' HyperLogLogs can be
    counted as a union."""
    if not uid or "{" in uid or "}" in uid:
        raise ValueError(f"invalid task uid {uid!r}")
    return f"{{{uid}}}:{stage}:{count}"


def open_counters(url: str, redis_prefix: str) -> Counters:
    """`redis://...` (shared by every replica and read by the operator) or `memory://` (one process)."""
    if url.startswith("memory:"):
        return MemoryCounters(prefix=counts_prefix(redis_prefix))
    return RedisCounters(url, prefix=counts_prefix(redis_prefix))


@dataclass(frozen=True)
class StageCounts:
    hits: int = 0
    downloads: int = 0
    installs: int = 0
    failures: int = 0

    def fields(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in COUNTS}


@dataclass(frozen=True)
class TaskCounts:
    total: StageCounts
    stages: dict[int, StageCounts]


async def read_counts(counters: Counters, uid: str, stages: Iterable[int]) -> TaskCounts:
    """A task's counts per stage, and in total: hits summed, devices counted once across the stages."""
    indexes = sorted(set(stages))
    per: dict[int, StageCounts] = {}
    for i in indexes:
        hits = await counters.get(key(uid, i, "hits"))
        devices = [await counters.pfcount(key(uid, i, c)) for c in COUNTS[1:]]
        per[i] = StageCounts(hits, *devices)
    if not indexes:
        return TaskCounts(StageCounts(), per)
    unions = [await counters.pfcount(*(key(uid, i, c) for i in indexes)) for c in COUNTS[1:]]
    return TaskCounts(StageCounts(sum(s.hits for s in per.values()), *unions), per)


async def forget(counters: Counters, uid: str, stages: Iterable[int]) -> None:
    """Drop a deleted task's counts."""
    await counters.delete(*(key(uid, i, c) for i in stages for c in COUNTS))


class Tally:
    """Where the component counts: hits summed here and flushed every FLUSH_SECONDS, reports written at once."""

    def __init__(self, counters: Counters, flush_seconds: float = FLUSH_SECONDS):
        self.counters, self.flush_seconds = counters, flush_seconds
        self._hits: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def hit(self, release: Release) -> None:
        """Never raises: counting must not cost a client its answer."""
        try:
            k = key(release.uid, release.stage, "hits")
        except ValueError:  # a uid no key can hold (only a hand-written one, from a folder): not counted
            return
        self._hits[k] = self._hits.get(k, 0) + 1

    async def report(self, release: Release, event: str, device_id: str) -> None:
        """Count the device's event in the release's current stage; raises when the store does not answer."""
        count = EVENTS[event]
        try:
            k = key(release.uid, release.stage, count)
        except ValueError:  # as in hit()
            return
        await self.counters.pfadd(k, [device_id])
        package = release.spec.package
        version = package.version if package is not None else ""
        REPORTED[count].labels(release.spec.app_id, str(release.spec.resource_type), version, str(release.stage)).inc()

    async def flush(self) -> None:
        pending, self._hits = self._hits, {}
        items = list(pending.items())
        for i, (k, n) in enumerate(items):
            try:
                await self.counters.incr(k, n)
            except Exception as e:
                for k2, n2 in items[i:]:  # kept for the next flush: a Redis outage loses no hits
                    self._hits[k2] = self._hits.get(k2, 0) + n2
                if not self._failing:
                    log.warning("counts store unreachable, hits kept until it answers: %r", e)
                self._failing = True
                return
        self._failing = False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="delivery hits")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
        await self.counters.close()


@dataclass(frozen=True)
class Report:
    app_id: str
    workspace_id: str
    device_id: str
    namespace: str
    name: str
    event: str
    version: str
    message: str


def parse(data: bytes) -> Report:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused(codes.MALFORMED_BODY) from None
    if not isinstance(body, dict):
        raise Refused(codes.MALFORMED_BODY)
    app_id = _text(body, "appId", required=True)
    workspace_id = _text(body, "workspaceId", required=True)
    device_id = _text(body, "deviceId", required=True)
    task = _text(body, "task", required=True)
    namespace, _, name = task.partition("/")
    if not namespace or not name or "/" in name:
        raise Refused(codes.INVALID_REQUEST.because("task must be namespace/name, as the check answered it"))
    event = _text(body, "event", required=True)
    if event not in EVENTS:
        raise Refused(codes.INVALID_REQUEST.because(f"event must be one of {', '.join(EVENTS)}"))
    version = _text(body, "version")
    message = body.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS):
        raise Refused(codes.INVALID_REQUEST.because(f"message: a string of at most {MAX_MESSAGE_CHARS} characters"))
    return Report(app_id, workspace_id, device_id, namespace, name, event, version, message or "")


class Reports:
    """The report route: a client's event on a task it was offered, counted for the task's current stage."""

    def __init__(self, live: LiveConfig[DeliveryConfig], tally: Tally, max_body_bytes: int):
        self.live, self.tally, self.max_body_bytes = live, tally, max_body_bytes
        self._indexed: Catalog | None = None
        self._index: dict[tuple[str, str], Release] = {}
        self._logged: dict[str, float] = {}

    def find(self, catalog: Catalog, namespace: str, name: str) -> Release | None:
        if catalog is not self._indexed:  # built once per config change
            self._index = {r.key: r for shelf in catalog.shelves.values() for r in shelf}
            self._indexed = catalog
        return self._index.get((namespace, name))

    async def __call__(self, req: Request) -> Answer:
        code = await self._handle(req)
        raw = json.dumps({"resultCode": code.code, "resultMsg": code.memo}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Result-Status": str(code.code), "Cache-Control": "no-store"}
        return Answer(code.http_status, headers, raw)

    async def _handle(self, req: Request) -> ResultCode:
        if req.method != "POST":
            return codes.METHOD_NOT_ALLOWED
        data = await req.body(self.max_body_bytes)
        if data is None:
            return codes.REQUEST_TOO_LARGE
        try:
            report = parse(data)
        except Refused as e:
            return e.code
        config = self.live.current
        if config.apps.resolve(f"{report.app_id}/{report.workspace_id}") is None:
            return codes.UNKNOWN_APP
        release = self.find(config.catalog, report.namespace, report.name)
        if release is None or (release.spec.app_id, release.spec.workspace_id) != (report.app_id, report.workspace_id):
            return codes.UNKNOWN_TASK
        package = release.spec.package
        if package is None:
            return codes.INVALID_REQUEST.because("the task is a Switch: it has no package to report on")
        if report.version and version_key(report.version) != release.version:
            return codes.INVALID_REQUEST.because(f"version {report.version} is not the task's ({package.version})")
        try:
            await self.tally.report(release, report.event, report.device_id)
        except Exception as e:
            log.warning("report on %s/%s not counted: %r", release.namespace, release.name, e)
            return codes.STORE_UNAVAILABLE
        if report.event == "InstallFailed" and report.message:
            self._log_failure(release, report)
        return codes.SUCCESS.because("counted")

    def _log_failure(self, release: Release, report: Report) -> None:
        now = time.monotonic()
        if now - self._logged.get(release.uid, -FAILURE_LOG_SECONDS) < FAILURE_LOG_SECONDS:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged[release.uid] = now
        who = f"{release.namespace}/{release.name}"
        log.info("install of %s failed on device %s: %s", who, report.device_id, report.message)
