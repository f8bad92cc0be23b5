"""A bounded local disk cache of packages in front of S3: each package fetched once (concurrent misses wait on
the one fetch), checked against its sha256 and size on the way in, kept under its sha256, and the least
recently used dropped past `max_bytes` (a download already under way keeps its open file).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from prometheus_client import Counter, Gauge

from ..api.delivery import Package
from ..stores import ObjectStore
from .packages import bucket_of, locate

log = logging.getLogger("mpaas.delivery")

FETCH_CHUNK = 8 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")

FETCHES = Counter(
    "mpaas_delivery_cache_fetches_total", "Packages fetched from the object store into the cache", ["result"]
)
HITS = Counter("mpaas_delivery_cache_hits_total", "Downloads served from a package already in the cache")
CACHED = Gauge("mpaas_delivery_cache_bytes", "Bytes of packages in the local cache")


class CacheError(Exception):
    """The package cannot be served from the cache (the message says why)."""


class PackageCache:
    def __init__(self, objects: ObjectStore, folder: str | Path, max_bytes: int):
        self.objects = objects
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, int] = OrderedDict()  # sha256 -> size, least recently used first
        self._bytes = 0
        self._fetching: dict[str, asyncio.Future[Path]] = {}
        for p in self.folder.iterdir():  # a restart keeps what is whole; half-fetched files go
            if _HEX64.fullmatch(p.name) and p.is_file():
                self._files[p.name] = p.stat().st_size
                self._bytes += self._files[p.name]
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
        CACHED.set(self._bytes)

    async def open(self, package: Package) -> BinaryIO:
        """`package` opened for reading (fetched and checked now if it is not here). Opened in the same step
        as it is found, so no trim can take it in between; once open, a trim does not disturb the reader."""
        sha = package.sha256
        if sha in self._files:
            self._files.move_to_end(sha)
            HITS.inc()
            return (self.folder / sha).open("rb")
        pending = self._fetching.get(sha)
        if pending is not None:
            await asyncio.shield(pending)
        else:
            await self._fetch_once(package)
        if sha not in self._files:  # fetched, then trimmed by a larger package before this reader woke
            raise CacheError(f"{package.uri} left the cache before it could be sent: try again")
        return (self.folder / sha).open("rb")

    async def _fetch_once(self, package: Package) -> Path:
        sha = package.sha256
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._fetching[sha] = future
        try:
            path = await self._fetch(package)
            future.set_result(path)
            return path
        except Exception as e:
            FETCHES.labels("failed").inc()
            future.set_exception(e)
            future.exception()  # retrieved: no warning when nobody else waited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._fetching[sha]

    async def _fetch(self, package: Package) -> Path:
        where = locate(package.uri)
        if not where.bucket or where.bucket != bucket_of(self.objects):
            raise CacheError(f"{package.uri} is not in the platform's object store")
        if package.size_bytes > self.max_bytes:
            raise CacheError(f"{package.uri} is larger than the cache ({self.max_bytes} bytes)")
        part = self.folder / f".{secrets.token_hex(8)}.part"
        digest, done = hashlib.sha256(), 0
        try:
            with part.open("wb") as f:
                while done < package.size_bytes:
                    chunk = await self.objects.get(
                        where.key, start=done, length=min(FETCH_CHUNK, package.size_bytes - done)
                    )
                    if not chunk:
                        break
                    digest.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
                    done += len(chunk)
            if done != package.size_bytes or not hmac.compare_digest(digest.hexdigest(), package.sha256):
                raise CacheError(f"{package.uri} is not the package its task names (size or sha256)")
            os.replace(part, self.folder / package.sha256)
        finally:
            with contextlib.suppress(OSError):
                part.unlink()
        self._files[package.sha256] = done
        self._bytes += done
        FETCHES.labels("ok").inc()
        self._trim(keep=package.sha256)
        return self.folder / package.sha256

    def _trim(self, keep: str) -> None:
        for sha in list(self._files):
            if self._bytes <= self.max_bytes:
                break
            if sha == keep:
                continue
            self._bytes -= self._files.pop(sha)
            with contextlib.suppress(OSError):
                (self.folder / sha).unlink()  # a download that opened it reads on: its descriptor holds the file
        CACHED.set(self._bytes)
