"""ObjectStore: packages, diff packages, log archives (S3-compatible, or a local folder).

Large objects go up with `put_stream`, from an async iterator of chunks, holding one part in memory at
a time (S3 multipart upload; a temporary file locally). Clients download and upload directly with
presigned URLs: S3's own signature, or locally an HMAC-SHA256 signature over method, key and expiry that
the serving route checks with `LocalObjectStore.verify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import os
import re
import secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

from minio import Minio
from minio.commonconfig import Tags
from minio.datatypes import Part
from minio.error import S3Error

# S3's bounds on multipart uploads: parts of 5 MiB at least (but the last), 10 000 parts at most.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str  # hex, recorded at upload in object metadata
    content_type: str


class ObjectStore(ABC):
    @abstractmethod
    async def ensure_bucket(self) -> None: ...

    @abstractmethod
    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo: ...

    @abstractmethod
    async def get(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or a range of them; KeyError when absent."""

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def list(self, prefix: str = "") -> list[str]: ...

    # Not abstract, so that wrappers written before these existed still load; both stores here have them.
    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        """Store an object of any size from its chunks, holding a few times `part_size` bytes at most.

        With `sha256` (hex) the upload is checked before it becomes visible: a mismatch stores nothing
        and raises ValueError. The object appears whole or not at all.
        """
        raise NotImplementedError(f"{type(self).__name__} has no streamed upload")

    async def presign_get(self, key: str, *, expires_seconds: int = 3600) -> str:
        """A URL anyone holding it can GET the object with, until it expires."""
        raise NotImplementedError(f"{type(self).__name__} has no presigned URLs")

    async def presign_put(self, key: str, *, expires_seconds: int = 3600) -> str:
        """A URL anyone holding it can PUT the object's bytes to, until it expires (no sha256 is recorded)."""
        raise NotImplementedError(f"{type(self).__name__} has no presigned URLs")


async def _parts(chunks: AsyncIterable[bytes], size: int, digest: _Digest) -> AsyncIterator[bytes]:
    """The stream cut into parts of exactly `size` bytes (the last one shorter; one empty part for nothing).

    Only one part's chunks are held, and joined once: memory stays a few parts, whatever the object.
    """
    pending: list[bytes] = []
    held, yielded = 0, False
    async for chunk in chunks:
        digest.update(chunk)
        while chunk:
            take = chunk[: size - held]
            chunk = chunk[len(take) :]
            pending.append(take)
            held += len(take)
            if held == size:
                part = b"".join(pending)
                pending.clear()
                held, yielded = 0, True
                yield part
                del part
    if pending or not yielded:
        yield b"".join(pending)


class _Digest:
    """SHA-256 and size of what went by, and the check against an expected digest."""

    def __init__(self, expected: str | None):
        self.expected = expected.lower() if expected else None
        self.hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)

    def check(self, key: str) -> str:
        digest = self.hash.hexdigest()
        if self.expected is not None and not hmac.compare_digest(digest, self.expected):
            raise ValueError(f"{key}: sha256 is {digest}, expected {self.expected}")
        return digest


_EXPIRES = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# No empty segment (a//b, a trailing /), none starting with "." (".", "..", the local folder's temporary
# files), no control character or backslash.
_SEGMENT = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def _check_key(key: str) -> str:
    if not key or len(key) > 1024 or not all(_SEGMENT.fullmatch(part) for part in key.split("/")):
        raise ValueError(f"invalid object key {key[:100]!r}")
    return key


class S3ObjectStore(ObjectStore):
    """Any S3-compatible server (AWS S3, MinIO, SeaweedFS, Ceph RGW) through the minio client."""

    def __init__(self, endpoint: str, bucket: str, *, access_key: str, secret_key: str, region: str | None = None):
        u = urlparse(endpoint)
        self.bucket = bucket
        self.client = Minio(
            u.netloc, access_key=access_key, secret_key=secret_key, secure=u.scheme == "https", region=region
        )

    async def ensure_bucket(self) -> None:
        def make() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        await asyncio.to_thread(make)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(
            self.client.put_object,
            self.bucket,
            _check_key(key),
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata={"sha256": digest},
        )
        return ObjectInfo(key, len(data), digest, content_type)

    async def get(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        def read() -> bytes:
            try:
                resp = self.client.get_object(self.bucket, _check_key(key), offset=start, length=length or 0)
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject"):
                    raise KeyError(key) from None
                raise
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return await asyncio.to_thread(read)

    async def stat(self, key: str) -> ObjectInfo | None:
        def head() -> ObjectInfo | None:
            try:
                st = self.client.stat_object(self.bucket, _check_key(key))
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise
            meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
            digest = meta.get("x-amz-meta-sha256", "")
            if not digest:  # a streamed upload records it as a tag
                tags = self.client.get_object_tags(self.bucket, key)
                digest = tags.get("sha256", "") if tags is not None else ""
            return ObjectInfo(key, int(st.size or 0), digest, st.content_type or "application/octet-stream")

        return await asyncio.to_thread(head)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, self.bucket, _check_key(key))

    async def list(self, prefix: str = "") -> list[str]:
        def names() -> list[str]:
            return sorted(
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name
            )

        return await asyncio.to_thread(names)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        """Multipart upload, one part in memory at a time; an object smaller than a part is one PUT.

        The parts are uploaded in order. The sha256 goes into the object's metadata when given up front;
        else it is known only at the end and is recorded as the object's `sha256` tag (metadata cannot
        change without copying the object), which `stat` reads.
        """
        _check_key(key)
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} (S3's minimum)")
        digest = _Digest(sha256)
        parts_of_object = _parts(chunks, part_size, digest)
        first = await anext(parts_of_object)
        if len(first) < part_size:  # the whole object fits in one part
            digest.check(key)
            return await self.put(key, first, content_type=content_type)

        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": content_type}
        if sha256:
            headers["x-amz-meta-sha256"] = sha256.lower()
        # minio's public put_object cannot check a digest before completing; these calls are its own steps.
        upload_id = await asyncio.to_thread(self.client._create_multipart_upload, self.bucket, key, headers)
        parts: list[Part] = []
        try:
            part: bytes | None = first
            del first
            while part is not None:
                if len(parts) >= MAX_PARTS:
                    raise ValueError(f"{key}: more than {MAX_PARTS} parts of {part_size} bytes")
                number = len(parts) + 1
                etag = await asyncio.to_thread(
                    self.client._upload_part, self.bucket, key, part, None, upload_id, number
                )
                parts.append(Part(number, etag))
                part = None  # let it go before the next one is gathered
                part = await anext(parts_of_object, None)
            hexdigest = digest.check(key)
            await asyncio.to_thread(self.client._complete_multipart_upload, self.bucket, key, upload_id, parts)
        except BaseException:
            with contextlib.suppress(Exception):  # the upload's own error is the one to report
                await asyncio.to_thread(self.client._abort_multipart_upload, self.bucket, key, upload_id)
            raise
        if not sha256:
            tags = Tags.new_object_tags()
            tags["sha256"] = hexdigest
            await asyncio.to_thread(self.client.set_object_tags, self.bucket, key, tags)
        return ObjectInfo(key, digest.size, hexdigest, content_type)

    async def presign_get(self, key: str, *, expires_seconds: int = 3600) -> str:
        # Signed for the endpoint this store was given: it must be one the URL's users can reach.
        return await asyncio.to_thread(
            self.client.presigned_get_object, self.bucket, _check_key(key), timedelta(seconds=expires_seconds)
        )

    async def presign_put(self, key: str, *, expires_seconds: int = 3600) -> str:
        return await asyncio.to_thread(
            self.client.presigned_put_object, self.bucket, _check_key(key), timedelta(seconds=expires_seconds)
        )


class LocalObjectStore(ObjectStore):
    """A folder; writes go through a temporary file and a rename so readers never see half an object.

    Presigned URLs point at `url_base` (the route of the component that serves the folder, by default
    the path `/objects` on it): `{url_base}/{key}?expires=...&signature=...`, the signature an
    HMAC-SHA256 of method, key and expiry under `signing_key`. The route checks them with `verify`.
    Without a `signing_key` one is drawn for this process, and its URLs die with it.
    """

    def __init__(self, root: str | Path, *, url_base: str = "/objects", signing_key: bytes | None = None):
        self.root = Path(root)
        self.url_base = url_base.rstrip("/")
        self._signing_key = signing_key or secrets.token_bytes(32)

    def _signature(self, method: str, key: str, expires: int) -> str:
        message = f"{method.upper()}\n{key}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def _presign(self, method: str, key: str, expires_seconds: int) -> str:
        expires = int(time.time()) + expires_seconds
        query = urlencode({"expires": expires, "signature": self._signature(method, _check_key(key), expires)})
        return f"{self.url_base}/{quote(key)}?{query}"

    def verify(self, method: str, key: str, query: Mapping[str, str]) -> bool:
        """True when `query` (the URL's `expires` and `signature`) allows `method` on `key` now.

        `key` is the URL path after `url_base`, percent-decoded. HEAD is allowed by a GET URL.
        """
        method = "GET" if method.upper() == "HEAD" else method.upper()
        given, signature = str(query.get("expires", "")), str(query.get("signature", ""))
        # ASCII digits only (int() would take others), a signature of 64 hex digits (compare_digest wants ASCII).
        if not _EXPIRES.fullmatch(given) or not _HEX64.fullmatch(signature):
            return False
        try:
            _check_key(key)
        except ValueError:
            return False
        expires = int(given)
        if expires < time.time():
            return False
        return hmac.compare_digest(self._signature(method, key, expires), signature)

    async def presign_get(self, key: str, *, expires_seconds: int = 3600) -> str:
        return self._presign("GET", key, expires_seconds)

    async def presign_put(self, key: str, *, expires_seconds: int = 3600) -> str:
        return self._presign("PUT", key, expires_seconds)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        """Chunks go to a temporary file as they come (`part_size` is S3's concern); renamed when whole."""
        path = self.path(key)
        digest = _Digest(sha256)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        f = await asyncio.to_thread(tmp.open, "wb")
        try:
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
            finally:
                await asyncio.to_thread(f.close)
            hexdigest = digest.check(key)

            def publish() -> None:
                os.replace(tmp, path)
                path.with_name(f".{path.name}.meta").write_text(f"{hexdigest}\n{content_type}\n")

            await asyncio.to_thread(publish)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key, digest.size, hexdigest, content_type)

    def path(self, key: str) -> Path:
        """The file of `key` (ValueError for a key the store refuses)."""
        return self.root / _check_key(key)

    async def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        path = self.path(key)
        digest = hashlib.sha256(data).hexdigest()

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # writers of one key never share it
            tmp.write_bytes(data)
            os.replace(tmp, path)
            path.with_name(f".{path.name}.meta").write_text(f"{digest}\n{content_type}\n")

        await asyncio.to_thread(write)
        return ObjectInfo(key, len(data), digest, content_type)

    async def get(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        path = self.path(key)

        def read() -> bytes:
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    return f.read(length) if length else f.read()
            except FileNotFoundError:
                raise KeyError(key) from None

        return await asyncio.to_thread(read)

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        if not path.is_file():
            return None
        meta = path.with_name(f".{path.name}.meta")
        digest, ctype = ([*meta.read_text().splitlines(), "", ""])[:2] if meta.exists() else ("", "")
        return ObjectInfo(key, path.stat().st_size, digest, ctype or "application/octet-stream")

    async def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.meta").unlink(missing_ok=True)

    async def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = [
            str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".")
        ]
        return sorted(k for k in keys if k.startswith(prefix))
