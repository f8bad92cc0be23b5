"""The mobile gateway (MGS): `POST /mgw.htm` and `/api/<operationType>`, routed by operation type.

A request passes the stages in `stages/`, in this fixed order, each of which may answer with a result code
(docs/gateway.md) before anything reaches an upstream:

    route -> signature -> encryption (open) -> body check -> rate limit -> session -> cache -> mock
    -> canary -> forward -> cache (store) -> encryption (seal)

Config comes live from the MpaasGateway resource and the Secrets it names, compiled into the route table
(`stages/route.py`); a request reads the current table once, so a config swap never changes the rules under an
in-flight request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram

from ..config import LiveConfig
from ..http1 import AsgiRequest, Headers, Limits
from ..http1 import Request as Incoming
from ..service import component_app, trace_id_var
from ..stores import FallbackHotStore, HotStore, open_hotstore
from ..tally import CounterTally, HistogramTally
from . import bodycheck, codes
from .admin import create_admin_app
from .codes import ResultCode
from .outcome import Outcome, result
from .settings import GatewaySettings
from .stages import cache, canary, encryption, mock, rate_limit, session, signature
from .stages.cache import ResponseCache
from .stages.forward import Forwarder
from .stages.route import EMPTY, KIND, SECRET, RouteTable, compiler, match, secrets_named
from .stages.session import SessionCache

log = logging.getLogger("mpaas.gateway")
digest_log = logging.getLogger("mpaas.gateway.digest")

REQUESTS = Counter(
    "mpaas_gateway_requests_total", "Gateway requests", ["operation_type", "app_id", "workspace_id", "result"]
)
LATENCY = Histogram(
    "mpaas_gateway_request_seconds",
    "Gateway request latency",
    ["operation_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ADDED = Histogram(
    "mpaas_gateway_added_seconds",
    "Time in the gateway itself: from the request head parsed to the answer ready, less upstream calls",
    ["operation_type"],
    buckets=(0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
# Counted per request: tallied in plain Python, added to these metrics in batches (mpaas.tally).
_requests = CounterTally(REQUESTS)
_latency = HistogramTally(LATENCY)
_added = HistogramTally(ADDED)
HOTSTORE_FALLBACK = Gauge(
    "mpaas_gateway_hotstore_local_fallback",
    "1 while Redis is unreachable (local state)",
    multiprocess_mode="livemax",
)

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_random_bytes = random.randbytes
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _trace(headers: Headers) -> tuple[str, str]:
    """(trace id, traceparent for the upstream): continue the caller's W3C trace or start one."""
    incoming = headers.get("traceparent")
    m = _TRACEPARENT.match(incoming) if incoming else None
    if m and m.group(1) != "0" * 32:
        trace_id, flags = m.group(1), m.group(3)
    else:
        given = headers.get("mgw-traceid")
        if given and _TRACE_ID.fullmatch(given):
            trace_id = given
        else:
            # Trace ids need uniqueness, not secrecy: the PRNG is ~10x cheaper than os.urandom.
            # One draw for the trace id and the span id.
            ids = _random_bytes(24).hex()
            return ids[:32], f"00-{ids[:32]}-{ids[32:]}-01"
        flags = "01"
    return trace_id, f"00-{trace_id}-{_random_bytes(8).hex()}-{flags}"


class Gateway:
    def __init__(self, settings: GatewaySettings, live: LiveConfig[RouteTable], hot: HotStore | None = None):
        self.settings = settings
        self.live = live
        self.hot = FallbackHotStore(
            hot or open_hotstore(settings.redis_url), on_change=lambda down: HOTSTORE_FALLBACK.set(int(down))
        )
        self.forwarder = Forwarder(settings.upstream_max_connections, settings.upstream_max_response_bytes)
        self.cache = ResponseCache()
        self.sessions = SessionCache()

    async def start(self) -> None:
        await self.forwarder.start()

    async def stop(self) -> None:
        await self.forwarder.stop()
        await self.hot.close()

    async def handle(self, request: Incoming, operation_type: str | None, *, rest: bool) -> Outcome:
        started = time.perf_counter()
        headers = request.headers
        trace_id, traceparent = _trace(headers)
        trace_id_var.set(trace_id)
        app_id = headers.get("appid", "")
        workspace_id = headers.get("workspaceid", "")
        table = self.live.current  # one read: the whole request sees one config
        try:
            out = await self._pipeline(
                request, table, operation_type, app_id, workspace_id, trace_id, traceparent, rest
            )
        except Exception:
            log.exception("request failed inside the gateway")
            out = result(codes.INTERNAL_ERROR, trace_id, rest=rest)
        done = time.perf_counter()
        elapsed = done - started
        # Label values are bounded: known operation types and apps, or "_unknown".
        op_label = (operation_type,) if operation_type in table.apis else ("_unknown",)
        if (app_id, workspace_id) in table.apps:
            _requests.inc((op_label[0], app_id, workspace_id, str(out.code)))
        else:
            _requests.inc((op_label[0], "_unknown", "_unknown", str(out.code)))
        _latency.observe(op_label, elapsed)
        _added.observe(op_label, done - request.received - request.waited)
        if self.settings.digest_log:
            digest_log.info(
                "digest",
                extra={
                    "fields": {
                        "traceId": trace_id,
                        "appId": app_id,
                        "workspaceId": workspace_id,
                        "operationType": operation_type,
                        "result": out.code,
                        "latencyMs": round(elapsed * 1000, 3),
                        "upstream": out.upstream,
                        "clientIp": request.client_ip,
                        "deviceId": headers.get("did", ""),
                    }
                },
            )
        return out

    async def _pipeline(
        self,
        request: Incoming,
        table: RouteTable,
        op: str | None,
        app_id: str,
        workspace_id: str,
        trace_id: str,
        traceparent: str,
        rest: bool,
    ) -> Outcome:
        """The stages in their fixed order; the first that refuses the request answers it."""
        matched = match(table, request, op, app_id, workspace_id)
        if isinstance(matched, ResultCode):
            return result(matched, trace_id, rest=rest)
        api, app = matched
        assert op is not None  # match refuses a request without one
        request.mark("route")
        limit = table.max_body_bytes
        read = request.whole_body(limit) if request.complete else await request.body(limit)
        if read is None:
            return result(codes.REQUEST_TOO_LARGE, trace_id, rest=rest)
        body = read
        request.mark("read body")
        if app.signature is not None and not request.trusted:
            refused = await signature.check(app.signature, request, app_id, workspace_id, op, body, self.hot)
            if refused is not None:
                return result(refused, trace_id, rest=rest)
            request.mark("signature")
        session_key = b""
        if app.encryption is not None:
            opened = encryption.unseal(app.encryption, request, app_id, op, body)
            if isinstance(opened, ResultCode):
                return result(opened, trace_id, rest=rest)
            session_key, body = opened
            request.mark("decrypt")
        if body:
            ctype = request.headers.get("content-type", "")
            try:
                bodycheck.check(ctype, body)
            except ValueError as e:
                return result(codes.MALFORMED_BODY, trace_id, rest=rest, memo=f"body is not valid {ctype}: {e}")
            except RecursionError:  # the checks are bounded; should one not be, the answer is still 3004
                return result(codes.MALFORMED_BODY, trace_id, rest=rest, memo=f"body is not valid {ctype}")
        if api.rate_limit is not None or app.rate_limit is not None:
            refused = await rate_limit.admit(
                self.hot, table.gateway, op, api.rate_limit, app_id, workspace_id, app.rate_limit
            )
            if refused is not None:
                return result(refused, trace_id, rest=rest)
        request.mark("rate limits")
        user_id = ""
        if api.auth_required:
            login = await session.check_login(
                request, table.session, table.upstreams, self.sessions, self.forwarder.http
            )
            if isinstance(login, ResultCode):
                return result(login, trace_id, rest=rest)
            user_id = login
            request.mark("login")
        cache_key = None
        if api.cache is not None:
            session_header = table.session.header if table.session is not None else ""
            cache_key = cache.key_for(api.cache, request, op, app_id, workspace_id, body, user_id, session_header, rest)
        cached = self.cache.get(cache_key) if cache_key is not None else None
        if api.mock is not None:
            out = mock.answer(api.mock, request, body, trace_id, rest)
        elif cached is not None:
            out = cache.answer(cached, trace_id)
        else:
            fwd = api.forward
            upstream = fwd.upstream
            if api.canary is not None and canary.chosen(api.canary, request, op, app_id, workspace_id):
                upstream = table.upstreams[api.canary.upstream]
            out = await self.forwarder.forward(
                request,
                table.upstreams,
                fwd,
                op,
                upstream,
                body,
                trace_id,
                traceparent,
                rest,
                {"x-user-id": user_id} if user_id else None,
                (app_id, workspace_id),
            )
            if cache_key is not None and api.cache is not None:
                cache.store(self.cache, cache_key, api.cache, out)
        request.mark(out.upstream or "answer")
        etag = out.headers.get("ETag")
        if etag and request.headers.get("if-none-match") == etag:
            out.status, out.body = 304, b""
        if session_key and out.body and app.encryption is not None:
            encryption.seal(app.encryption, out, session_key, app_id, op)
            request.mark("seal")
        return out


class GatewayASGI:
    """`/mgw.htm` and `/api/<operationType>` go to the gateway; health, metrics and lifespan to FastAPI.

    Under the lean HTTP/1.1 server (`mpaas.http1`) the RPC paths arrive through
    `route`; under an ASGI server (HTTP/2 via hypercorn, tests) through
    `__call__`, which skips the framework's routing and request objects.
    """

    def __init__(self, gateway: Gateway, app: FastAPI):
        self.gateway, self.app, self.state = gateway, app, app.state
        self.admin = create_admin_app(gateway)

    def route(self, path: str) -> Callable[[Incoming], Awaitable[Outcome]] | None:
        if path == "/mgw.htm":
            return self._mgw
        if path.startswith("/api/") and len(path) > 5:
            return self._rest
        return None

    async def _mgw(self, request: Incoming) -> Outcome:
        if request.method != "POST":
            return Outcome(0, 405, {"Allow": "POST"})
        return await self.gateway.handle(request, request.headers.get("operation-type"), rest=False)

    async def _rest(self, request: Incoming) -> Outcome:
        return await self.gateway.handle(request, request.path[5:], rest=True)

    def body_limit(self) -> int:
        return self.gateway.live.current.max_body_bytes

    @property
    def server_limits(self) -> Limits:
        """What a client may hold of the HTTP/1.1 server serving this app (mpaas.http1.Server reads it)."""
        s = self.gateway.settings
        return Limits(
            max_head_bytes=s.max_head_bytes,
            max_headers=s.max_headers,
            head_timeout_seconds=s.head_timeout_seconds,
            body_timeout_seconds=s.body_timeout_seconds,
            min_body_rate=s.min_body_rate,
            max_connections=s.max_connections,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = self.route(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            return await self.app(scope, receive, send)
        out = await handler(AsgiRequest(scope, receive))
        await out.send(send)


def create_app(settings: GatewaySettings | None = None, live: LiveConfig[RouteTable] | None = None) -> GatewayASGI:
    """The gateway app. Without `live`, config comes from `settings.config_source`."""
    settings = settings or GatewaySettings()
    external = live is not None
    live = live or LiveConfig(
        "gateway",
        [KIND, SECRET],
        compiler(settings.namespace, settings.gateway_name),
        EMPTY,
        named={SECRET: secrets_named},
    )
    gw = Gateway(settings, live)
    selectors = {KIND: {"fieldSelector": f"metadata.name={settings.gateway_name}"}} if settings.gateway_name else None

    async def start_config() -> None:
        if external:
            return
        if settings.gateway_name:  # in a pod the operator made: tell which generation this process serves
            live.report_applied(KIND, settings.gateway_name, namespace=settings.namespace)
        live.start(settings, selectors)
        if settings.reuse_port:
            # With SO_REUSEPORT the kernel hands this worker connections as soon as it binds, while the pod is
            # already Ready through its siblings: bind (the lifespan ends) only once there is a config to serve.
            try:
                await asyncio.wait_for(live.ready.wait(), settings.first_config_wait_seconds)
            except TimeoutError:
                log.warning("no configuration after %.0f s; serving anyway", settings.first_config_wait_seconds)

    async def stop_config() -> None:
        if not external:
            await live.stop()

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        if live.current is EMPTY:
            return False, "no MpaasGateway resource found"
        return True, f"serving {live.current.gateway} generation {live.current.generation}"

    app = component_app("gateway", on_start=[gw.start, start_config], on_stop=[stop_config, gw.stop], ready=ready)
    app.state.gateway = gw
    app.state.live = live
    return GatewayASGI(gw, app)
