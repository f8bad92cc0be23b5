"""What delivery's handlers answer, and how an answer goes out over ASGI (HTTP/2 through hypercorn, tests) when
the lean HTTP/1.1 server (mpaas.http1, which sends files with sendfile(2)) is not the one serving."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..http1 import FileBody

ASGI_FILE_CHUNK = 1 << 20
# Each chunk goes within this plus one second per ASGI_MIN_SEND_RATE bytes, as the lean server's pieces do
# (http1.Limits): an ASGI server's `send` waits as long as a client that stopped reading likes.
ASGI_SEND_SECONDS = 30.0
ASGI_MIN_SEND_RATE = 16384


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    more: list[tuple[str, str]] | None = None
    file: FileBody | None = None  # the body, read from a file (`body` empty); closed once sent


async def send_asgi(answer: Answer, method: str, send: Any) -> None:
    file = answer.file
    try:
        length = file.count if file is not None else len(answer.body)
        pairs = [*answer.headers.items(), *(answer.more or ())]
        if answer.status != 304:  # a 304's Content-Length would be the whole file's, not 0 (RFC 9110 8.6)
            pairs.append(("content-length", str(length)))
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        if method == "HEAD" or file is None or file.count == 0:
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer.body})
            return
        await asyncio.to_thread(file.file.seek, file.offset)
        left = file.count
        while left > 0:
            chunk = await asyncio.to_thread(file.file.read, min(ASGI_FILE_CHUNK, left))
            if not chunk:
                raise ConnectionError("the file is shorter than the answer announced")
            left -= len(chunk)
            async with asyncio.timeout(ASGI_SEND_SECONDS + len(chunk) / ASGI_MIN_SEND_RATE):
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
    finally:
        if file is not None:
            file.file.close()
