"""The component contract, and the registry of the platform's components.

A component is a package `mpaas/<name>/` whose `COMPONENT` says what it is:
its settings class, the resource kinds it reads live, how it builds what it
serves (routes, protocol servers, background tasks: `build`), its result codes
and docs, and the prefix of its metrics. The CLI (`mpaas <name>`), `mpaas dev`
(every component in one process) and the docs checks iterate `REGISTRY`; the
operator's workload builders take a component's name, port and the kinds it
may read from its entry. A new component is a package plus one line in
`REGISTRY` (and, to run on a cluster, an operator builder for the resource
that asks for it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import LiveConfig, Resources
from .resultcodes import ResultCode
from .service import ComponentSettings, Hook, component_app

# name -> the module whose COMPONENT describes it. The name is the CLI subcommand, the container's argument
# and the `app.kubernetes.io/component` label.
REGISTRY: dict[str, str] = {
    "gateway": "mpaas.gateway",
    "delivery": "mpaas.delivery",
    "push": "mpaas.push",
    "link": "mpaas.link",
    "sync": "mpaas.sync",
    "analytics": "mpaas.analytics",
}


@dataclass
class Served:
    """What a component's `build` returns: its main ASGI app and how to serve it."""

    app: Any  # an ASGI app with `.state` (made by service.component_app), `state.live` its LiveConfig
    # The lean HTTP/1.1 server's router (path -> handler) for paths served without the framework; with one, every
    # server of the component is `mpaas.http1`, else uvicorn (docs/benchmarks.md, "Serving stacks").
    router: Callable[[str], Any] | None = None
    body_limit: Callable[[], int] | None = None  # the largest request body, read per request (live config)
    extra: list[tuple[Any, str, int]] = field(default_factory=list)  # (app, host, port): an admin port, ...
    # The event loop of the process: uvloop (faster for small answers) or, False, asyncio's, whose sendfile(2)
    # the lean server's file replies use (uvloop has none: they go through a buffer there).
    uvloop: bool = True

    @property
    def live(self) -> LiveConfig[Any]:
        return self.app.state.live


@dataclass(frozen=True)
class Component:
    name: str
    summary: str  # one line, for `mpaas --help`
    kinds: tuple[str, ...]  # resource kinds read live (Secrets they name are watched by name)
    settings: type[ComponentSettings]
    build: Callable[[Any], Served]  # settings -> what it serves; starts nothing before the app's lifespan
    dev_port: int  # its port under `mpaas dev`
    port: int = 8080  # its container port in a pod the operator builds
    # Other ports it listens on, as (setting, port under `mpaas dev`): `mpaas dev` passes them, as
    # `DevPlatform(ports={"<name>.<setting>": port})` may override them (link's WebSocket port).
    dev_ports: tuple[tuple[str, int], ...] = ()
    codes: Sequence[ResultCode] = ()  # documented in docs/<name>.md, checked by a test
    # Several worker processes on one port (MPAAS_WORKERS, mpaas.workers): only on the lean HTTP/1.1 server,
    # which binds with SO_REUSEPORT, and only where what workers must share lives in shared stores.
    workers: bool = False
    # Refuses settings that cannot work together, with the message to print (e.g. workers without shared state).
    check: Callable[[Any], str | None] = lambda _settings: None

    @property
    def metrics_prefix(self) -> str:
        return f"mpaas_{self.name}_"

    @property
    def docs(self) -> str:
        return f"docs/{self.name}.md"


def load(name: str) -> Component:
    """The registered component `name` (its package is imported now)."""
    if name not in REGISTRY:
        raise KeyError(f"no component {name!r}; registered: {', '.join(REGISTRY)}")
    component: Component = importlib.import_module(REGISTRY[name]).COMPONENT
    if component.name != name:
        raise ValueError(f"{REGISTRY[name]}.COMPONENT is named {component.name!r}, registered as {name!r}")
    return component


def registered() -> list[Component]:
    return [load(name) for name in REGISTRY]


def resource_counts(
    name: str, kinds: Sequence[str], *, own: tuple[str, str] | None = None
) -> Callable[[ComponentSettings], Served]:
    """`build` for a component that so far reads its resources live and serves health, readiness (once they are
    loaded) and metrics, and nothing else: its readiness reason counts what it has read.

    `own`: (kind, environment variable) of the resource a pod of it serves, named by the operator's builder; its
    pods then report the generation of that resource they have applied (LiveConfig.report_applied)."""

    def build(settings: ComponentSettings) -> Served:
        live: LiveConfig[dict[str, int]] = LiveConfig(name, list(kinds), _count, {})

        async def start() -> None:
            resource = os.environ.get(own[1]) if own else None
            if own and resource:
                live.report_applied(own[0], resource, namespace=settings.namespace)
            if kinds:
                live.start(settings)
            else:
                live.recompile()

        def ready() -> tuple[bool, str]:
            if not live.ready.is_set():
                return False, "waiting for the first configuration"
            return True, ", ".join(f"{n} {k}" for k, n in live.current.items()) or "ready"

        stop: Hook = live.stop
        app = component_app(name, on_start=[start], on_stop=[stop], ready=ready)
        app.state.live = live
        return Served(app)

    return build


def _count(resources: Resources) -> dict[str, int]:
    return {kind: len(items) for kind, items in resources.items()}
