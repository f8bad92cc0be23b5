"""Run every component in one asyncio loop, config read from a folder of YAML."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import uvicorn

from .. import components
from ..gateway.app import GatewaySettings
from ..gateway.app import create_app as create_gateway
from ..service import ComponentSettings
from . import demo_backend

log = logging.getLogger("mpaas.dev")


@dataclass
class Ports:
    gateway: int = 8080
    delivery: int = 8081
    push: int = 8082
    link: int = 8083
    sync: int = 8084
    analytics: int = 8085
    demo_backend: int = 9090


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # one handler, below
    return server


class DevPlatform:
    def __init__(self, config_dir: str, host: str = "127.0.0.1", ports: Ports | None = None):
        self.config_dir, self.host, self.ports = config_dir, host, ports or Ports()
        base = {"config_source": "dir", "config_dir": config_dir, "host": host}
        self.servers: dict[str, uvicorn.Server] = {
            "gateway": _server(create_gateway(GatewaySettings(**base, port=self.ports.gateway)), host,
                               self.ports.gateway),
            "demo-backend": _server(demo_backend.app, host, self.ports.demo_backend),
        }
        for name in components.KINDS_READ:
            port = getattr(self.ports, name)
            self.servers[name] = _server(components.create_app(name, ComponentSettings(**base, port=port)), host, port)
        self._tasks: list[asyncio.Task[None]] = []

    def url(self, component: str) -> str:
        return f"http://{self.host}:{getattr(self.ports, component.replace('-', '_'))}"

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(s.serve(), name=n) for n, s in self.servers.items()]
        while not all(s.started for s in self.servers.values()):
            for t in self._tasks:
                if t.done():
                    t.result()  # a server failed to start (port in use, ...): raise it
                    raise RuntimeError(f"{t.get_name()} stopped during start-up")
            await asyncio.sleep(0.05)

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    async def stop(self) -> None:
        for s in self.servers.values():
            s.should_exit = True
        for t in self._tasks:
            with contextlib.suppress(Exception):
                await t
