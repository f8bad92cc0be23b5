"""Package downloads from a local-folder object store: signed, expiring URLs with GET and HEAD, one byte range
per request (206, resume), ETag, If-None-Match and If-Range (docs/delivery.md, "Downloads").

An S3 store's packages are not served here: clients get S3's own presigned URLs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl

from prometheus_client import Counter

from ..stores import LocalObjectStore

log = logging.getLogger("mpaas.delivery")

PACKAGES_PATH = "/v1/delivery/packages"
CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=([0-9]{0,15})-([0-9]{0,15})")

DOWNLOADS = Counter("mpaas_delivery_downloads_total", "Package download requests, by HTTP status", ["status"])
BYTES = Counter("mpaas_delivery_download_bytes_total", "Package bytes sent")

Send = Callable[[dict[str, Any]], Awaitable[None]]


def byte_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """The one range `header` asks for, as (first, last) inclusive; None to send the whole file (no header, or
    one this server does not take: several ranges, another unit); False when it cannot be satisfied (416)."""
    m = _RANGE.fullmatch(header.strip())
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


class Downloads:
    """GET and HEAD of `{PACKAGES_PATH}/{key}?expires=...&signature=...`, as presigned by `folder`."""

    def __init__(self, folder: LocalObjectStore):
        self.folder = folder
        self.prefix = folder.url_base + "/"

    def handles(self, path: str) -> bool:
        return path.startswith(self.prefix)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        try:
            status = await self._serve(scope, send)
        except (ConnectionError, OSError) as e:  # the client went away mid-file: nothing to answer
            log.debug("download cut: %r", e)
            status = 499
        DOWNLOADS.labels(str(status)).inc()

    async def _serve(self, scope: dict[str, Any], send: Send) -> int:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return await _plain(send, 405, b"GET or HEAD", [(b"allow", b"GET, HEAD")])
        key = scope["path"][len(self.prefix) :]
        try:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8))
        except ValueError:
            return await _plain(send, 400, b"query string")
        if not self.folder.verify(method, key, query):
            return await _plain(send, 403, b"this link is not valid, or it has expired")
        info = await self.folder.stat(key)
        if info is None:
            return await _plain(send, 404, b"no such package")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        etag = f'"{info.sha256}"' if info.sha256 else f'"{info.size:x}-{_mtime(self.folder.path(key))}"'
        common = [
            (b"etag", etag.encode()),
            (b"accept-ranges", b"bytes"),
            # The key names one package version for ever (content-addressed): caches may keep it.
            (b"cache-control", b"public, max-age=31536000, immutable"),
            (b"content-type", b"application/octet-stream"),
            (b"x-content-type-options", b"nosniff"),
        ]
        if _matches(headers.get("if-none-match", ""), etag):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return 304
        wanted = byte_range(headers["range"], info.size) if "range" in headers else None
        if wanted is not None and "if-range" in headers and headers["if-range"].strip() != etag:
            wanted = None  # the file changed since the client's first part: the whole file again
        if wanted is False:
            return await _plain(
                send, 416, b"range not satisfiable", [(b"content-range", f"bytes */{info.size}".encode())]
            )
        first, last = wanted if isinstance(wanted, tuple) else (0, info.size - 1)
        length = last - first + 1 if info.size else 0
        status = 206 if isinstance(wanted, tuple) else 200
        head = [*common, (b"content-length", str(length).encode())]
        if status == 206:
            head.append((b"content-range", f"bytes {first}-{last}/{info.size}".encode()))
        await send({"type": "http.response.start", "status": status, "headers": head})
        if method == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return status
        path = self.folder.path(key)
        f: BinaryIO = await asyncio.to_thread(path.open, "rb")
        try:
            await asyncio.to_thread(f.seek, first)
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
                if not chunk:  # the file shrank under us: the response cannot be completed
                    raise ConnectionError("package changed while being sent")
                left -= len(chunk)
                BYTES.inc(len(chunk))
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        finally:
            f.close()
        return status


def _mtime(path: Path) -> str:
    try:
        return f"{path.stat().st_mtime_ns:x}"
    except OSError:
        return "0"


def _matches(header: str, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


async def _plain(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> int:
    head = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
    return status
