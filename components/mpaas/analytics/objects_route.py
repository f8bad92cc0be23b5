"""Presigned URLs of a local-folder object store, served: PUT (a device's log upload) and GET/HEAD (a download),
each allowed only by the URL's signature and expiry (LocalObjectStore.verify), bodies bounded."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

from ..stores import LocalObjectStore


async def _reply(send: Any, status: int, body: bytes = b"", content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ObjectsRoute:
    def __init__(self, folder: LocalObjectStore, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.prefix = folder.url_base + "/"

    def handles(self, path: str) -> bool:
        return path.startswith(self.prefix)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        key = unquote(scope["path"][len(self.prefix) :])
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8))
        if method not in ("GET", "HEAD", "PUT"):
            return await _reply(send, 405)
        if not self.folder.verify(method, key, query):
            return await _reply(send, 403, b"signature does not allow this, or it has expired")
        if method == "PUT":
            body, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    return await _reply(send, 413, f"at most {self.max_bytes} bytes".encode())
                body.append(chunk)
                if not message.get("more_body", False):
                    break
            await self.folder.put(key, b"".join(body))
            return await _reply(send, 200)
        try:
            data = await self.folder.get(key)
        except (KeyError, FileNotFoundError):
            return await _reply(send, 404)
        await _reply(send, 200, data if method == "GET" else b"", b"application/octet-stream")
