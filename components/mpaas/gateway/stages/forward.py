"""Stage `forward` — `spec.upstreams[]` (endpoints, serviceRef, clusters, failoverUpstream, maxConcurrency,
circuitBreaker, timeoutMilliseconds) and the calling fields of `spec.apis[]` (path, method, timeoutMilliseconds,
retries, headerMappings): send the request to an upstream endpoint and relay its answer.

An endpoint is picked by weight among those not ejected by the circuit breaker and not tried yet; a cluster
group picks a member upstream first. When the chosen upstream cannot take the request (every endpoint ejected,
its concurrency limit reached), its sibling clusters and then its failover upstream are tried. Connection
failures are retried on another endpoint for any method; other failures only for idempotent methods, up to
`retries`. The upstream learns who calls from what the gateway checked, never from the client's own headers.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Set
from dataclasses import dataclass, field

import aiohttp
from prometheus_client import Counter, Gauge

from ...api.gateway import DEFAULT_TIMEOUT_MS, CircuitBreaker, GatewayApi, Upstream
from ...http1 import Request
from ...rules import parse_uint
from .. import codes
from ..codes import ResultCode
from ..outcome import Outcome, latin1, result
from ..upstream_http import ConnectFailed, EndpointBusy, ResponseTooLarge, UpstreamBroken, UpstreamClient
from ..upstream_http import Response as UpstreamResponse

IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD", "OPTIONS"})

log = logging.getLogger("mpaas.gateway")

UPSTREAM_ERRORS = Counter("mpaas_gateway_upstream_errors_total", "Upstream failures", ["upstream", "kind"])
# With several workers each keeps its own breakers: the pod reports an endpoint ejected when any worker has.
ENDPOINT_EJECTED = Gauge(
    "mpaas_gateway_endpoint_ejected",
    "1 while an endpoint is ejected",
    ["upstream", "endpoint"],
    multiprocess_mode="livemax",
)
EJECTIONS = Counter("mpaas_gateway_endpoint_ejections_total", "Endpoint ejections", ["upstream"])


# ---- compiled config ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledUpstream:
    name: str
    base_urls: tuple[str, ...]
    cumulative_weights: tuple[int, ...]
    timeout_seconds: float
    max_concurrency: int | None = None
    circuit_breaker: CircuitBreaker | None = None
    failover: str | None = None
    # A cluster group: the member upstreams' names (no endpoints of its own); weights in cumulative_weights.
    members: tuple[str, ...] = ()

    def pick(self, exclude: frozenset[str] | set[str] = frozenset()) -> str | None:
        """A weighted random endpoint not in `exclude` (ejected or already tried)."""
        return _weighted_pick(self.base_urls, self.cumulative_weights, exclude)


@dataclass(frozen=True)
class Forward:
    """How one API calls its upstream."""

    upstream: CompiledUpstream
    path: str
    method: str
    timeout_seconds: float
    retries: int = 0
    header_mappings: tuple[tuple[str, str], ...] = ()  # (lower-case request header, name sent upstream)


def upstream_from_spec(u: Upstream, namespace: str) -> CompiledUpstream:
    if u.clusters:
        # All weights 0 only gets past the CRD's rule in directory mode: then share alike.
        weights = [c.weight for c in u.clusters] if any(c.weight for c in u.clusters) else [1] * len(u.clusters)
        return CompiledUpstream(
            name=u.name,
            base_urls=(),
            cumulative_weights=tuple(itertools.accumulate(weights)),
            timeout_seconds=u.timeout_milliseconds / 1000,
            failover=u.failover_upstream,
            members=tuple(c.upstream for c in u.clusters),
        )
    if u.service_ref is not None:
        ref = u.service_ref
        urls: list[str] = [f"{ref.scheme}://{ref.name}.{ref.namespace or namespace}.svc:{ref.port}"]
        weights = [1]
    else:
        live = [e for e in u.endpoints if e.weight > 0] or u.endpoints
        urls = [e.url.rstrip("/") for e in live]
        weights = [max(e.weight, 1) for e in live]
    return CompiledUpstream(
        name=u.name,
        base_urls=tuple(urls),
        cumulative_weights=tuple(itertools.accumulate(weights)),
        timeout_seconds=u.timeout_milliseconds / 1000,
        max_concurrency=u.max_concurrency,
        circuit_breaker=u.circuit_breaker,
        failover=u.failover_upstream,
    )


def from_spec(a: GatewayApi, upstreams: dict[str, CompiledUpstream]) -> Forward:
    up = upstreams.get(a.upstream)
    if up is None:  # the CRD's CEL rule rejects this; directory mode has no such guard
        raise ValueError(f"api {a.operation_type!r} names unknown upstream {a.upstream!r}")
    timeout_ms = a.timeout_milliseconds or (up.timeout_seconds * 1000) or DEFAULT_TIMEOUT_MS
    return Forward(
        upstream=up,
        path=a.path,
        method=a.method,
        timeout_seconds=timeout_ms / 1000,
        retries=a.retries,
        # Request header names are kept lower-case (http1.Headers): match any spelling.
        header_mappings=tuple((m.from_.lower(), m.to) for m in a.header_mappings),
    )


def _weighted_pick(items: tuple[str, ...], cumulative: tuple[int, ...], exclude: Set[str] = frozenset()) -> str | None:
    """One of `items` at random by weight (given as running sums), leaving out `exclude`; None if none is left."""
    if not exclude:
        if len(items) == 1:
            return items[0]
        return items[bisect.bisect_right(cumulative, random.random() * cumulative[-1])]
    weights, prev = [], 0
    for item, cum in zip(items, cumulative, strict=True):
        weights.append(0 if item in exclude else cum - prev)
        prev = cum
    if not any(weights):
        return None
    return random.choices(items, weights)[0]


def _weighted_order(items: tuple[str, ...], cumulative: tuple[int, ...]) -> list[str]:
    """All of `items` in a random order where heavier ones tend to come first; weight-0 (standby) ones last."""
    keyed, standby, prev = [], [], 0
    for item, cum in zip(items, cumulative, strict=True):
        weight, prev = cum - prev, cum
        if weight > 0:
            keyed.append((random.random() ** (1 / weight), item))  # Efraimidis-Spirakis weighted sampling
        else:
            standby.append(item)
    return [item for _, item in sorted(keyed, reverse=True)] + standby


def member(upstreams: dict[str, CompiledUpstream], upstream: CompiledUpstream) -> CompiledUpstream:
    """The upstream that serves a request sent to `upstream`: itself, or for a group a member by weight."""
    if not upstream.members:
        return upstream
    name = _weighted_pick(upstream.members, upstream.cumulative_weights)
    return upstreams[name] if name is not None else upstream


def alternatives(
    upstreams: dict[str, CompiledUpstream], first: CompiledUpstream, used: CompiledUpstream
) -> list[CompiledUpstream]:
    """Who takes a request sent to `first` that `used` cannot take, in the order to try them: the other
    members of the group `first` (by weight, standbys last), then `first`'s failoverUpstream."""
    out: list[CompiledUpstream] = []
    seen = {used.name}
    fallback = upstreams.get(first.failover) if first.failover else None
    for u in (first, fallback):
        if u is None:
            continue
        for name in _weighted_order(u.members, u.cumulative_weights) if u.members else [u.name]:
            candidate = upstreams.get(name)
            if candidate is not None and name not in seen and not candidate.members:
                seen.add(name)
                out.append(candidate)
    return out


# ---- runtime protection that outlives config swaps ------------------------------------------------------------
# Keyed by names (upstream, endpoint URL), so an edited resource keeps its counters and an ejected endpoint stays
# ejected.

_NONE: frozenset[str] = frozenset()


class Concurrency:
    """In-flight requests per upstream, against its `maxConcurrency`."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}

    def enter(self, upstream: str, limit: int | None) -> bool:
        n = self.in_flight.get(upstream, 0)
        if limit is not None and n >= limit:
            return False
        self.in_flight[upstream] = n + 1
        return True

    def leave(self, upstream: str) -> None:
        self.in_flight[upstream] = self.in_flight.get(upstream, 1) - 1


@dataclass
class _Window:
    """Per-second buckets of (requests, failures) over the breaker's window."""

    seconds: int
    buckets: deque[list[int]] = field(default_factory=deque)  # [second, total, failed]

    def add(self, failed: bool, now: float) -> tuple[int, int]:
        sec = int(now)
        while self.buckets and self.buckets[0][0] <= sec - self.seconds:
            self.buckets.popleft()
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0, 0])
        self.buckets[-1][1] += 1
        self.buckets[-1][2] += int(failed)
        return sum(b[1] for b in self.buckets), sum(b[2] for b in self.buckets)


class CircuitBreakers:
    """`circuitBreaker`, Xiaomi-style outlier ejection: an endpoint whose failure share in the window passes the
    threshold (with at least `minimumRequests`) is ejected for `ejectionSeconds`."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], _Window] = {}
        self._ejected: dict[tuple[str, str], float] = {}  # -> until (monotonic)

    def ejected(self, upstream: str, urls: tuple[str, ...]) -> set[str] | frozenset[str]:
        if not self._ejected:
            return _NONE
        now = time.monotonic()
        out = set()
        for url in urls:
            until = self._ejected.get((upstream, url))
            if until is None:
                continue
            if until > now:
                out.add(url)
            else:  # cool-down over: back in rotation with a fresh window
                del self._ejected[(upstream, url)]
                self._windows.pop((upstream, url), None)
                ENDPOINT_EJECTED.labels(upstream, url).set(0)
        return out

    def record(self, upstream: str, url: str, cfg: CircuitBreaker | None, failed: bool) -> None:
        if cfg is None:
            return
        key = (upstream, url)
        window = self._windows.get(key)
        if window is None or window.seconds != cfg.window_seconds:
            window = self._windows[key] = _Window(cfg.window_seconds)
        total, failures = window.add(failed, time.time())
        if failed and total >= cfg.minimum_requests and failures * 100 >= cfg.error_threshold_percent * total:
            self._ejected[key] = time.monotonic() + cfg.ejection_seconds
            self._windows.pop(key, None)
            ENDPOINT_EJECTED.labels(upstream, url).set(1)
            EJECTIONS.labels(upstream).inc()
            log.warning(
                "ejected %s of upstream %s for %ss: %d of %d requests failed",
                url,
                upstream,
                cfg.ejection_seconds,
                failures,
                total,
            )


# ---- headers ------------------------------------------------------------------------------------------------

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


# ---- the stage ----------------------------------------------------------------------------------------------


class Forwarder:
    """Calls upstreams: plain-HTTP ones through the lean client (docs/benchmarks.md), https ones through aiohttp."""

    def __init__(self, max_connections: int, max_response_bytes: int):
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self.breakers = CircuitBreakers()
        self.concurrency = Concurrency()
        self.lean = UpstreamClient(
            max_idle=max_connections, max_connections=max_connections, max_response_bytes=max_response_bytes
        )
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # aiohttp, not httpx, for https upstream calls: measured 5.1k vs 0.3k requests/s (docs/benchmarks.md).
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,  # no total cap (aiohttp's default is 100 for all hosts together): the cap is per endpoint
                limit_per_host=self.max_connections,
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

    async def forward(
        self,
        request: Request,
        upstreams: dict[str, CompiledUpstream],
        fwd: Forward,
        operation_type: str,
        upstream: CompiledUpstream,
        body: bytes,
        trace_id: str,
        traceparent: str,
        rest: bool,
        extra_headers: dict[str, str] | None = None,
        identity: tuple[str, str] = ("", ""),  # (AppId, WorkspaceId) as the gateway checked them
    ) -> Outcome:
        headers = request.headers
        # Pairs, not a dict: names that repeat (cookie) reach the upstream as sent.
        out_headers = [pair for pair in headers.items() if pair[0] not in _NOT_FORWARDED]
        for src, dst in fwd.header_mappings:
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
        out_headers.append(("operation-type", operation_type))
        if extra_headers:
            out_headers.extend(extra_headers.items())
        out_headers.append(("mgw-traceid", trace_id))
        out_headers.append(("traceparent", traceparent))
        client_ip = request.client_ip
        prior = headers.get("x-forwarded-for")
        out_headers.append(("x-forwarded-for", f"{prior}, {client_ip}" if prior else client_ip))
        params = (request.query or None) if rest else None
        idempotent = fwd.method in IDEMPOTENT
        tried: set[str] = set()
        # A group's member by weight; when it (or a plain upstream) cannot take the request, `others` in turn.
        first, upstream = upstream, member(upstreams, upstream)
        others: list[CompiledUpstream] | None = None
        last: ResultCode = codes.UPSTREAM_UNAVAILABLE
        attempt = 0
        while attempt <= fwd.retries:
            url = self._admit(upstream, tried)
            if url is None:
                # This cluster cannot take the request: the first sibling cluster (or failover upstream) that can.
                if others is None:
                    others = alternatives(upstreams, first, upstream)
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
                    return result(codes.CIRCUIT_OPEN if blocked else codes.OVERLOADED, trace_id, rest=rest)
            limited = upstream.max_concurrency is not None
            attempt += 1
            tried.add(url)
            failure, retry = "", False
            asked = time.perf_counter()
            try:
                resp = await self._call(fwd, url, body, out_headers, params)
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
                if idempotent and attempt <= fwd.retries:
                    continue
            else:
                self.breakers.record(upstream.name, url, upstream.circuit_breaker, failed=False)
            return relay(resp, trace_id, rest, upstream.name)
        out = result(last, trace_id, rest=rest)
        out.upstream = upstream.name
        return out

    def _ejected(self, upstream: CompiledUpstream) -> tuple[set[str] | frozenset[str], bool]:
        """Its ejected endpoints, and whether they are too many to use the rest (fail fast instead)."""
        ejected = self.breakers.ejected(upstream.name, upstream.base_urls)
        breaker = upstream.circuit_breaker
        too_many = (
            breaker is not None
            and bool(ejected)
            and len(ejected) * 100 > breaker.max_ejection_percent * len(upstream.base_urls)
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
        self.breakers.record(upstream.name, url, upstream.circuit_breaker, failed=True)

    async def _call(
        self, fwd: Forward, base: str, body: bytes, headers: list[tuple[str, str]], params: str | None
    ) -> UpstreamResponse:
        if base.startswith("http://"):
            return await self.lean.request(
                fwd.method,
                base,
                fwd.path,
                body=body,
                headers=headers,
                query=params,
                timeout=fwd.timeout_seconds,
                idempotent=fwd.method in IDEMPOTENT,
            )
        assert self.http is not None  # https upstreams go through aiohttp (TLS)
        async with self.http.request(
            fwd.method,
            base + fwd.path,
            data=body,
            headers=headers,
            params=params,
            timeout=aiohttp.ClientTimeout(total=fwd.timeout_seconds),
            allow_redirects=False,
        ) as resp:
            limit = self.max_response_bytes
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
                key, text = name.lower(), latin1(value)
                if key == "set-cookie":
                    cookies.append(text)
                else:
                    got[key] = f"{got[key]}, {text}" if key in got else text
            return UpstreamResponse(resp.status, got, b"".join(parts), cookies or None)


def relay(resp: UpstreamResponse, trace_id: str, rest: bool, upstream: str) -> Outcome:
    """The client's answer from the upstream's: its result code (a business code passes through), the
    headers passed on (docs/gateway.md), and the body as it came."""
    headers = {"Mgw-TraceId": trace_id}
    ctype = resp.headers.get("content-type")
    if ctype:
        headers["Content-Type"] = latin1(ctype)
    for name, value in resp.headers.items():  # lower-case names, Latin-1 values (see Forwarder._call)
        out_name = _RELAYED.get(name)
        if out_name is not None:
            headers[out_name] = value
        elif name.startswith("x-") and name not in _RESERVED_X:
            headers[name] = value
    if "tips" in resp.headers:  # text for the user, whatever the outcome
        headers["Tips"] = latin1(resp.headers["tips"])
    # Set-Cookie lines pass through, every one (the only upstream header whose name repeats).
    more = [("Set-Cookie", c) for c in resp.cookies] if resp.cookies else None
    business = parse_uint(resp.headers.get("result-status", ""), 4)
    if business is not None and business in codes.BUSINESS_CODES:
        headers["Result-Status"] = str(business)
        headers["Memo"] = latin1(resp.headers.get("memo", ""))
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
