"""Package downloads from a local-folder object store: signed, expiring URLs with GET and HEAD, one byte range
per request (206, resume), ETag, If-None-Match and If-Range (docs/delivery.md, "Downloads").

An S3 store's packages are not served here: clients get S3's own presigned URLs.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl

from prometheus_client import Counter

from ..http1 import FileBody, Request
from ..stores import LocalObjectStore
from .answer import Answer

PACKAGES_PATH = "/v1/delivery/packages"
_RANGE = re.compile(r"(?i:bytes)=([0-9]{0,15})-([0-9]{0,15})")  # the unit without case (RFC 9110 14.1)

DOWNLOADS = Counter("mpaas_delivery_downloads_total", "Package download requests, by HTTP status", ["status"])
BYTES = Counter("mpaas_delivery_download_bytes_total", "Package bytes sent")


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

    async def __call__(self, req: Request) -> Answer:
        answer = await self._answer(req)
        DOWNLOADS.labels(str(answer.status)).inc()
        if answer.file is not None and req.method != "HEAD":
            BYTES.inc(answer.file.count)
        return answer

    async def _answer(self, req: Request) -> Answer:
        if req.method not in ("GET", "HEAD"):
            return _plain(405, "GET or HEAD", {"Allow": "GET, HEAD"})
        key = req.path[len(self.prefix) :]
        try:
            query = dict(parse_qsl(req.query, max_num_fields=8))
        except ValueError:
            return _plain(400, "query string")
        if not self.folder.verify(req.method, key, query):
            return _plain(403, "this link is not valid, or it has expired")
        path = self.folder.path(key)
        try:
            f: BinaryIO = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError):
            return _plain(404, "no such package")
        try:
            info = await self.folder.stat(key)
            size = os.fstat(f.fileno()).st_size  # of the file opened: what is sent, whatever replaces it later
            etag = f'"{info.sha256}"' if info is not None and info.sha256 else f'"{size:x}-{_mtime(path)}"'
            headers = {
                "ETag": etag,
                "Accept-Ranges": "bytes",
                # The key names one package version for ever (content-addressed): caches may keep it.
                "Cache-Control": "public, max-age=31536000, immutable",
                "Content-Type": "application/octet-stream",
                "X-Content-Type-Options": "nosniff",
            }
            repeated = req.headers.repeated()
            if _matches(req.headers.get("if-none-match", ""), etag):
                f.close()
                return Answer(304, headers)
            # A repeated Range or If-Range is malformed: ignored, as a Range this server does not take is.
            wanted = None
            if "range" in req.headers and not {"range", "if-range"} & repeated:
                wanted = byte_range(req.headers["range"], size)
                if wanted is not None and "if-range" in req.headers and req.headers["if-range"].strip() != etag:
                    wanted = None  # the file changed since the client's first part: the whole file again
            if wanted is False:
                f.close()
                return _plain(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
            if isinstance(wanted, tuple):
                first, last = wanted
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
                return Answer(206, headers, file=FileBody(f, first, last - first + 1))
            return Answer(200, headers, file=FileBody(f, 0, size))
        except BaseException:
            f.close()
            raise


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


def _plain(status: int, text: str, extra: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"Content-Type": "text/plain", **(extra or {})}, text.encode())
