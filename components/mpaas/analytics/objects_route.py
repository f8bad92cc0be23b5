"""Presigned URLs of a local-folder object store, served: PUT (a device's log upload) and GET/HEAD (a download),
each allowed only by the URL's signature and expiry (LocalObjectStore.verify).

An object is written once (a second PUT of the key gets 409, as does one while the first is arriving), streamed
to the folder within `max_bytes` and `deadline_seconds`, never held whole in memory. Downloads are sent as
attachments, never rendered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from ..stores import LocalObjectStore

log = logging.getLogger("mpaas.analytics")


class _TooLarge(Exception):
    pass


async def _reply(send: Any, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ObjectsRoute:
    def __init__(self, folder: LocalObjectStore, max_bytes: int, deadline_seconds: float = 120.0):
        self.folder, self.max_bytes, self.deadline = folder, max_bytes, deadline_seconds
        self.prefix = folder.url_base + "/"
        self._arriving: set[str] = set()

    def handles(self, path: str) -> bool:
        return path.startswith(self.prefix)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self._handle(scope, receive, send)
        except Exception:
            log.exception("object route failed")
            await _reply(send, 500, b"internal error")

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        key = scope["path"][len(self.prefix) :]  # the server has percent-decoded the path once already
        try:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8))
        except ValueError:
            return await _reply(send, 400, b"query string")
        if method not in ("GET", "HEAD", "PUT"):
            return await _reply(send, 405)
        if not self.folder.verify(method, key, query):
            return await _reply(send, 403, b"signature does not allow this, or it has expired")
        if method == "PUT":
            return await self._put(scope, key, receive, send)
        info = await self.folder.stat(key)
        if info is None:
            return await _reply(send, 404)
        data = await self.folder.get(key) if method == "GET" else b""
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(info.size).encode()),
            (b"content-disposition", b"attachment"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _put(self, scope: dict[str, Any], key: str, receive: Any, send: Any) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared and (not declared.isdigit() or len(declared) > 12 or int(declared) > self.max_bytes):
            return await _reply(send, 413, f"at most {self.max_bytes} bytes".encode())
        if key in self._arriving or await self.folder.stat(key) is not None:
            return await _reply(send, 409, b"already uploaded: an object is written once")
        self._arriving.add(key)
        try:

            async def chunks() -> AsyncIterator[bytes]:
                size = 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ConnectionError("the client went away")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _TooLarge
                    if chunk:
                        yield chunk
                    if not message.get("more_body", False):
                        return

            await asyncio.wait_for(self.folder.put_stream(key, chunks()), self.deadline)
        except _TooLarge:
            return await _reply(send, 413, f"at most {self.max_bytes} bytes".encode())
        except TimeoutError:
            return await _reply(send, 408, b"the upload did not arrive in time")
        except ConnectionError:
            return
        finally:
            self._arriving.discard(key)
        await _reply(send, 200)
