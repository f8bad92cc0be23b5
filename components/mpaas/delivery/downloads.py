"""Package downloads: signed, expiring URLs with GET and HEAD, one byte range per request (206, resume), ETag,
If-None-Match and If-Range (docs/delivery.md, "Downloads"). A local-folder store's packages are served from
the folder (`Downloads`); an S3 store's through a bounded local cache (`CachedDownloads`), unless links are
set to point at S3 or a CDN instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl

from prometheus_client import Counter

from ..api.delivery import Package
from ..http1 import FileBody, Request
from ..stores import LocalObjectStore
from .answer import Answer
from .cache import CacheError, PackageCache

log = logging.getLogger("mpaas.delivery")

PACKAGES_PATH = "/v1/delivery/packages"
CACHED_PATH = "/v1/delivery/cached"
_EXPIRES = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
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


class _DownloadRoute:
    """What both download routes share: GET and HEAD only, the query read, the answer counted."""

    prefix = ""

    def handles(self, path: str) -> bool:
        return path.startswith(self.prefix)

    async def __call__(self, req: Request) -> Answer:
        if req.method not in ("GET", "HEAD"):
            answer = _plain(405, "GET or HEAD", {"Allow": "GET, HEAD"})
        else:
            try:
                query = dict(parse_qsl(req.query, max_num_fields=8))
            except ValueError:
                answer = _plain(400, "query string")
            else:
                answer = await self._serve(req, req.path[len(self.prefix) :], query)
        DOWNLOADS.labels(str(answer.status)).inc()
        if answer.file is not None and req.method != "HEAD":
            BYTES.inc(answer.file.count)
        return answer

    async def _serve(self, req: Request, name: str, query: dict[str, str]) -> Answer:
        raise NotImplementedError


class Downloads(_DownloadRoute):
    """GET and HEAD of `{PACKAGES_PATH}/{key}?expires=...&signature=...`, as presigned by `folder`."""

    def __init__(self, folder: LocalObjectStore):
        self.folder = folder
        self.prefix = folder.url_base + "/"

    async def _serve(self, req: Request, key: str, query: dict[str, str]) -> Answer:
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
        except BaseException:
            f.close()
            raise
        return file_answer(req, f, etag)


def file_answer(req: Request, f: BinaryIO, etag: str) -> Answer:
    """The answer of a GET or HEAD for the open file `f`: whole, one range, 304 or 416. It owns `f` (closed
    here, or by the server once sent)."""
    try:
        size = os.fstat(f.fileno()).st_size
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            # The link names one package version for ever (content-addressed): caches may keep it.
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


class Signer:
    """Links to cached packages: `{CACHED_PATH}/{sha256}?expires=...&signature=...`, an HMAC-SHA256 over the
    sha256 and the expiry under a key every replica shares (MPAAS_DOWNLOAD_SIGNING_KEY)."""

    def __init__(self, key: bytes):
        self.key = key

    def _mac(self, sha256: str, expires: int) -> str:
        return hmac.new(self.key, f"GET\n{sha256}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, sha256: str, expires_seconds: int) -> str:
        expires = int(time.time()) + expires_seconds
        return f"{CACHED_PATH}/{sha256}?expires={expires}&signature={self._mac(sha256, expires)}"

    def allows(self, sha256: str, query: dict[str, str]) -> bool:
        given, signature = query.get("expires", ""), query.get("signature", "")
        if not _EXPIRES.fullmatch(given) or not _HEX64.fullmatch(signature) or not _HEX64.fullmatch(sha256):
            return False
        if int(given) < time.time():
            return False
        return hmac.compare_digest(self._mac(sha256, int(given)), signature)


class CachedDownloads(_DownloadRoute):
    """GET and HEAD of an S3 store's packages through the local cache, by signed links (`Signer`). Only a
    package a live task names, and that was verified, is served."""

    prefix = CACHED_PATH + "/"

    def __init__(self, cache: PackageCache, signer: Signer, packages: Callable[[str], Package | None]):
        self.cache, self.signer, self.packages = cache, signer, packages

    async def _serve(self, req: Request, sha256: str, query: dict[str, str]) -> Answer:
        if not self.signer.allows(sha256, query):
            return _plain(403, "this link is not valid, or it has expired")
        package = self.packages(sha256)
        if package is None:
            return _plain(404, "no live release has this package")
        try:
            f = await self.cache.open(package)
        except CacheError as e:
            return _plain(503, str(e), {"Retry-After": "5"})
        except Exception as e:  # the object store away
            log.warning("package %s could not be fetched: %r", sha256, e)
            return _plain(503, "the package store cannot be read just now", {"Retry-After": "5"})
        return file_answer(req, f, f'"{sha256}"')


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
