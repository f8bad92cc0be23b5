"""Reading an upload: the body as sent, at most `max_body_bytes`, inflated as it arrives when it is gzip (by
Content-Encoding, or by its magic bytes as PostHog's SDKs may send it), at most `max_inflated_bytes`."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"


class TooLarge(Exception):
    pass


class Malformed(Exception):
    pass


class _Inflater:
    def __init__(self, limit: int):
        self.limit = limit
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing only
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        try:
            while data:
                # At most what is left of the limit (+1 to notice passing it): a small bomb cannot expand in memory.
                out = self.z.decompress(data, self.limit - self.size + 1)
                self.size += len(out)
                if self.size > self.limit:
                    raise TooLarge(f"inflated body over {self.limit} bytes")
                self.parts.append(out)
                data = self.z.unconsumed_tail
        except zlib.error as e:
            raise Malformed(f"not valid gzip: {e}") from None

    def finish(self) -> bytes:
        if not self.z.eof:
            raise Malformed("gzip stream ends early")
        if self.z.unused_data:
            raise Malformed("bytes after the gzip stream")
        return b"".join(self.parts)


async def read(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    headers: dict[str, str],
    *,
    max_body_bytes: int,
    max_inflated_bytes: int,
) -> bytes:
    """The upload's body, inflated; raises TooLarge or Malformed."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise Malformed(f"unsupported Content-Encoding {encoding!r}: send gzip or nothing")
    declared = headers.get("content-length")
    if declared is not None and (
        not declared.isascii() or not declared.isdigit() or len(declared) > 19 or int(declared) > max_body_bytes
    ):
        raise TooLarge(f"body over {max_body_bytes} bytes")
    inflater = _Inflater(max_inflated_bytes) if encoding == "gzip" else None
    plain: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Malformed("the client went away before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise TooLarge(f"body over {max_body_bytes} bytes")
        if inflater is not None:
            inflater.feed(chunk)
        elif chunk:
            plain.append(chunk)
        if not message.get("more_body", False):
            break
    if inflater is not None:
        return inflater.finish()
    body = b"".join(plain)
    if body.startswith(GZIP_MAGIC):  # gzip without the header, as PostHog's SDKs may send it
        inflater = _Inflater(max_inflated_bytes)
        inflater.feed(body)
        return inflater.finish()
    if len(body) > max_inflated_bytes:
        raise TooLarge(f"body over {max_inflated_bytes} bytes")
    return body
