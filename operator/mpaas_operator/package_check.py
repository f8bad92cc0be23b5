"""The check of a DeliveryTask's package, off the operator's event loop.

`mpaas.delivery.packages.verify` reads the package in ranges of 8 MiB and hashes it. Hashing gigabytes on
the operator's loop would hold up every handler, so each check runs in a thread of its own with an event
loop of its own; it can be stopped between two ranges (the operator stops, or becomes a standby).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mpaas.api.delivery import Package
from mpaas.delivery.packages import bucket_of, verify
from mpaas.stores import ObjectInfo, ObjectStore

VERIFIED = "Verified"
NO_PACKAGE = "NoPackage"
CHECKING = "Checking"

# verify() says what is wrong in words; the condition's reason names the kind of problem. Read after the
# package's URI, so a URI's own words never count.
_REASONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"no object store is configured"), "NoObjectStore"),
    (re.compile(r"is not the platform's object store"), "WrongBucket"),
    (re.compile(r"^ does not exist|^ answered HTTP (404|410)\b"), "PackageMissing"),
    (re.compile(r"^ has \d+ bytes|^ is longer than|^ ended at"), "SizeMismatch"),
    (re.compile(r"^ has sha256"), "Sha256Mismatch"),
    (re.compile(r"^ answered HTTP|^ could not be read"), "StoreUnavailable"),
    (re.compile(r"URI names a bucket and a key|^: packages are|invalid object key"), "InvalidUri"),
    (re.compile(r"^ is not signed"), "SignatureMissing"),
    (re.compile(r"^'s signature does not verify"), "SignatureInvalid"),
    (re.compile(r"^: its app's deliveryPublicKey is"), "InvalidPublicKey"),
]
UNREADABLE = "PackageUnreadable"  # a problem verify() words in a way not listed above
MAX_MESSAGE = 1024  # a store's error can quote a whole response


@dataclass(frozen=True)
class Result:
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.reason == VERIFIED


def classify(uri: str, problem: str) -> str:
    rest = problem[len(uri) :] if problem.startswith(uri) else problem
    for pattern, reason in _REASONS:
        if pattern.search(rest):
            return reason
    return UNREADABLE


class Stopped(Exception):
    """The check was stopped before it finished."""


class _Stoppable(ObjectStore):
    """The store as verify() reads it (stat and ranges), refusing to read on once `stop` is set."""

    def __init__(self, inner: ObjectStore, stop: threading.Event):
        self.inner, self.stop = inner, stop
        self.bucket = bucket_of(inner)  # what verify() compares the URI's bucket with

    def _check(self) -> None:
        if self.stop.is_set():
            raise Stopped

    async def stat(self, key: str) -> ObjectInfo | None:
        self._check()
        return await self.inner.stat(key)

    async def get(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        self._check()
        return await self.inner.get(key, start=start, length=length)

    async def ensure_bucket(self) -> None:
        raise NotImplementedError("read only")

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        raise NotImplementedError("read only")

    async def delete(self, key: str) -> None:
        raise NotImplementedError("read only")

    async def list(self, prefix: str = "") -> list[str]:
        raise NotImplementedError("read only")


Verify = Callable[[Package, ObjectStore | None], Coroutine[Any, Any, str | None]]


async def check(
    package: Package, objects: ObjectStore | None, stop: threading.Event, *, run: Verify = verify
) -> Result:
    """Verify `package` in a thread of its own; Stopped when `stop` was set meanwhile."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Result] = loop.create_future()

    def settle(result: Result | BaseException) -> None:
        if done.done():
            return
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def work() -> None:
        store = _Stoppable(objects, stop) if objects is not None else None
        try:
            problem: str | None = asyncio.run(run(package, store))
            if problem is None:
                result: Result | BaseException = Result(
                    VERIFIED, f"{package.uri} has {package.size_bytes} bytes and sha256 {package.sha256}"
                )
            else:
                result = Result(classify(package.uri, problem), problem[:MAX_MESSAGE])
        except Stopped as e:
            result = e
        except Exception as e:  # the store failed: unreachable, refused, timed out
            result = Result("StoreUnavailable", f"{package.uri} could not be read: {e}"[:MAX_MESSAGE])
        try:
            loop.call_soon_threadsafe(settle, result)
        except RuntimeError:  # the operator's loop is gone: it stopped meanwhile
            pass

    # A daemon thread: an https:// package cannot be stopped between ranges, and must not hold up an exit.
    threading.Thread(target=work, name=f"package-check {package.uri[:80]}", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        stop.set()
        raise
