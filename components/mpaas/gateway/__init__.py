"""The mobile gateway (MGS): mobile RPC routed by operation type, with signatures, encryption, rate limits,
sessions, cache, mock, canary and resilient forwarding (`app.py`, `stages/`)."""

from __future__ import annotations

from ..component import Component, Served
from . import codes
from .settings import GatewaySettings


def _build(settings: GatewaySettings) -> Served:
    from .app import create_app

    app = create_app(settings)
    extra = [(app.admin, settings.admin_host, settings.admin_port)] if settings.admin_port else []
    return Served(app, router=app.route, body_limit=app.body_limit, extra=extra)


def _check(settings: GatewaySettings) -> str | None:
    if settings.workers > 1 and settings.redis_url.startswith("memory://"):
        return "MPAAS_WORKERS > 1 needs MPAAS_REDIS_URL: nonces and rate limits must be shared by the workers"
    return None


COMPONENT = Component(
    name="gateway",
    summary="the mobile RPC gateway (MpaasGateway)",
    kinds=("MpaasGateway",),
    settings=GatewaySettings,
    build=_build,
    dev_port=8080,
    codes=codes.ALL,
    workers=True,
    check=_check,
)
