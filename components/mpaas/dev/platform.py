"""Run every component in one asyncio loop, config read from a folder of YAML.

The gateway runs on the server it runs on in production (`mpaas.http1`, with its RPC router and
body limit), so what a developer tries locally is what the cluster serves; the other components
and the demo backend run under uvicorn, as they do in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

import uvicorn

from .. import components
from ..gateway.app import GatewayASGI
from ..gateway.app import create_app as create_gateway
from ..gateway.settings import GatewaySettings
from ..http1 import Server as Http1Server
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


class DevPlatform:
    def __init__(self, config_dir: str, host: str = "127.0.0.1", ports: Ports | None = None):
        self.config_dir, self.host, self.ports = config_dir, host, ports or Ports()
        self.gateway_app = create_gateway(
            GatewaySettings(config_source="dir", config_dir=config_dir, host=host, port=self.ports.gateway)
        )
        self.gateway_server = Http1Server(
            self.gateway_app,
            host,
            self.ports.gateway,
            router=self.gateway_app.route,
            body_limit=self.gateway_app.body_limit,
        )
        apps: dict[str, Any] = {"demo-backend": demo_backend.app}
        for name in components.KINDS_READ:
            settings = ComponentSettings(
                config_source="dir", config_dir=config_dir, host=host, port=getattr(self.ports, name)
            )
            apps[name] = components.create_app(name, settings)
        self.servers = {
            name: uvicorn.Server(
                uvicorn.Config(app, host=host, port=self.port(name), log_config=None, access_log=False, lifespan="on")
            )
            for name, app in apps.items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()

    def port(self, component: str) -> int:
        return int(getattr(self.ports, component.replace("-", "_")))

    def url(self, component: str) -> str:
        return f"http://{self.host}:{self.port(component)}"

    @property
    def gateway(self) -> GatewayASGI:
        return self.gateway_app

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(s.serve(), name=n) for n, s in self.servers.items()]
        await self.gateway_server.start()
        while not all(s.started for s in self.servers.values()):
            for t in self._tasks:
                if t.done():
                    t.result()  # a server failed to start (port in use, ...): raise it
                    raise RuntimeError(f"{t.get_name()} stopped during start-up")
            await asyncio.sleep(0.05)
        # Each uvicorn server captured the signals for itself; one handler stops them all.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)

    async def wait(self) -> None:
        await self.stopped.wait()

    async def stop(self) -> None:
        await self.gateway_server.stop(drain_seconds=1.0)
        for s in self.servers.values():
            s.should_exit = True
        for t in self._tasks:
            with contextlib.suppress(Exception):
                await t
