"""The components that so far only read their resources live and serve health and metrics.

Each entry names the kinds the component will act on; `create_app` gives it
the shared service skeleton (`/healthz`, `/readyz` once its resources are
loaded, `/metrics`). The gateway has its own module: `mpaas.gateway`.
"""

from __future__ import annotations

from fastapi import FastAPI

from .config import LiveConfig, Resources
from .service import ComponentSettings, component_app

# component -> the resource kinds it reads
KINDS_READ: dict[str, list[str]] = {
    "delivery": ["DeliveryTask"],
    "push": ["PushChannel"],
    "link": ["PushChannel"],
    "sync": ["SyncTopic"],
    "analytics": [],
}


def _count(resources: Resources) -> dict[str, int]:
    return {kind: len(items) for kind, items in resources.items()}


def create_app(name: str, settings: ComponentSettings | None = None) -> FastAPI:
    settings = settings or ComponentSettings()
    kinds = KINDS_READ[name]
    live: LiveConfig[dict[str, int]] = LiveConfig(name, kinds, _count, {})

    async def start() -> None:
        if kinds:
            live.start(settings)
        else:
            live.recompile()

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        return True, ", ".join(f"{n} {k}" for k, n in live.current.items()) or "ready"

    app = component_app(name, on_start=[start], on_stop=[live.stop], ready=ready)
    app.state.live = live
    return app
