"""What the local vendor servers share: serving an ASGI app in the caller's event loop (a test's, or the script's
when one runs alone), the start/stop plumbing of a server built on it, form bodies, the China day the
vendors with daily quotas count in, and posting delivery receipts back to the sender after a send.

Receipts: a server that sends them owns a `ReceiptPoster` (`server.receipts`). Each receipt is posted in the
background a moment after the send is answered; `receipts.posted` lists every POST made (retries included) and
`await receipts.drain()` waits for the scheduled ones. `server.expire_later(*tokens)` marks tokens that a send
still accepts but whose receipt reports them dead (uninstalled / invalid), as a vendor finds out only later."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from starlette.requests import Request

CHINA = timezone(timedelta(hours=8))  # Xiaomi, OPPO and vivo reset their daily quotas at its midnight


def china_day() -> str:
    """Today in China (ISO date): the day a vendor's daily quota counts."""
    return datetime.now(CHINA).date().isoformat()


def epoch_ms() -> int:
    """Now, in Unix milliseconds: the time receipts carry."""
    return int(time.time() * 1000)


def parse_form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the last value of a repeated field wins)."""
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def read_form(request: Request) -> dict[str, str]:
    """The form of a request that says it sends one; {} for any other content type."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    return parse_form(await request.body())


class AsgiServer:
    """Runs an ASGI app under uvicorn on 127.0.0.1 in the caller's event loop, so a test needs no thread."""

    def __init__(self, app: Any):
        self.app = app
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self, port: int = 0) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def wait(self) -> None:
        """Until the server ends (SIGINT/SIGTERM, which uvicorn catches, or `stop`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


class Served:
    """start/stop/wait/url of a vendor server whose `_server` is an AsgiServer."""

    _server: AsgiServer

    async def start(self, port: int = 0) -> str:
        return await self._server.start(port)

    async def stop(self) -> None:
        await self._server.stop()

    async def wait(self) -> None:
        await self._server.wait()

    @property
    def url(self) -> str:
        return self._server.url


@dataclass
class Posted:
    """One receipt POST as made. `status` is the receiver's HTTP status, None when no answer came (refused,
    timed out)."""

    url: str
    content_type: str
    body: bytes
    status: int | None

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return parse_form(self.body)


class ReceiptPoster:
    """Posts receipt callbacks in the background, as a vendor does after answering a send: `delay` seconds later
    (so the send's answer reaches the sender first), retrying a post that is refused or not answered 2xx up to
    `retries` times with a doubling backoff. `posted` records every attempt, in the order they end."""

    def __init__(self, *, delay: float = 0.05, retries: int = 3, backoff: float = 0.1, timeout: float = 5.0):
        self.delay, self.retries, self.backoff, self.timeout = delay, retries, backoff, timeout
        self.posted: list[Posted] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None  # made on first use, in the loop that posts

    def post_json(self, url: str, doc: Any) -> None:
        self.schedule(url, "application/json", json.dumps(doc, ensure_ascii=False).encode())

    def post_form(self, url: str, fields: dict[str, str]) -> None:
        self.schedule(url, "application/x-www-form-urlencoded", urlencode(fields).encode())

    def schedule(self, url: str, content_type: str, body: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._post(url, content_type, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Until every scheduled post (retries included) is done; raises what a post task raised."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def close(self) -> None:
        """Drops the posts still pending (drain first to keep them) and closes the HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(self, url: str, content_type: str, body: bytes) -> None:
        await asyncio.sleep(self.delay)
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, timeout=self.timeout)
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            status: int | None = None
            try:
                answer = await self._client.post(url, content=body, headers={"content-type": content_type})
                status = answer.status_code
            except (httpx.HTTPError, httpx.InvalidURL):  # no answer: refused, timed out or a bad callback URL
                pass
            self.posted.append(Posted(url, content_type, body, status))
            if status is not None and 200 <= status < 300:
                return


class ServedWithReceipts(Served):
    """A Served vendor server that posts delivery receipts with `receipts`. Tokens in `expiring` are accepted by
    a send but reported dead by its receipt."""

    receipts: ReceiptPoster
    expiring: set[str]

    def expire_later(self, *tokens: str) -> None:
        """A send still accepts these tokens; its receipt says they are invalid instead of delivered."""
        self.expiring.update(tokens)

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await self.receipts.close()


V1_DELIVERED, V1_UNINSTALLED = 0, 2  # statuses of Huawei's V1 receipts (Honor's take the same shape)
MAX_V1_STATUSES = 100  # statuses in one V1 receipt post


def post_v1_receipts(
    poster: ReceiptPoster, url: str, app: str, bi_tag: str, tokens: list[str], expiring: set[str], request_id: str
) -> None:
    """Huawei's V1 receipt (Honor's too): `{"statuses": [...]}` for the tokens of one send, 100 a post; a token in
    `expiring` is reported uninstalled."""
    now = epoch_ms()
    statuses = [
        {"biTag": bi_tag, "appid": app, "token": t, "status": V1_UNINSTALLED if t in expiring else V1_DELIVERED,
         "timestamp": now, "requestId": request_id}
        for t in tokens
    ]  # fmt: skip
    for i in range(0, len(statuses), MAX_V1_STATUSES):
        poster.post_json(url, {"statuses": statuses[i : i + MAX_V1_STATUSES]})
