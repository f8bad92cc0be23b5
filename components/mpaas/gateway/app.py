"""The mobile gateway (MGS): `POST /mgw.htm` and `/api/<operationType>`, routed by operation type.

A request passes these stages, each of which may answer with a result code
(docs/gateway.md) before anything reaches an upstream:

    route (operation type, app, state, size) -> signature (Ts window, Sign, Nonce)
    -> rate limits (API, app) -> upstream choice (canary) -> forward (concurrency,
    circuit breaker, retries, failover)

Config comes live from the MpaasGateway resource and the Secrets it names
(`routes.py`); a request reads the current route table once, so a config
swap never changes the rules under an in-flight request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram

from ..config import LiveConfig
from ..crypto import envelope
from ..crypto.signing import canonical
from ..http1 import AsgiRequest, Headers, Limits
from ..http1 import Request as Incoming
from ..rules import parse_uint, percent_of
from ..service import component_app, trace_id_var
from ..stores import FallbackHotStore, HotStore, open_hotstore
from ..tally import CounterTally, HistogramTally
from . import bodycheck, codes
from .admin import create_admin_app
from .cache import ResponseCache, SessionCache, credentials
from .codes import ResultCode
from .guards import Breakers, Concurrency
from .routes import (
    EMPTY,
    IDEMPOTENT,
    KIND,
    SECRET,
    CompiledApi,
    CompiledApp,
    CompiledUpstream,
    RouteTable,
    compiler,
    secrets_named,
)
from .settings import GatewaySettings
from .upstream_http import ConnectFailed, EndpointBusy, ResponseTooLarge, UpstreamBroken, UpstreamClient
from .upstream_http import Response as UpstreamResponse

_NONCE_KEPT_AS_IS = 64  # characters; longer nonces are stored as their SHA-256
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
UPSTREAM_ERRORS = Counter("mpaas_gateway_upstream_errors_total", "Upstream failures", ["upstream", "kind"])
RATE_LIMITED = Counter("mpaas_gateway_rate_limited_total", "Requests refused by a rate limit", ["scope"])
HOTSTORE_FALLBACK = Gauge(
    "mpaas_gateway_hotstore_local_fallback",
    "1 while Redis is unreachable (local state)",
    multiprocess_mode="livemax",
)

# Request headers the gateway consumes or rewrites instead of forwarding.
_HOP_HEADERS = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "proxy-connection",
    "accept-encoding",
    "sign",
    "traceparent",
    "mgw-key",
    "mgw-key-type",
    "expect",
    # What the upstream learns of who calls, and what: set by the gateway from what it checked, never copied.
    "appid",
    "workspaceid",
    "operation-type",
    "x-user-id",  # only the gateway's session check may set it
    "mgw-traceid",
    "x-forwarded-for",
}
# Protocol headers that hold one value: sent twice they would be read one way and forwarded another (3005).
# The API's session header counts too (table.session.header).
_SINGLE_VALUED = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "expect",
        "appid",
        "workspaceid",
        "operation-type",
        "ts",
        "nonce",
        "sign",
        "mgw-key",
        "mgw-key-type",
        "mgw-traceid",
        "traceparent",
        "if-none-match",
        "x-user-id",
        "did",
        "uid",
        "app-version",
        "os-version",
        "platform",
        "brand",
        "model",
        "city",
        "network",
        "channel",
    }
)


# Names are compared with "_" as "-" (CGI-style upstreams read X_User_Id as X-User-Id): every spelling.
def _spellings(name: str) -> set[str]:
    out = {""}
    for ch in name:
        out = {o + c for o in out for c in ((ch, "_") if ch == "-" else (ch,))}
    return out


_NOT_FORWARDED = frozenset(v for name in _HOP_HEADERS for v in _spellings(name))
# Headers of an upstream's answer passed on to the client (docs/gateway.md), lower-case name -> name sent;
# Set-Cookie too (every one, kept apart: it repeats), and X-* names but those below. Never hop-by-hop ones
# (Connection, Keep-Alive, Transfer-Encoding, ...) nor those the gateway sets itself (Result-Status, Memo, Tips,
# Mgw-*, Content-Type, Content-Length; ETag on a cached API).
_RELAYED = {
    name.lower(): name
    for name in (
        "Cache-Control",
        "Location",
        "Retry-After",
        "ETag",
        "Last-Modified",
        "Content-Language",
        "Content-Disposition",
        "Vary",
        "Expires",
        "WWW-Authenticate",
    )
}
# X-* names the gateway keeps to itself: what it tells upstreams of who calls.
_RESERVED_X = frozenset(v for name in ("x-user-id", "x-forwarded-for") for v in _spellings(name)) | {
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
}
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_random_bytes = random.randbytes
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# Rule attributes the client sends as headers (canary rules, docs/gateway.md).
_ATTRIBUTE_HEADERS = {
    "DEVICE_ID": "did",
    "USER_ID": "uid",
    "APP_VERSION": "app-version",
    "OS_VERSION": "os-version",
    "PLATFORM": "platform",
    "BRAND": "brand",
    "MODEL": "model",
    "CITY": "city",
    "NETWORK": "network",
    "CHANNEL": "channel",
}


@dataclass
class Outcome:
    code: int
    status: int
    headers: dict[str, str]
    body: bytes = b""
    upstream: str = ""
    more: list[tuple[str, str]] | None = None  # header lines whose names repeat (set-cookie), after `headers`

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        pairs = [*self.headers.items(), *(self.more or ())]
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
        raw.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


# Headers of an answer the gateway sets per request; a cached answer keeps the others (those relayed).
_PER_REQUEST = frozenset({"Result-Status", "Memo", "Mgw-TraceId", "Content-Type", "ETag", "Tips"})


def storable(out: Outcome) -> bool:
    """Whether the response cache may keep an answer: not one that sets a cookie, says it is private, or varies
    by request headers the cache's key does not hold."""
    if out.more:  # Set-Cookie lines
        return False
    vary = out.headers.get("Vary")
    # Accept-Encoding aside: the client's never reaches the upstream (_HOP_HEADERS), so answers cannot vary by it.
    if vary and any(name.strip().lower() not in ("", "accept-encoding") for name in vary.split(",")):
        return False
    control = out.headers.get("Cache-Control")
    if control:
        directives = {d.split("=", 1)[0].strip().lower() for d in control.split(",")}
        if directives & {"private", "no-store", "no-cache"}:
            return False
    return True


def kept(out: Outcome) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in out.headers.items() if k not in _PER_REQUEST)


def _result(code: ResultCode, trace_id: str, *, rest: bool, memo: str | None = None) -> Outcome:
    return Outcome(
        code.code,
        code.http_status if rest else 200,
        {"Result-Status": str(code.code), "Memo": _latin1(memo or code.memo), "Mgw-TraceId": trace_id},
    )


def _latin1(text: str) -> str:
    """Header values must be Latin-1: other characters are escaped."""
    return text.encode("latin-1", "backslashreplace").decode("latin-1")


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
        self.breakers = Breakers()
        self.concurrency = Concurrency()
        self.cache = ResponseCache()
        # Plain-HTTP upstreams: the lean client (docs/benchmarks.md); https ones: aiohttp.
        self.lean = UpstreamClient(
            max_idle=settings.upstream_max_connections,
            max_connections=settings.upstream_max_connections,
            max_response_bytes=settings.upstream_max_response_bytes,
        )
        self.sessions = SessionCache()
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # aiohttp, not httpx, for upstream calls: measured 5.1k vs 0.3k requests/s (docs/benchmarks.md).
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,  # no total cap (aiohttp's default is 100 for all hosts together): the cap is per endpoint
                limit_per_host=self.settings.upstream_max_connections,
                keepalive_timeout=30,
                ttl_dns_cache=30,
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        await self.lean.close()
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
            out = await self._route(request, table, operation_type, app_id, workspace_id, trace_id, traceparent, rest)
        except Exception:
            log.exception("request failed inside the gateway")
            out = _result(codes.INTERNAL_ERROR, trace_id, rest=rest)
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

    async def _route(
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
        if table is EMPTY:
            return _result(codes.GATEWAY_NOT_READY, trace_id, rest=rest)
        headers = request.headers
        if len(headers) != len(headers.items()):  # a name repeats (rare: checked only then)
            twice = headers.repeated()
            doubled = sorted(twice & _SINGLE_VALUED)
            if table.session is not None and table.session.header in twice:
                doubled.append(table.session.header)
            if doubled:
                memo = f"{codes.DUPLICATE_HEADER.memo}: {', '.join(doubled)}"
                return _result(codes.DUPLICATE_HEADER, trace_id, rest=rest, memo=memo)
        if not op:
            return _result(codes.OPERATION_TYPE_MISSING, trace_id, rest=rest)
        api = table.apis.get(op)
        if api is None:
            return _result(codes.OPERATION_TYPE_UNKNOWN, trace_id, rest=rest)
        app = table.apps.get((app_id, workspace_id))
        if app is None:  # never an app it does not know, also when it knows none (spec.apps empty)
            return _result(codes.UNKNOWN_APP, trace_id, rest=rest)
        if api.allowed_apps and app_id not in api.allowed_apps:
            return _result(codes.ACCESS_DENIED, trace_id, rest=rest)
        if not api.online:
            return _result(codes.API_OFFLINE, trace_id, rest=rest)
        declared = headers.get("content-length")
        if declared is not None:
            size = parse_uint(declared)  # the server checked it (ASCII digits); other servers may not
            if size is None or size > table.max_body_bytes:
                return _result(codes.REQUEST_TOO_LARGE, trace_id, rest=rest)
        request.mark("route")
        limit = table.max_body_bytes
        read = request.whole_body(limit) if request.complete else await request.body(limit)
        if read is None:
            return _result(codes.REQUEST_TOO_LARGE, trace_id, rest=rest)
        body = read
        request.mark("read body")
        if app.algorithm and not request.trusted:
            refused = await self._verify(request, app, op, body)  # covers the body as sent (sealed or not)
            if refused is not None:
                return _result(refused, trace_id, rest=rest)
            request.mark("signature")
        session_key = None
        if app.encryption != "Disabled":
            opened = self._open(request, app, op, body)
            if isinstance(opened, ResultCode):
                return _result(opened, trace_id, rest=rest)
            session_key, body = opened
            request.mark("decrypt")
        if body:
            ctype = headers.get("content-type", "")
            try:
                bodycheck.check(ctype, body)
            except ValueError as e:
                return _result(codes.MALFORMED_BODY, trace_id, rest=rest, memo=f"body is not valid {ctype}: {e}")
            except RecursionError:  # the checks are bounded; should one not be, the answer is still 3004
                return _result(codes.MALFORMED_BODY, trace_id, rest=rest, memo=f"body is not valid {ctype}")
        if api.rate_limit and not await self.hot.take_tokens(
            f"rl:{table.gateway}:api:{op}", rate=api.rate_limit[0], burst=api.rate_limit[1]
        ):
            RATE_LIMITED.labels("api").inc()
            return _result(codes.RATE_LIMITED, trace_id, rest=rest, memo=f"rate limit of {op} reached")
        if app.rate_limit and not await self.hot.take_tokens(
            f"rl:{table.gateway}:app:{app_id}:{workspace_id}", rate=app.rate_limit[0], burst=app.rate_limit[1]
        ):
            RATE_LIMITED.labels("app").inc()
            return _result(codes.RATE_LIMITED, trace_id, rest=rest, memo=f"rate limit of app {app_id} reached")
        request.mark("rate limits")
        extra: dict[str, str] = {}
        if api.auth_required:
            login = await self._check_login(request, table)
            if isinstance(login, ResultCode):
                return _result(login, trace_id, rest=rest)
            if login:
                extra["x-user-id"] = login
            request.mark("login")
        cache_key = None
        if api.cache is not None:
            # Per user on login-required APIs, per credentials (Authorization, Cookie, the session header) always;
            # the REST path's query string is part of the request too.
            session_header = table.session.header if table.session is not None else ""
            scope_ = "\n".join(
                (
                    extra.get("x-user-id", ""),
                    request.method if rest else "",
                    request.query if rest else "",
                    credentials(headers, session_header),
                )
            )
            cache_key = ResponseCache.key(op, app_id, workspace_id, api.cache[1], body, scope_)
        cached = self.cache.get(cache_key) if cache_key is not None else None
        if api.mock is not None:
            request_json = bodycheck.load_json(body) if body else None  # bounded, whatever the Content-Type
            out = Outcome(
                codes.SUCCESS.code,
                api.mock.status if rest else 200,
                {"Result-Status": "1000", "Memo": "mock", "Mgw-TraceId": trace_id, "Content-Type": "application/json"},
                api.mock.render(request_json, request.headers),
                "_mock",
            )
        elif cached is not None:
            out = Outcome(
                codes.SUCCESS.code,
                cached.status,
                {
                    **dict(cached.headers),
                    "Result-Status": "1000",
                    "Memo": "success (cached)",
                    "Mgw-TraceId": trace_id,
                    "Content-Type": cached.content_type,
                    "ETag": cached.etag,
                },
                cached.body,
                "_cache",
            )
        else:
            upstream = self._choose_upstream(request, table, api, op, app_id, workspace_id)
            out = await self._forward(
                request, table, api, upstream, body, trace_id, traceparent, rest, extra, (app_id, workspace_id)
            )
            if cache_key is not None and api.cache is not None and out.code == codes.SUCCESS.code and storable(out):
                item = self.cache.put(
                    cache_key, api.cache[0], out.status, out.headers.get("Content-Type", ""), out.body, kept(out)
                )
                out.headers["ETag"] = item.etag
        request.mark(out.upstream or "answer")
        etag_ = out.headers.get("ETag")
        if etag_ and request.headers.get("if-none-match") == etag_:
            out.status, out.body = 304, b""
        if session_key is not None and out.body:
            out.headers["Mgw-Content-Type"] = out.headers.get("Content-Type", "")
            out.headers["Content-Type"] = "application/octet-stream"
            out.headers["Mgw-Encrypted"] = "1"
            out.body = envelope.seal(app.cipher, session_key, out.body, envelope.aad(app.app_id, op))
            request.mark("seal")
        return out

    @staticmethod
    def _open(request: Incoming, app: CompiledApp, op: str, body: bytes) -> ResultCode | tuple[bytes | None, bytes]:
        """(session key, plaintext) of a sealed body; (None, body) for a plain one the app may send."""
        wrap, wrapped = request.headers.get("mgw-key-type"), request.headers.get("mgw-key")
        if not wrap or not wrapped:
            return codes.ENCRYPTION_REQUIRED if app.encryption == "Required" else (None, body)
        chain = app.unwrappers.get(wrap)
        if not chain:
            return codes.DECRYPTION_FAILED
        try:
            wrapped_key = base64.b64decode(wrapped, validate=True)
        except ValueError:
            return codes.DECRYPTION_FAILED
        now = time.time()
        for unwrap, until in chain:  # the current gateway key, then previous ones inside their overlap
            if until is not None and until <= now:
                continue
            try:
                key = unwrap(wrapped_key)
                return key, envelope.open_sealed(app.cipher, key, body, envelope.aad(app.app_id, op))
            except Exception:  # wrong key or tampered body: try the next key, then answer the same way
                continue
        return codes.DECRYPTION_FAILED

    async def _check_login(self, request: Incoming, table: RouteTable) -> ResultCode | str:
        """The user id of a valid session (may be ""), or the code to answer with."""
        session = table.session
        if session is None:  # the CRD requires sessionValidation for authRequired APIs
            return codes.LOGIN_REQUIRED
        token = request.headers.get(session.header)
        if not token:
            return codes.LOGIN_REQUIRED
        known = self.sessions.get(token)
        if known is not None:
            return known
        upstream = table.upstreams.get(session.upstream)
        if upstream is not None:
            upstream = table.member(upstream)
        url = upstream.pick() if upstream is not None else None
        if upstream is None or url is None or self.http is None:
            return codes.UPSTREAM_UNAVAILABLE
        asked = time.perf_counter()
        try:
            async with self.http.post(
                url + session.path,
                headers={session.header: token},
                timeout=aiohttp.ClientTimeout(total=upstream.timeout_seconds),
            ) as resp:
                status, user = resp.status, resp.headers.get("uid", "")
        except TimeoutError:
            return codes.UPSTREAM_TIMEOUT
        except aiohttp.ClientError:
            return codes.UPSTREAM_UNAVAILABLE
        finally:
            request.waited += time.perf_counter() - asked
        if 200 <= status < 300:
            self.sessions.put(token, user, session.cache_seconds)
            return user
        if status in (401, 403, 404):
            return codes.LOGIN_REQUIRED
        return codes.UPSTREAM_ERROR

    async def _verify(self, request: Incoming, app: CompiledApp, op: str, body: bytes) -> ResultCode | None:
        h = request.headers
        sign = h.get("sign")
        if not sign:
            return codes.SIGNATURE_MISSING
        ts = h.get("ts", "")
        ts_ms = parse_uint(ts, 15)  # epoch milliseconds: 13 digits until the year 2286
        if ts_ms is None:
            return codes.TIMESTAMP_MISSING
        now = time.time()
        if abs(now * 1000 - ts_ms) > app.timestamp_window_ms:
            return codes.TIMESTAMP_EXPIRED
        nonce = h.get("nonce", "")
        if app.require_nonce and not nonce:
            return codes.NONCE_MISSING
        if not app.verifiers:
            return codes.KEY_UNAVAILABLE
        try:
            signature = base64.b64decode(sign, validate=True)
        except (binascii.Error, ValueError):
            return codes.SIGNATURE_INVALID
        message = canonical(
            request.method, request.path, request.query, op, app.app_id, app.workspace_id, ts, nonce, body
        )
        if not any(verify(signature, message) for verify, until in app.verifiers if until is None or until > now):
            return codes.SIGNATURE_INVALID
        if nonce:
            # Remember the nonce as long as its timestamp could still pass the window check.
            # A long nonce (a client chooses its length, up to the head limit) is kept as its digest, so every
            # stored key, in Redis and in the outage memory, has a bounded size.
            if len(nonce) > _NONCE_KEPT_AS_IS:
                nonce = "#" + hashlib.sha256(nonce.encode("latin-1", "replace")).hexdigest()
            key = f"nonce:{app.app_id}:{app.workspace_id}:{nonce}"
            if not await self.hot.set_if_absent(key, b"1", ttl_seconds=2 * app.timestamp_window_ms / 1000):
                return codes.NONCE_REPLAYED
        return None

    def _choose_upstream(
        self, request: Incoming, table: RouteTable, api: CompiledApi, op: str, app_id: str, workspace_id: str
    ) -> CompiledUpstream:
        canary = api.canary
        if canary is None:
            return api.upstream
        h = request.headers
        device = h.get("did") or request.client_ip
        hit = True
        if canary.rule is not None:
            attrs = {attr: h.get(name, "") for attr, name in _ATTRIBUTE_HEADERS.items()}
            attrs.update(APP_ID=app_id, WORKSPACE_ID=workspace_id, CLIENT_IP=request.client_ip)
            hit = canary.rule(attrs)
        if hit and canary.percent is not None:
            hit = percent_of(device, canary.percent, salt=op)
        return table.upstreams[canary.upstream] if hit else api.upstream

    async def _forward(
        self,
        request: Incoming,
        table: RouteTable,
        api: CompiledApi,
        upstream: CompiledUpstream,
        body: bytes,
        trace_id: str,
        traceparent: str,
        rest: bool,
        extra_headers: dict[str, str] | None = None,
        identity: tuple[str, str] = ("", ""),  # (AppId, WorkspaceId) as the gateway checked them
    ) -> Outcome:
        assert self.http is not None
        headers = request.headers
        # Pairs, not a dict: names that repeat (cookie) reach the upstream as sent.
        out_headers = [pair for pair in headers.items() if pair[0] not in _NOT_FORWARDED]
        for src, dst in api.header_mappings:
            value = headers.get(src)
            name = dst.lower()
            if value is not None and name not in _NOT_FORWARDED:
                out_headers = [pair for pair in out_headers if pair[0] != name]
                out_headers.append((name, value))
        # Who calls and what, as the gateway checked it (the client's own copies were dropped above).
        app_id, workspace_id = identity
        if app_id:
            out_headers.append(("appid", app_id))
        if workspace_id:
            out_headers.append(("workspaceid", workspace_id))
        out_headers.append(("operation-type", api.operation_type))
        if extra_headers:
            out_headers.extend(extra_headers.items())
        out_headers.append(("mgw-traceid", trace_id))
        out_headers.append(("traceparent", traceparent))
        client_ip = request.client_ip
        prior = headers.get("x-forwarded-for")
        out_headers.append(("x-forwarded-for", f"{prior}, {client_ip}" if prior else client_ip))
        params = (request.query or None) if rest else None
        idempotent = api.method in IDEMPOTENT
        tried: set[str] = set()
        # A group's member by weight; when it (or a plain upstream) cannot take the request, `others` in turn.
        first, upstream = upstream, table.member(upstream)
        others: list[CompiledUpstream] | None = None
        last: ResultCode = codes.UPSTREAM_UNAVAILABLE
        attempt = 0
        while attempt <= api.retries:
            url = self._admit(upstream, tried)
            if url is None:
                # This cluster cannot take the request: the first sibling cluster (or failover upstream) that can.
                if others is None:
                    others = table.alternatives(first, upstream)
                while others and url is None:
                    candidate = others.pop(0)
                    url = self._admit(candidate, set())
                    if url is not None:
                        upstream, tried = candidate, set()
            if url is None:
                # None can: this cluster once more if all it lacks is an untried endpoint, else the reason it cannot.
                url = self._admit(upstream, set())
                if url is None:
                    ejected, too_many = self._ejected(upstream)
                    blocked = too_many or upstream.pick(ejected) is None
                    return _result(codes.CIRCUIT_OPEN if blocked else codes.OVERLOADED, trace_id, rest=rest)
            limited = upstream.max_concurrency is not None
            attempt += 1
            tried.add(url)
            failure, retry = "", False
            asked = time.perf_counter()
            try:
                resp = await self._call(api, url, body, out_headers, params)
            except TimeoutError:
                failure, last, retry = "timeout", codes.UPSTREAM_TIMEOUT, idempotent
            except EndpointBusy as e:
                # This replica's own connection limit, not the endpoint failing: another endpoint may take it.
                log.warning("upstream %s endpoint %s: %s", upstream.name, url, e)
                failure, last, retry = "busy", codes.OVERLOADED, True
            except ResponseTooLarge as e:
                log.warning("upstream %s endpoint %s: %s", upstream.name, url, e)
                failure, last, retry = "too_large", codes.UPSTREAM_RESPONSE_TOO_LARGE, False
            except (aiohttp.ClientConnectorError, ConnectFailed) as e:
                # The connection was never made: safe to retry whatever the method.
                log.warning("upstream %s endpoint %s unreachable: %s", upstream.name, url, e)
                failure, last, retry = "connect", codes.UPSTREAM_UNAVAILABLE, True
            except (aiohttp.ClientError, UpstreamBroken) as e:
                # The request may have reached the upstream: retry only what is idempotent.
                log.warning("upstream %s endpoint %s failed: %s", upstream.name, url, e)
                failure, last, retry = "broken", codes.UPSTREAM_UNAVAILABLE, idempotent
            finally:
                request.waited += time.perf_counter() - asked
                if limited:
                    self.concurrency.leave(upstream.name)
            if failure:
                if failure in ("busy", "too_large"):  # the endpoint answers; the breaker is not told
                    UPSTREAM_ERRORS.labels(upstream.name, failure).inc()
                else:
                    self._failed(upstream, url, failure)
                if retry:
                    continue
                break
            if resp.status >= 500:
                self._failed(upstream, url, f"http_{resp.status // 100}xx")
                if idempotent and attempt <= api.retries:
                    continue
            else:
                self.breakers.record(upstream.name, url, upstream.breaker, failed=False)
            return self._relay(resp, trace_id, rest, upstream.name)
        out = _result(last, trace_id, rest=rest)
        out.upstream = upstream.name
        return out

    def _ejected(self, upstream: CompiledUpstream) -> tuple[set[str] | frozenset[str], bool]:
        """Its ejected endpoints, and whether they are too many to use the rest (fail fast instead)."""
        ejected = self.breakers.ejected(upstream.name, upstream.base_urls)
        too_many = (
            upstream.breaker is not None
            and bool(ejected)
            and len(ejected) * 100 > upstream.breaker.max_ejection_percent * len(upstream.base_urls)
        )
        return ejected, too_many

    def _admit(self, upstream: CompiledUpstream, tried: set[str]) -> str | None:
        """An endpoint of `upstream` to call now, with a concurrency slot taken; None if it has none to offer
        (too many ejected, every endpoint tried, or its concurrency limit reached)."""
        ejected, too_many = self._ejected(upstream)
        if too_many:
            return None
        url = upstream.pick(ejected | tried) if ejected or tried else upstream.pick()
        if url is None or upstream.max_concurrency is None:
            return url
        return url if self.concurrency.enter(upstream.name, upstream.max_concurrency) else None

    def _failed(self, upstream: CompiledUpstream, url: str, kind: str) -> None:
        UPSTREAM_ERRORS.labels(upstream.name, kind).inc()
        self.breakers.record(upstream.name, url, upstream.breaker, failed=True)

    async def _call(
        self, api: CompiledApi, base: str, body: bytes, headers: list[tuple[str, str]], params: str | None
    ) -> UpstreamResponse:
        if base.startswith("http://"):
            return await self.lean.request(
                api.method,
                base,
                api.path,
                body=body,
                headers=headers,
                query=params,
                timeout=api.timeout_seconds,
                idempotent=api.method in IDEMPOTENT,
            )
        assert self.http is not None  # https upstreams go through aiohttp (TLS)
        async with self.http.request(
            api.method,
            base + api.path,
            data=body,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=api.timeout_seconds),
            allow_redirects=False,
        ) as resp:
            limit = self.settings.upstream_max_response_bytes
            if (resp.content_length or 0) > limit:
                raise ResponseTooLarge(f"the answer declares {resp.content_length} bytes, over {limit}")
            parts, size = [], 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLarge(f"the answer is over {limit} bytes")
                parts.append(chunk)
            # As the lean client keeps them: lower-case names, repeated ones joined with ", ", Set-Cookie apart.
            got: dict[str, str] = {}
            cookies: list[str] = []
            for name, value in resp.headers.items():
                key, text = name.lower(), _latin1(value)
                if key == "set-cookie":
                    cookies.append(text)
                else:
                    got[key] = f"{got[key]}, {text}" if key in got else text
            return UpstreamResponse(resp.status, got, b"".join(parts), cookies or None)

    @staticmethod
    def _relay(resp: UpstreamResponse, trace_id: str, rest: bool, upstream: str) -> Outcome:
        headers = {"Mgw-TraceId": trace_id}
        ctype = resp.headers.get("content-type")
        if ctype:
            headers["Content-Type"] = _latin1(ctype)
        for name, value in resp.headers.items():  # lower-case names, Latin-1 values (see _call)
            out_name = _RELAYED.get(name)
            if out_name is not None:
                headers[out_name] = value
            elif name.startswith("x-") and name not in _RESERVED_X:
                headers[name] = value
        if "tips" in resp.headers:  # text for the user, whatever the outcome
            headers["Tips"] = _latin1(resp.headers["tips"])
        # Set-Cookie lines pass through, every one (the only upstream header whose name repeats).
        more = [("Set-Cookie", c) for c in resp.cookies] if resp.cookies else None
        business = parse_uint(resp.headers.get("result-status", ""), 4)
        if business is not None and business in codes.BUSINESS_CODES:
            headers["Result-Status"] = str(business)
            headers["Memo"] = _latin1(resp.headers.get("memo", ""))
            status = 200 if not rest else resp.status
            return Outcome(business, status, headers, resp.content, upstream, more)
        if resp.status >= 400:
            code = codes.UPSTREAM_ERROR
            headers.update({"Result-Status": str(code.code), "Memo": f"{code.memo} (HTTP {resp.status})"})
            status = code.http_status if rest else 200
            return Outcome(code.code, status, headers, resp.content, upstream, more)
        headers.update({"Result-Status": str(codes.SUCCESS.code), "Memo": codes.SUCCESS.memo})
        status = resp.status if rest else 200
        return Outcome(codes.SUCCESS.code, status, headers, resp.content, upstream, more)


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
