"""The analytics ingestion endpoints: uploads are read (bounded), checked event by event, produced to the event
log, and answered only once the log has acknowledged every accepted event (Kafka: acks=all, idempotent).

When the log is slow or unreachable the answer is 429 with Retry-After, so a client keeps its events and sends
them again; nothing is acknowledged that the log has not. Peer SDKs get the answers they expect (PostHog:
status codes, Countly: a JSON `result`), docs/analytics.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import Counter, Gauge, Histogram

from ..apps import AppDirectory
from ..config import LiveConfig
from ..resultcodes import ResultCode
from ..stores import EventLog, HotStore
from . import codes, events, upload
from .logpull import LogPulls
from .settings import AnalyticsSettings

log = logging.getLogger("mpaas.analytics")

UPLOADS = Counter("mpaas_analytics_uploads_total", "Uploads, by format and result code", ["source", "code"])
EVENTS = Counter("mpaas_analytics_events_total", "Events, by format and outcome", ["source", "outcome"])
PENDING = Gauge("mpaas_analytics_pending_events", "Events handed to the event log, not yet acknowledged")
PUBLISH = Histogram(
    "mpaas_analytics_publish_seconds",
    "From an upload's events handed to the event log to their acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

POSTHOG_PATHS = frozenset(p + slash for p in ("/batch", "/capture", "/e", "/i/v0/e", "/track") for slash in ("", "/"))
COUNTLY_PATH = "/i"
NATIVE_PATH = "/v1/events"
MPAAS_PATH = "/v1/logs"


RECORD_BYTES = 512 * 1024  # a log record's most: under Kafka's default 1 MiB message limit, with room


def pack(events_: list[tuple[bytes, bytes]], max_bytes: int = RECORD_BYTES) -> list[tuple[bytes, bytes]]:
    """One log record per device of an upload (in order), its events as JSON lines, split to stay under
    `max_bytes`: the log's cost is per record, so an upload of 100 events costs about one."""
    by_key: dict[bytes, list[list[bytes]]] = {}
    sizes: dict[bytes, int] = {}
    for key, value in events_:
        chunks = by_key.setdefault(key, [[]])
        if chunks[-1] and sizes[key] + len(value) + 1 > max_bytes:
            chunks.append([])
            sizes[key] = 0
        chunks[-1].append(value)
        sizes[key] = sizes.get(key, 0) + len(value) + 1
    return [(key, b"\n".join(chunk)) for key, chunks in by_key.items() for chunk in chunks]


class Publisher:
    """Hands events to the event log with a bound on what is in flight; False when the log cannot take them now."""

    def __init__(self, log_: EventLog, topic: str, max_pending: int, timeout: float):
        self.log, self.topic, self.max_pending, self.timeout = log_, topic, max_pending, timeout
        self.pending = 0
        self._started = False
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._warned = False

    async def start(self) -> bool:
        """Connect the event log if it is not; False while it cannot be reached (one attempt a second)."""
        if self._started:
            return True
        if time.monotonic() < self._retry_at:
            return False
        async with self._lock:
            if self._started:
                return True
            try:
                await asyncio.wait_for(self.log.start(), self.timeout)
                self._started, self._warned = True, False
            except Exception as e:
                self._retry_at = time.monotonic() + 1.0  # at most one attempt a second while it is away
                if not self._warned:
                    self._warned = True
                    log.warning("event log unreachable, answering 429 until it is back: %s", e)
                return False
        return True

    async def publish(self, records: list[tuple[bytes, bytes]], events_: int) -> bool:
        """Produce `records` (holding `events_` events) and wait for every acknowledgement."""
        if not await self.start() or self.pending + events_ > self.max_pending:  # checked after any wait
            return False
        self.pending += events_
        PENDING.set(self.pending)
        started = time.perf_counter()
        try:
            sends = [self.log.publish(self.topic, value, key=key) for key, value in records]
            await asyncio.wait_for(asyncio.gather(*sends), self.timeout)
            PUBLISH.observe(time.perf_counter() - started)
            return True
        except Exception as e:  # timeout, broker errors: the client keeps the events and retries (same ids)
            log.warning("event log did not acknowledge %d events: %r", events_, e)
            return False
        finally:
            self.pending -= events_
            PENDING.set(self.pending)

    async def close(self) -> None:
        if self._started:
            await self.log.close()


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _answer(send: Send, status: int, doc: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(doc, ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Ingest:
    """The ingestion routes, as a bare ASGI app (docs/benchmarks.md, "Serving stacks"); `route` says which."""

    def __init__(
        self,
        settings: AnalyticsSettings,
        live: LiveConfig[AppDirectory],
        publisher: Publisher,
        hot: HotStore,
        pulls: LogPulls | None = None,
    ):
        self.settings, self.live, self.publisher, self.hot, self.pulls = settings, live, publisher, hot, pulls
        rate = settings.app_events_per_second
        self.burst = max(settings.app_events_burst or rate, settings.max_events_per_request)
        self.checker = events.Checker(settings.max_future_seconds, settings.max_age_seconds)

    @staticmethod
    def handles(path: str) -> bool:
        return path in POSTHOG_PATHS or path in (COUNTLY_PATH, NATIVE_PATH, MPAAS_PATH)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        try:
            await self._handle(scope, receive, send)
        except Exception:  # never a traceback to the client; the SDKs retry a 500
            log.exception("upload failed inside analytics")
            UPLOADS.labels("_unknown", str(codes.INTERNAL_ERROR.code)).inc()
            await _answer(send, 500, {"code": codes.INTERNAL_ERROR.code, "name": codes.INTERNAL_ERROR.name})

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        source = (
            "posthog"
            if path in POSTHOG_PATHS
            else "countly"
            if path == COUNTLY_PATH
            else "mpaas"
            if path == MPAAS_PATH
            else "native"
        )
        allowed = ("GET", "POST") if source == "countly" else ("POST",)
        if method not in allowed:
            await _answer(send, 405, {"error": "method not allowed"}, [(b"allow", ", ".join(allowed).encode())])
            return
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            if name in headers and name in ("content-encoding", "content-length", "content-type"):
                return await self._refuse(send, source, codes.MALFORMED_BODY, f"{name} sent twice")
            headers[name] = v.decode("latin-1")
        s = self.settings
        try:
            body = await asyncio.wait_for(
                upload.read(receive, headers, max_body_bytes=s.max_body_bytes, max_inflated_bytes=s.max_inflated_bytes),
                s.body_timeout_seconds,
            )
            batch = self._parse(source, scope, headers, body)
        except TimeoutError:
            return await self._refuse(send, source, codes.REQUEST_TIMEOUT, codes.REQUEST_TIMEOUT.memo)
        except upload.TooLarge as e:
            return await self._refuse(send, source, codes.REQUEST_TOO_LARGE, str(e))
        except OverflowError as e:
            return await self._refuse(send, source, codes.REQUEST_TOO_LARGE, str(e))
        except (upload.Malformed, events.BadUpload) as e:
            return await self._refuse(send, source, codes.MALFORMED_BODY, str(e))
        except PermissionError as e:
            return await self._refuse(send, source, codes.UNKNOWN_APP, str(e))
        if batch.app is None:
            return await self._refuse(send, source, codes.UNKNOWN_APP, codes.UNKNOWN_APP.memo)
        rate = self.settings.app_events_per_second
        if rate and batch.events:
            app_id, workspace_id = batch.app
            if not await self.hot.take_tokens(
                f"analytics:rl:{app_id}:{workspace_id}", rate=rate, burst=self.burst, n=len(batch.events)
            ):
                return await self._refuse(send, source, codes.RATE_LIMITED, codes.RATE_LIMITED.memo)
        received = self.checker.now_ms()
        records = pack([e.record(received) for e in batch.events])
        if records and not await self.publisher.publish(records, len(batch.events)):
            return await self._refuse(send, source, codes.BUSY, codes.BUSY.memo)
        code = codes.PARTIAL if batch.refused else codes.SUCCESS
        UPLOADS.labels(source, str(code.code)).inc()
        if batch.events:
            EVENTS.labels(source, "accepted").inc(len(batch.events))
        for r in batch.refused:
            EVENTS.labels(source, r.code.name).inc()
        if source == "posthog":
            await _answer(send, 200, {"status": "Ok"})
        elif source == "countly":
            await _answer(send, 200, {"result": "Success"})
        else:
            answer: dict[str, Any] = {
                "code": code.code,
                "accepted": len(batch.events),
                "refused": [
                    {"index": r.index, "code": r.code.code, "name": r.code.name, "detail": r.detail}
                    for r in batch.refused
                ],
            }
            if self.pulls is not None and batch.events:  # a log pull waiting for this device or user
                first = batch.events[0]
                try:
                    pull = await self.pulls.for_upload(
                        f"{first.app_id}/{first.workspace_id}", first.device_id, first.user_id
                    )
                except Exception as e:  # the events are in: never a failed answer for them (the SDK would resend)
                    log.warning("log pull lookup failed: %r", e)
                    pull = None
                if pull is not None:
                    answer["logPull"] = pull
            await _answer(send, 200, answer)

    def _parse(self, source: str, scope: dict[str, Any], headers: dict[str, str], body: bytes) -> events.Batch:
        resolve = self.live.current.resolve
        limit = self.settings.max_events_per_request
        if source == "posthog":
            return events.posthog(body, resolve, self.checker, limit)
        if source == "countly":
            query, ctype = scope.get("query_string", b""), headers.get("content-type", "")
            params = events.countly_params(query, body, ctype, self.settings.max_body_bytes)
            return events.countly(params, resolve, self.checker, limit)
        if source == "mpaas":
            try:
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8))
            except ValueError:
                raise events.BadUpload("the query string does not parse") from None
            tz = query.get("tz", "0")
            if not re.fullmatch(r"-?[0-9]{1,4}", tz) or abs(int(tz)) > 14 * 60:
                raise events.BadUpload("tz: minutes east of UTC, -840 to 840")
            return events.mpaas_lines(body, resolve, self.checker, limit, int(tz))
        return events.native(body, resolve, self.checker, limit)

    async def _refuse(self, send: Send, source: str, code: ResultCode, detail: str) -> None:
        UPLOADS.labels(source, str(code.code)).inc()
        detail = detail[:200]  # never the client's whole input echoed back
        retry = []
        if code is codes.BUSY:
            retry = [(b"retry-after", str(self.settings.retry_after_seconds).encode())]
        elif code is codes.RATE_LIMITED:
            retry = [(b"retry-after", b"1")]
        if source == "countly":
            # Countly's SDK keeps a request until it reads `Success`, and sends nothing behind it meanwhile: one
            # that can never be taken is answered Success (and counted above), only a passing refusal is not.
            if code in (codes.BUSY, codes.RATE_LIMITED, codes.REQUEST_TIMEOUT):
                await _answer(send, code.http_status, {"result": detail}, retry)
            else:
                await _answer(send, 200, {"result": "Success", "refused": code.name})
        elif source == "posthog":
            # posthog-node retries 408, 429 and 5xx, halves the batch on 413 and drops it on other 4xx.
            status = 401 if code is codes.UNKNOWN_APP else code.http_status
            await _answer(send, status, {"type": "validation_error", "code": code.name, "detail": detail}, retry)
        else:
            await _answer(send, code.http_status, {"code": code.code, "name": code.name, "detail": detail}, retry)
