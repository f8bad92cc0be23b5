"""Per-replica caches: API responses (with ETags) and validated login sessions."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..http1 import Headers
from . import bodycheck


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


def credentials(headers: Headers, session_header: str = "") -> str:
    """A digest of who the request speaks for (Authorization, every Cookie, the session header), "" without any:
    part of the cache key, so one caller's cached answer never reaches another."""
    parts = [
        f"{name}={value}"
        for name, value in headers.items()
        if name in _CREDENTIALS or (session_header and name == session_header)
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest() if parts else ""


_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class SessionCache:
    """Sessions the validation upstream accepted, remembered for `cacheSeconds`."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, token: str) -> str | None:
        """The user id of a remembered valid session ("" when the upstream named none)."""
        item = self._items.get(token)
        if item is None or item[0] <= time.monotonic():
            self._items.pop(token, None)
            return None
        return item[1]

    def put(self, token: str, user_id: str, seconds: int) -> None:
        if seconds <= 0:
            return
        self._items[token] = (time.monotonic() + seconds, user_id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
