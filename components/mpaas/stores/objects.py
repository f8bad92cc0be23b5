"""ObjectStore: packages, diff packages, log archives (S3-compatible, or a local folder)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from minio import Minio
from minio.error import S3Error


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


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}")
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
            return ObjectInfo(
                key, int(st.size or 0), meta.get("x-amz-meta-sha256", ""), st.content_type or "application/octet-stream"
            )

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


class LocalObjectStore(ObjectStore):
    """A folder; writes go through a temporary file and a rename so readers never see half an object."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    async def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        path = self._path(key)
        digest = hashlib.sha256(data).hexdigest()

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            path.with_name(f".{path.name}.meta").write_text(f"{digest}\n{content_type}\n")

        await asyncio.to_thread(write)
        return ObjectInfo(key, len(data), digest, content_type)

    async def get(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)

        def read() -> bytes:
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    return f.read(length) if length else f.read()
            except FileNotFoundError:
                raise KeyError(key) from None

        return await asyncio.to_thread(read)

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        meta = path.with_name(f".{path.name}.meta")
        digest, ctype = ([*meta.read_text().splitlines(), "", ""])[:2] if meta.exists() else ("", "")
        return ObjectInfo(key, path.stat().st_size, digest, ctype or "application/octet-stream")

    async def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.meta").unlink(missing_ok=True)

    async def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = [
            str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".")
        ]
        return sorted(k for k in keys if k.startswith(prefix))
