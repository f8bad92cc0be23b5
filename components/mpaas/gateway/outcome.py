"""What a stage answers with: an `Outcome` (result code, HTTP status, headers, body) or a refusal by code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .codes import ResultCode


@dataclass
class Outcome:
    code: int
    status: int
    headers: dict[str, str]
    body: bytes = b""
    upstream: str = ""
    more: list[tuple[str, str]] | None = None  # header lines whose names repeat (set-cookie), after `headers`

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        pairs = [*self.headers.items(), *(self.more or ())]
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
        raw.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


def result(code: ResultCode, trace_id: str, *, rest: bool, memo: str | None = None) -> Outcome:
    """The gateway's own answer: HTTP 200 with the code on /mgw.htm, the code's HTTP status on /api/."""
    return Outcome(
        code.code,
        code.http_status if rest else 200,
        {"Result-Status": str(code.code), "Memo": latin1(memo or code.memo), "Mgw-TraceId": trace_id},
    )


def latin1(text: str) -> str:
    """Header values must be Latin-1: other characters are escaped."""
    return text.encode("latin-1", "backslashreplace").decode("latin-1")
