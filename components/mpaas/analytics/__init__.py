"""Analytics (MAS): mobile logs and events in, through Kafka.

Built so far: ingestion (`ingest.py`) of the platform's JSON events, PostHog's capture API and Countly's `/i`,
from apps registered in an MpaasGateway, into the event log with back pressure (docs/analytics.md). Not built
yet: real-time metrics, crash grouping and symbolication, history queries, remote log pull.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..component import Component, Served
from ..config import LiveConfig
from ..service import component_app
from ..stores import open_eventlog
from . import codes
from .apps import EMPTY, KIND, AppDirectory, compile_apps
from .ingest import Ingest, Publisher
from .settings import AnalyticsSettings


class AnalyticsASGI:
    """Upload paths go straight to the ingestion app (no framework per upload); the rest to FastAPI."""

    def __init__(self, ingest: Ingest, app: Any):
        self.ingest, self.app, self.state = ingest, app, app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and Ingest.handles(scope["path"]):
            await self.ingest(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _build(settings: AnalyticsSettings) -> Served:
    live: LiveConfig[AppDirectory] = LiveConfig("analytics", [KIND], compile_apps, EMPTY)
    publisher = Publisher(
        open_eventlog(settings.kafka_url),
        settings.events_topic,
        settings.max_pending_events,
        settings.publish_timeout_seconds,
    )
    warm: list[asyncio.Task[bool]] = []

    async def start() -> None:
        live.start(settings)
        warm.append(asyncio.get_running_loop().create_task(publisher.start()))  # connect early, never block start

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        return True, f"{len(live.current.keys)} app keys"

    app = component_app("analytics", on_start=[start], on_stop=[live.stop, publisher.close], ready=ready)
    app.state.live = live
    app.state.publisher = publisher
    return Served(AnalyticsASGI(Ingest(settings, live, publisher), app))


COMPONENT = Component(
    name="analytics",
    summary="log and event ingestion into Kafka (PostHog and Countly compatible)",
    kinds=(KIND,),
    settings=AnalyticsSettings,
    build=_build,
    dev_port=8085,
    codes=codes.ALL,
)
