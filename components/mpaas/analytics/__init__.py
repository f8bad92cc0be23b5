"""Analytics (MAS): mobile logs and events in, through Kafka, and real-time figures out.

Built so far: ingestion (`ingest.py`) of the platform's JSON events, PostHog's capture API and Countly's `/i`,
from apps registered in an MpaasGateway, into the event log with back pressure; real-time aggregates per app
and day with crash groups (`realtime.py`, `crashes.py`, Android stacks retraced with the version's mapping in
`symbols.py`, Apple crash reports symbolicated with uploaded dSYMs in `dsyms.py`) as Prometheus metrics and a
query API (`query.py`); remote log pull (`logpull.py`); every event archived as Parquet and queried for
retention, funnels and counts with DuckDB (`history.py`) (docs/analytics.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ..apps import EMPTY, KIND, AppDirectory, compile_apps
from ..component import Component, Served
from ..config import LiveConfig
from ..service import component_app
from ..stores import FallbackHotStore, LocalObjectStore, open_eventlog, open_hotstore, open_objectstore
from . import codes
from . import history as history_
from .ingest import Ingest, Publisher
from .logpull import MAX_LOG_BYTES, LogPulls
from .objects_route import ObjectsRoute
from .query import create_query_app
from .realtime import consume_forever, open_aggregates
from .settings import AnalyticsSettings
from .symbols import Symbolicator


class AnalyticsASGI:
    """Upload paths go straight to the ingestion app (no framework per upload); with a local folder as the
    object store, its presigned URLs (device log uploads, downloads) are served here too; the rest to FastAPI."""

    def __init__(self, ingest: Ingest, app: Any, folder: LocalObjectStore | None = None):
        self.ingest, self.app, self.state = ingest, app, app.state
        self.folder = ObjectsRoute(folder, MAX_LOG_BYTES) if folder is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and Ingest.handles(scope["path"]):
            await self.ingest(scope, receive, send)
        elif self.folder is not None and scope["type"] == "http" and self.folder.handles(scope["path"]):
            await self.folder(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _build(settings: AnalyticsSettings) -> Served:
    live: LiveConfig[AppDirectory] = LiveConfig("analytics", [KIND], compile_apps, EMPTY)
    events = open_eventlog(settings.kafka_url)
    publisher = Publisher(events, settings.events_topic, settings.max_pending_events, settings.publish_timeout_seconds)
    aggregates = open_aggregates(settings.aggregates_url, settings.aggregates_prefix)
    hot = FallbackHotStore(open_hotstore(settings.redis_url))  # local buckets while Redis is away
    symbols, pulls, folder, archiver, history = None, None, None, None, None
    if settings.objects_url:
        objects = open_objectstore(
            settings.objects_url, access_key=settings.objects_access_key, secret_key=settings.objects_secret_key
        )
        symbols, pulls = Symbolicator(objects), LogPulls(hot, objects)
        folder = objects if isinstance(objects, LocalObjectStore) else None
        archiver = history_.Archiver(objects) if settings.history else None
        history = history_.History(
            objects,
            cache_dir=settings.history_cache_dir or None,
            cache_bytes=settings.history_cache_bytes,
            max_query_bytes=settings.history_max_query_bytes,
        )
    warm: list[asyncio.Task[bool]] = []

    async def start() -> None:
        live.start(settings)
        warm.append(asyncio.get_running_loop().create_task(publisher.start()))  # connect early, never block start

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        return True, f"{len(live.current.keys)} app keys"

    async def stop() -> None:
        for task in warm:
            task.cancel()

    async def realtime() -> None:
        await consume_forever(events, settings.events_topic, settings.realtime_group, aggregates, symbols=symbols)

    async def archive() -> None:
        assert archiver is not None
        await history_.archive_forever(
            events,
            settings.events_topic,
            settings.history_group,
            archiver,
            flush_seconds=settings.history_flush_seconds,
            flush_bytes=settings.history_flush_bytes,
        )

    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
    if settings.realtime:
        background["realtime"] = realtime
    if archiver is not None:
        background["history"] = archive

    async def close_history() -> None:
        if history is not None:
            history.close()

    app = component_app(
        "analytics",
        on_start=[start],
        on_stop=[stop, live.stop, publisher.close, aggregates.close, hot.close, close_history],
        ready=ready,
        background=background or None,
    )
    app.state.live = live
    app.state.publisher = publisher
    app.state.aggregates = aggregates
    query = create_query_app(live, aggregates, symbols, pulls)
    history_.add_routes(query, live, history)
    extra = [(query, settings.admin_host, settings.admin_port)] if settings.admin_port else []
    return Served(AnalyticsASGI(Ingest(settings, live, publisher, hot, pulls), app, folder), extra=extra)


COMPONENT = Component(
    name="analytics",
    summary="log and event ingestion into Kafka (PostHog and Countly compatible)",
    kinds=(KIND,),
    settings=AnalyticsSettings,
    build=_build,
    dev_port=8085,
    codes=codes.ALL,
)
