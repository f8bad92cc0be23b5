"""Stage `cache` — `spec.apis[].cache` (ttlSeconds, keyFields): answer a repeated request from this replica's
memory, with an ETag (304 to a matching If-None-Match).

The key holds the API, the app, the chosen body fields (or the whole body), and who the request speaks for:
the logged-in user, Authorization, every Cookie and the session header; on /api/ also the method and query
string. Only successful answers that are not private, set no cookie and vary by nothing else are kept.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass

from ...api.gateway import ResponseCache as ResponseCacheSpec
from ...http1 import Headers, Request
from .. import bodycheck, codes
from ..outcome import Outcome


@dataclass(frozen=True)
class CachePolicy:
    ttl_seconds: int
    key_fields: tuple[str, ...]


def from_spec(spec: ResponseCacheSpec | None) -> CachePolicy | None:
    return CachePolicy(spec.ttl_seconds, tuple(spec.key_fields)) if spec is not None else None


@dataclass(frozen=True)
class Cached:
    expires: float
    etag: str
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # the upstream's headers passed on with the answer


class ResponseCache:
    """An LRU of successful responses, keyed by API, app and the request's key fields."""

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._items: OrderedDict[str, Cached] = OrderedDict()

    @staticmethod
    def key(
        operation_type: str,
        app_id: str,
        workspace_id: str,
        key_fields: tuple[str, ...],
        body: bytes,
        scope: str = "",
    ) -> str | None:
        """None when the request cannot be keyed (key fields asked for, body not a JSON object)."""
        if key_fields:
            data = bodycheck.load_json(body) if body else {}  # bounded: None when not JSON or too deep
            if not isinstance(data, dict):
                return None
            part = json.dumps([data.get(f) for f in key_fields], sort_keys=True, default=str)
        else:
            part = hashlib.sha256(body).hexdigest()
        return f"{operation_type}\n{app_id}\n{workspace_id}\n{scope}\n{part}"

    def get(self, key: str) -> Cached | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires <= time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item

    def put(
        self,
        key: str,
        ttl: int,
        status: int,
        content_type: str,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Cached:
        item = Cached(time.monotonic() + ttl, etag(body), status, content_type, body, headers)
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return item


_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def credentials(headers: Headers, session_header: str = "") -> str:
    """A digest of who the request speaks for (Authorization, every Cookie, the session header), "" without any:
    part of the cache key, so one caller's cached answer never reaches another."""
    parts = [
        f"{name}={value}"
        for name, value in headers.items()
        if name in _CREDENTIALS or (session_header and name == session_header)
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest() if parts else ""


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def key_for(
    policy: CachePolicy,
    request: Request,
    op: str,
    app_id: str,
    workspace_id: str,
    body: bytes,
    user_id: str,
    session_header: str,
    rest: bool,
) -> str | None:
    """The request's cache key; None when it cannot be keyed."""
    scope = "\n".join(
        (
            user_id,
            request.method if rest else "",
            request.query if rest else "",
            credentials(request.headers, session_header),
        )
    )
    return ResponseCache.key(op, app_id, workspace_id, policy.key_fields, body, scope)


def answer(cached: Cached, trace_id: str) -> Outcome:
    return Outcome(
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


# Headers of an answer the gateway sets per request; a cached answer keeps the others (those relayed).
_PER_REQUEST = frozenset({"Result-Status", "Memo", "Mgw-TraceId", "Content-Type", "ETag", "Tips"})


def storable(out: Outcome) -> bool:
    """Whether the response cache may keep an answer: not one that sets a cookie, says it is private, or varies
    by request headers the cache's key does not hold."""
    if out.code != codes.SUCCESS.code or out.more:  # Set-Cookie lines
        return False
    vary = out.headers.get("Vary")
    # Accept-Encoding aside: the client's never reaches the upstream (forward's hop headers), so answers cannot
    # vary by it.
    if vary and any(name.strip().lower() not in ("", "accept-encoding") for name in vary.split(",")):
        return False
    control = out.headers.get("Cache-Control")
    if control:
        directives = {d.split("=", 1)[0].strip().lower() for d in control.split(",")}
        if directives & {"private", "no-store", "no-cache"}:
            return False
    return True


def store(cache: ResponseCache, key: str, policy: CachePolicy, out: Outcome) -> None:
    """Keep a storable answer and give it its ETag."""
    if not storable(out):
        return
    kept = tuple((k, v) for k, v in out.headers.items() if k not in _PER_REQUEST)
    item = cache.put(key, policy.ttl_seconds, out.status, out.headers.get("Content-Type", ""), out.body, kept)
    out.headers["ETag"] = item.etag
