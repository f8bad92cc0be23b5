"""Link: the long-connection gateway phones hold open, carrying push and sync messages (docs/link.md).

Built: the protocol (`frames.py`: WebSocket binary frames, subprotocol mpaas-link.v1) served by picows
(`server.py`: one small `Session` per connection, deadlines in one-second buckets), device tokens (`tokens.py`,
keys from the Secret the Link PushChannel names), inboxes numbered per device with acks and TTLs
(`inbox.py`, Redis) and each app's broadcast stream, notify-then-pull, the adaptive heartbeat (`heartbeat.py`),
one connection per device across pods (the route table), delivery for push and sync (`deliver.py`: the inbox,
then the pod holding the device, over Redis pub/sub) with its HTTP routes, /dispatch and probes (`pods.py`),
drain on SIGTERM, and the clients (`client.py`, `sdk/link-client.ts`). Each pod publishes its load and what it
sent (`pods.py`), which the operator writes into the channel's status.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import socket
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import Field

from ..component import Component, Served
from ..config import LiveConfig
from ..keyring import SECRET, KeyRing
from ..service import ComponentSettings, component_app
from ..stores import (
    MemoryHotStore,
    MemoryRouteTable,
    MemorySequencedLog,
    RedisHotStore,
    RedisRouteTable,
    RouteTable,
)
from ..stores.redis_common import connect_redis
from ..stores.seqlog import RedisSequencedLog, SequencedLog
from . import frames
from .config import EMPTY, KIND, LinkConfig, compiler, token_secrets
from .deliver import MAX_DEVICES, Bus, Deliverer
from .inbox import IDLE_DAYS, MAX_MESSAGES, MAX_PAYLOAD, MAX_TTL_SECONDS, RECEIPT_ENTRIES, RECEIPT_SECONDS, Inbox
from .pods import Pod, Pods
from .server import HeartbeatMemory, Limits, LinkServer

log = logging.getLogger("mpaas.link")


class LinkSettings(ComponentSettings):
    link_host: str = ""  # the WebSocket's address; empty: MPAAS_HOST's
    link_port: int = Field(default=8443, ge=1, le=65535)  # the WebSocket port (the PushChannel's link.port)
    # Redis: inboxes, routes, heartbeats and the pods' channels. memory://: one process alone (`mpaas dev`).
    redis_url: str = "memory://"
    redis_prefix: str = "link:"
    link_max_connections: int = Field(default=100_000, ge=1)
    pod_name: str = Field(default="", validation_alias="POD_NAME")  # the downward API's; else host and pid
    pod_ip: str = Field(default="", validation_alias="POD_IP")
    # How clients reach this pod, as /dispatch and GOAWAY name it. Empty: ws://{POD_IP or MPAAS_HOST}:{port}/v1/link.
    link_public_url: str = ""


def _pod(settings: LinkSettings) -> str:
    return settings.pod_name or f"{socket.gethostname()}-{os.getpid()}"


def stores(redis: Any, prefix: str) -> tuple[Inbox, Inbox, RouteTable]:
    """The inboxes, the broadcast streams and the route table, in Redis under `prefix` (link:) or, with no
    client, in this process. Push builds its Deliverer on the same ones (mpaas.push)."""
    if redis is None:
        return (
            Inbox(MemorySequencedLog(max_len=MAX_MESSAGES, overflow="drop_oldest", idle_ttl_seconds=IDLE_DAYS * 86400,
                                     time_numbers=True)),
            Inbox(MemorySequencedLog(max_len=MAX_MESSAGES, overflow="drop_oldest", idle_ttl_seconds=IDLE_DAYS * 86400,
                                     time_numbers=True)),
            MemoryRouteTable(),
        )  # fmt: skip
    # time_numbers: a removed inbox created again never reuses a number a device acked
    logs = [
        RedisSequencedLog(redis, prefix=f"{prefix}{part}:", max_len=MAX_MESSAGES, overflow="drop_oldest",
                          idle_ttl_seconds=IDLE_DAYS * 86400, time_numbers=True)
        for part in ("inbox", "broadcast")
    ]  # fmt: skip
    return Inbox(logs[0]), Inbox(logs[1]), RedisRouteTable(redis, prefix=f"{prefix}route:")


def receipt_log(redis: Any, prefix: str) -> SequencedLog:
    """Where link pods write the acks of RECEIPT messages for push to count (server.RECEIPT_LOG): bounded, read
    by push as reader "push"."""
    if redis is None:
        return MemorySequencedLog(max_len=RECEIPT_ENTRIES, overflow="drop_oldest", idle_ttl_seconds=RECEIPT_SECONDS)
    return RedisSequencedLog(
        redis, prefix=f"{prefix}receipts:", max_len=RECEIPT_ENTRIES, overflow="drop_oldest",
        idle_ttl_seconds=RECEIPT_SECONDS,
    )  # fmt: skip


# The Deliverer of the link component running in this process with its stores in memory (`mpaas dev`): push
# in the same process delivers through it.
LOCAL: Deliverer | None = None


def build(settings: LinkSettings) -> Served:
    keyring = KeyRing()
    live: LiveConfig[LinkConfig] = LiveConfig(
        "link", [KIND, SECRET], compiler(keyring), EMPTY, named={SECRET: token_secrets}
    )
    prefix = settings.redis_prefix
    redis: Any = None
    if settings.redis_url.startswith("memory:"):
        hot: Any = MemoryHotStore()
    else:
        redis = connect_redis(settings.redis_url)
        hot = RedisHotStore(settings.redis_url)
    inbox, broadcasts, routes = stores(redis, prefix)
    receipts = receipt_log(redis, prefix)
    pod = _pod(settings)
    server = LinkServer(
        lambda: live.current,
        inbox,
        routes,
        HeartbeatMemory(hot, prefix=f"{prefix}hb:"),
        pod,
        Limits(max_connections=settings.link_max_connections),
        broadcasts,
        receipts,
    )
    bus = Bus(redis, prefix=f"{prefix}pod:") if redis is not None else None
    server.bus = bus
    address = settings.link_public_url or (
        f"ws://{settings.pod_ip or settings.link_host or settings.host}:{settings.link_port}/v1/link"
    )

    def me() -> Pod:
        return Pod(pod, address, len(server.sessions), server.limits.max_connections, server.draining, server.sent)

    # The operator's link builder names the channel its pods serve: the pods of one channel dispatch to each other.
    channel = os.environ.get("MPAAS_PUSH_CHANNEL", "")
    pods = Pods(redis, f"{prefix}pods:{settings.namespace or ''}/{channel}:", me)
    server.pods = pods
    deliverer = Deliverer(inbox, routes, bus, pod, server, broadcasts, receipts)
    if redis is None:
        global LOCAL
        LOCAL = deliverer
    ws_server: Any = None

    async def start() -> None:
        nonlocal ws_server
        from picows import ws_create_server

        live.subscribe(lambda _config: server.close_revoked())
        selectors = None
        if channel:  # its own channel alone, watched by name (its Role names it)
            live.report_applied(KIND, channel, namespace=settings.namespace)
            selectors = {KIND: {"fieldSelector": f"metadata.name={channel}"}}
        live.start(settings, selectors)
        server.start()
        pods.start()
        if bus is not None:
            bus.listen(pod, server)
        ws_server = await ws_create_server(
            server.listener,
            settings.link_host or settings.host,
            settings.link_port,
            backlog=4096,
            max_frame_size=frames.MAX_FRAME,
            read_buffer_init_size=1024,  # docs/benchmarks.md: 8.7 KiB per idle connection
            use_aiofastnet=False,
            websocket_handshake_timeout=10,
        )

    async def stop() -> None:
        # Drain: nobody is dispatched here or connects any more; the clients are sent elsewhere in waves.
        server.draining = True
        await pods.leave()
        if ws_server is not None:
            ws_server.close()
        with contextlib.suppress(Exception):  # the latest load of the others; the store away: the last known
            await pods.refresh()
        await server.drain(settings.drain_seconds)
        await pods.stop()
        await server.stop()
        if bus is not None:
            await bus.close()
        await live.stop()
        await hot.close()
        if redis is not None:
            await redis.aclose()

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        if ws_server is None:
            return False, "not listening yet"
        return True, f"{len(server.sessions)} connections, {len(live.current.apps)} apps"

    app = component_app("link", on_start=[start], on_stop=[stop], ready=ready)
    app.state.live = live
    app.state.link = server

    @app.post("/v1/link/deliver")
    async def deliver(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body is a JSON object")
            app_id, workspace_id = _text(body, "appId"), _text(body, "workspaceId")
            devices = body.get("deviceIds")
            if not isinstance(devices, list) or not all(
                isinstance(d, str) and frames.valid_device_id(d) for d in devices
            ):
                raise ValueError(
                    f"deviceIds: a list of 1 to {MAX_DEVICES} device ids, each 1-128 characters without control "
                    "characters, spaces or braces"
                )
            payload, urgent, ttl = _message(body)
            done = await deliverer.deliver(app_id, workspace_id, devices, payload, urgent=urgent, ttl_seconds=ttl)
        except (ValueError, binascii.Error) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:  # the store: what was appended stays, a retry may deliver it twice
            log.warning("link: delivery failed on the store: %r", e)
            return JSONResponse({"error": f"the store did not answer: {e!r}"[:300]}, status_code=503)
        return JSONResponse({"results": [{"deviceId": d.device_id, "seq": d.seq, "online": d.online} for d in done]})

    @app.post("/v1/link/broadcast")
    async def broadcast(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body is a JSON object")
            app_id, workspace_id = _text(body, "appId"), _text(body, "workspaceId")
            payload, urgent, ttl = _message(body)
            sent = await deliverer.broadcast(f"{app_id}/{workspace_id}", payload, urgent=urgent, ttl_seconds=ttl)
        except (ValueError, binascii.Error) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:
            log.warning("link: broadcast failed on the store: %r", e)
            return JSONResponse({"error": f"the store did not answer: {e!r}"[:300]}, status_code=503)
        return JSONResponse({"seq": sent.seq})

    @app.get("/v1/link/presence/{app_id}/{workspace_id}/{device_id}")
    async def presence(app_id: str, workspace_id: str, device_id: str) -> JSONResponse:
        if not (
            frames.valid_app_id(app_id) and frames.valid_app_id(workspace_id) and frames.valid_device_id(device_id)
        ):
            return JSONResponse({"error": "not an app, workspace or device id"}, status_code=400)
        pod, seen = await deliverer.presence(app_id, workspace_id, device_id)
        return JSONResponse({"online": pod is not None, "pod": pod, "lastSeen": seen})

    return Served(app)


def _message(body: dict[str, Any]) -> tuple[bytes, bool, int]:
    raw = body.get("payload")
    if not isinstance(raw, str):
        raise ValueError("payload: base64 of the message's bytes")
    payload = base64.b64decode(raw, validate=True)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload: at most {MAX_PAYLOAD} bytes")
    urgent = body.get("urgent", True)
    ttl = body.get("ttlSeconds", 86400)
    if not isinstance(urgent, bool):
        raise ValueError("urgent: true or false")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"ttlSeconds: 1 to {MAX_TTL_SECONDS}")
    return payload, urgent, ttl


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not frames.valid_app_id(value):
        raise ValueError(f"{name}: 1-64 letters, digits, '_', '.' or '-'")
    return value


COMPONENT = Component(
    name="link",
    summary="long connections to phones: WebSocket, per-device inboxes, delivery for push and sync",
    kinds=(KIND,),
    settings=LinkSettings,
    build=build,
    dev_port=8083,
    dev_ports=(("link_port", 8443),),
)
