"""What the local vendor servers share: serving an ASGI app in the caller's event loop (a test's, or the script's
when one runs alone), the start/stop plumbing of a server built on it, form bodies, and the China day the
vendors with daily quotas count in."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.requests import Request

CHINA = timezone(timedelta(hours=8))  # Xiaomi, OPPO and vivo reset their daily quotas at its midnight


def china_day() -> str:
    """Today in China (ISO date): the day a vendor's daily quota counts."""
    return datetime.now(CHINA).date().isoformat()


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
