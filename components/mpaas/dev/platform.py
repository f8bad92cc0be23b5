"""Run every registered component in one asyncio loop, config read from a folder of YAML.

Each component runs on the server it runs on in production: the lean HTTP/1.1 server (`mpaas.http1`) for
those that serve through a router (the gateway), uvicorn for the others; so what a developer tries locally is
what the cluster serves. The demo backend (the example gateway's upstream) runs beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
from collections.abc import Mapping
from typing import Any

import uvicorn

from ..component import Served, registered
from ..http1 import Server as Http1Server
from . import demo_backend

log = logging.getLogger("mpaas.dev")

DEMO_BACKEND = "demo-backend"
DEMO_BACKEND_PORT = 9090


class DevPlatform:
    """`ports`: component name (or "demo-backend") -> port, for those not on their `dev_port`."""

    def __init__(self, config_dir: str, host: str = "127.0.0.1", ports: Mapping[str, int] | None = None):
        self.config_dir, self.host = config_dir, host
        components = registered()
        self.ports = {c.name: c.dev_port for c in components} | {DEMO_BACKEND: DEMO_BACKEND_PORT} | dict(ports or {})
        self.served: dict[str, Served] = {}
        # One local folder as the object store of every component that keeps objects (mappings, log pulls, the
        # analytics history), unless MPAAS_OBJECTS_URL names one: it goes with the process.
        self.objects_dir = tempfile.mkdtemp(prefix="mpaas-dev-objects-")
        for c in components:
            extra: dict[str, Any] = {k: self.ports.get(f"{c.name}.{k}", port) for k, port in c.dev_ports}
            settings = c.settings(
                config_source="dir", config_dir=config_dir, host=host, port=self.ports[c.name], **extra
            )
            if getattr(settings, "objects_url", None) == "":
                settings = settings.model_copy(update={"objects_url": f"file://{self.objects_dir}"})
            self.served[c.name] = c.build(settings)
        self.http1: dict[str, Http1Server] = {}
        apps: dict[str, Any] = {DEMO_BACKEND: demo_backend.app}
        for name, served in self.served.items():
            if served.router is not None:
                self.http1[name] = Http1Server(
                    served.app, host, self.ports[name], router=served.router, body_limit=served.body_limit
                )
            else:
                apps[name] = served.app
        self.uvicorn = {
            name: uvicorn.Server(
                uvicorn.Config(app, host=host, port=self.ports[name], log_config=None, access_log=False, lifespan="on")
            )
            for name, app in apps.items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()

    def url(self, component: str) -> str:
        return f"http://{self.host}:{self.ports[component]}"

    @property
    def gateway(self) -> Any:
        return self.served["gateway"].app

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(s.serve(), name=n) for n, s in self.uvicorn.items()]
        for server in self.http1.values():
            await server.start()
        while not all(s.started for s in self.uvicorn.values()):
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
        for server in self.http1.values():
            await server.stop(drain_seconds=1.0)
        for s in self.uvicorn.values():
            s.should_exit = True
        for t in self._tasks:
            with contextlib.suppress(Exception):
                await t
        shutil.rmtree(self.objects_dir, ignore_errors=True)
