"""Where a DeliveryTask's package is, and the check that it is what the task says (before any client is offered it).

A package URI is either the platform's object store, `s3://{bucket}/{key}` (the bucket of MPAAS_OBJECTS_URL; a
local folder store answers to the bucket name `local`), or an `https://` URL the platform reads but does not
keep. The check reads the whole package once: it must exist, have the task's size, and hash to its sha256.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..api.delivery import Package
from ..stores import LocalObjectStore, ObjectStore

# (package, this service's base URL) -> the URL a client downloads it from; None when none can be made
Link = Callable[[Package, str], Awaitable[str | None]]

LOCAL_BUCKET = "local"
READ_CHUNK = 8 << 20
# A package is read within this, plus one second per MIN_READ_RATE bytes: packages are checked one after
# another, so one served drop by drop (each read within the client's timeout) must not hold back the rest.
READ_GRACE_SECONDS = 60.0
MIN_READ_RATE = 1 << 20


@dataclass(frozen=True)
class Where:
    bucket: str  # "" for an https:// URL
    key: str
    url: str


def locate(uri: str) -> Where:
    """The package's place; ValueError for a URI the platform cannot read."""
    u = urlsplit(uri)
    if u.scheme == "s3":
        key = unquote(u.path.lstrip("/"))
        if not u.netloc or not key:
            raise ValueError(f"{uri}: an s3:// URI names a bucket and a key, s3://bucket/path/to/package")
        return Where(u.netloc, key, uri)
    if u.scheme == "https" or u.scheme == "http":
        return Where("", "", uri)
    raise ValueError(f"{uri}: packages are s3://bucket/key (the platform's object store) or https:// URLs")


def bucket_of(objects: ObjectStore) -> str:
    return LOCAL_BUCKET if isinstance(objects, LocalObjectStore) else str(getattr(objects, "bucket", ""))


async def verify(
    package: Package,
    objects: ObjectStore | None,
    http: httpx.AsyncClient | None = None,
    *,
    sink: Callable[[bytes], object] | None = None,
    public_key: str | None = None,
) -> str | None:
    """None when the package is there with the task's size and sha256 (and, given the app's `public_key`, a
    signature that verifies with it); else what is wrong, in words. `sink` is given each piece read, in order
    (to keep a copy: valid once this returned None)."""
    signed = check_signature(package, public_key)  # before the read: a package it refuses is not read at all
    if signed is not None:
        return signed
    try:
        async with asyncio.timeout(READ_GRACE_SECONDS + package.size_bytes / MIN_READ_RATE):
            return await _verify(package, objects, http, sink or _discard)
    except TimeoutError:
        return f"{package.uri} could not be read in time"


def check_signature(package: Package, public_key_pem: str | None) -> str | None:
    """None when the package's signature verifies with the app's delivery key (or the app has none); else why."""
    if not public_key_pem:
        return None
    if not package.signature:
        return f"{package.uri} is not signed, and its app's deliveryPublicKey asks for signed packages"
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        signature = base64.b64decode(package.signature, validate=True)
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error):
        return f"{package.uri}: its app's deliveryPublicKey is not a PEM public key, or the signature not base64"
    message = bytes.fromhex(package.sha256)  # what `mpaas delivery publish` signs: the sha256's 32 bytes
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            return f"{package.uri}: its app's deliveryPublicKey is neither ECDSA nor RSA"
    except InvalidSignature:
        return f"{package.uri}'s signature does not verify with its app's deliveryPublicKey"
    return None


def _discard(chunk: bytes) -> None:
    pass


async def _verify(
    package: Package, objects: ObjectStore | None, http: httpx.AsyncClient | None, sink: Callable[[bytes], object]
) -> str | None:
    try:
        where = locate(package.uri)
    except ValueError as e:
        return str(e)
    digest = hashlib.sha256()
    size = 0
    if where.bucket:
        if objects is None:
            return "no object store is configured (MPAAS_OBJECTS_URL) to read s3:// packages from"
        if where.bucket != bucket_of(objects):
            return f"bucket {where.bucket} is not the platform's object store ({bucket_of(objects)})"
        try:
            info = await objects.stat(where.key)
        except ValueError as e:  # a key the store refuses
            return str(e)
        if info is None:
            return f"{package.uri} does not exist"
        if info.size != package.size_bytes:
            return f"{package.uri} has {info.size} bytes, the task says {package.size_bytes}"
        while size < info.size:
            chunk = await objects.get(where.key, start=size, length=min(READ_CHUNK, info.size - size))
            if not chunk:
                return f"{package.uri} ended at {size} of {info.size} bytes"
            digest.update(chunk)
            sink(chunk)
            size += len(chunk)
    else:
        own = http is None
        client = http or httpx.AsyncClient(timeout=30, follow_redirects=True)
        try:
            async with client.stream("GET", where.url) as r:
                if r.status_code != 200:
                    return f"{package.uri} answered HTTP {r.status_code}"
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > package.size_bytes:
                        return f"{package.uri} is longer than the task's {package.size_bytes} bytes"
                    digest.update(chunk)
                    sink(chunk)
        except httpx.HTTPError as e:
            return f"{package.uri} could not be read: {e!r}"
        finally:
            if own:
                await client.aclose()
        if size != package.size_bytes:
            return f"{package.uri} has {size} bytes, the task says {package.size_bytes}"
    found = digest.hexdigest()
    if not hmac.compare_digest(found, package.sha256):
        return f"{package.uri} has sha256 {found}, the task says {package.sha256}"
    return None
