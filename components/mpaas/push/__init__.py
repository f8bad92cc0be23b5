"""Push (MPS): messages to a device, a user, a group or everyone, over link or the phone makers' channels
(docs/push.md).

The API (`api.py`, signed per app) registers devices (`registry.py`) and accepts sends, persisted before it
answers (`accept.py`: Kafka, or the schedule in Redis); the fan-out (`fanout.py`) resolves each message to its
devices and routes each one (`routing.py`): over link when online (the link inboxes and broadcast streams,
through `mpaas.link.deliver.Deliverer`), else through its vendor channel, whose jobs the senders
(`senders.py`) send with the vendor clients (`vendors/`), configured by the PushChannel resources
(`config.py`). What happened to each message is kept in `state.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..apps import compile_apps
from ..component import Component, Served
from ..config import LiveConfig
from ..keyring import SECRET, KeyRing
from ..service import ComponentSettings, component_app
from ..stores import MemoryHotStore, RedisHotStore, open_eventlog
from ..stores.redis_common import connect_redis
from .accept import Accepter
from .api import Context, install
from .config import CHANNEL, EMPTY, GATEWAY, Clients, PushConfig, compiler, secrets_named
from .fanout import Fanout, LinkDelivery, Topics
from .receipts import LinkReceipts
from .registry import MemoryRegistry, RedisRegistry
from .senders import Senders
from .state import MemoryPushState, RedisPushState

log = logging.getLogger("mpaas.push")


class PushSettings(ComponentSettings):
    # Devices, message states, the schedule, nonces: redis://host:port/db, or memory:// (one process, mpaas dev).
    redis_url: str = "memory://"
    redis_prefix: str = "push:"
    # Link's Redis (its inboxes, routes and pod channels) and key prefix, as the link pods have them; "" : the
    # same Redis as redis_url.
    link_redis_url: str = ""
    link_redis_prefix: str = "link:"
    # Accepted sends and vendor jobs: kafka://host:port[,host:port], or memory:// (one process).
    kafka_url: str = "memory://"
    sends_topic: str = "mpaas.push.sends"
    vendor_topic: str = "mpaas.push.vendor"
    fanout_group: str = "mpaas-push-fanout"
    sender_group: str = "mpaas-push-senders"
    # Which parts run in this process: the API always; the fan-out, the vendor senders and the scheduler.
    fanout: bool = True
    senders: bool = True
    scheduler: bool = True
    # A sender pod of one vendor channel (the operator's push-<name> Deployment): its PushChannel's name, in
    # MPAAS_NAMESPACE; "": every vendor channel's senders.
    push_channel: str = ""


def build(settings: PushSettings) -> Served:
    keyring, clients = KeyRing(), Clients()
    # A sender pod of one channel reads that PushChannel alone (its Role names it); the API reads the apps too.
    kinds = [CHANNEL, SECRET] if settings.push_channel else [GATEWAY, CHANNEL, SECRET]
    live: LiveConfig[PushConfig] = LiveConfig(
        "push", kinds, compiler(keyring, clients), EMPTY, named={SECRET: secrets_named}
    )
    memory = settings.redis_url.startswith("memory:")
    redis: Any = None if memory else connect_redis(settings.redis_url)
    registry: Any = MemoryRegistry() if memory else RedisRegistry(redis, prefix=settings.redis_prefix)
    state: Any = MemoryPushState() if memory else RedisPushState(redis, prefix=settings.redis_prefix)
    hot: Any = MemoryHotStore() if memory else RedisHotStore(settings.redis_url)
    events = open_eventlog(settings.kafka_url)
    topics = Topics(settings.sends_topic, settings.vendor_topic, settings.fanout_group, settings.sender_group)
    link_url = settings.link_redis_url or settings.redis_url
    link_redis: Any = None
    deliverer: LinkDelivery | None = None
    if not link_url.startswith("memory:"):
        from ..link import receipt_log
        from ..link import stores as link_stores
        from ..link.deliver import Bus, Deliverer

        link_redis = redis if link_url == settings.redis_url and redis is not None else connect_redis(link_url)
        inbox, broadcasts, routes = link_stores(link_redis, settings.link_redis_prefix)
        bus = Bus(link_redis, prefix=f"{settings.link_redis_prefix}pod:")
        deliverer = Deliverer(
            inbox, routes, bus, broadcasts=broadcasts, receipts=receipt_log(link_redis, settings.link_redis_prefix)
        )

    def link() -> LinkDelivery | None:
        if deliverer is not None:
            return deliverer
        from .. import link as link_module  # `mpaas dev`: the link component of this process

        return link_module.LOCAL

    def current() -> PushConfig:
        return live.current

    def link_receipts() -> Any:
        found = link()
        return getattr(found, "receipts", None)

    accepter = Accepter(events, state, topics)
    delivered = LinkReceipts(state, hot, link_receipts)
    fanout = Fanout(events, state, registry, link, current, topics)
    only = (settings.namespace or "", settings.push_channel) if settings.push_channel else None
    senders = Senders(events, state, registry, hot, current, topics, only=only)
    apps_live = {"directory": compile_apps({})}

    def recompile_apps(_config: PushConfig) -> None:
        apps_live["directory"] = compile_apps(live.resources)

    async def start() -> None:
        live.subscribe(recompile_apps)
        if settings.push_channel:  # its own channel alone, watched by name; its pods report what they applied
            live.report_applied(CHANNEL, settings.push_channel, namespace=settings.namespace)
            live.start(settings, {CHANNEL: {"fieldSelector": f"metadata.name={settings.push_channel}"}})
        else:
            live.start(settings)
        await events.start()

        async def work() -> None:
            # Nothing is fanned out or sent on the empty configuration of a process starting: every device
            # would look unreachable.
            await live.ready.wait()
            if settings.fanout:
                fanout.start()
                delivered.start()
            if settings.senders:
                live.subscribe(senders.sync)
                senders.sync(live.current)
            if settings.scheduler:
                accepter.start_scheduler()

        starting.append(asyncio.get_running_loop().create_task(work(), name="push workers"))

    starting: list[asyncio.Task[None]] = []

    async def stop() -> None:
        for task in starting:
            task.cancel()
        await accepter.stop()
        await fanout.stop()
        await delivered.stop()
        await senders.stop()
        with contextlib.suppress(Exception):
            await events.close()
        await clients.close()
        await live.stop()
        await hot.close()
        if link_redis is not None and link_redis is not redis:
            await link_redis.aclose()
        if redis is not None:
            await redis.aclose()

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        config = live.current
        return True, f"{len(config.apps)} apps, {len(config.channels)} vendor channels"

    app = component_app("push", on_start=[start], on_stop=[stop], ready=ready)
    app.state.live = live
    install(
        app,
        Context(live, lambda: apps_live["directory"], registry, state, hot, accepter, fanout),
    )
    return Served(app)


COMPONENT = Component(
    name="push",
    summary="push messages: devices, users, tags; link or the vendors' channels; receipts and stats",
    kinds=(GATEWAY, CHANNEL),
    settings=PushSettings,
    build=build,
    dev_port=8082,
)
