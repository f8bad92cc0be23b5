"""Delivery to devices: the server-side API push and sync use (docs/link.md, "Delivering").

`Deliverer.deliver` appends the message to each device's inbox (so it is kept whatever happens next), then
tells the pod that holds each online device, through that pod's channel on the bus (Redis pub/sub), or
directly when that pod is this process. A notice lost on the way (pub/sub keeps none for a pod that is not
listening) delays a message, never loses it: at each heartbeat the pod compares the inbox with what it sent,
and a device pulls from its last ack whenever it connects; the inbox holds the message until its TTL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from ..stores.presence import RouteTable
from ..stores.seqlog import SequencedLog
from .frames import Message
from .inbox import Inbox

log = logging.getLogger("mpaas.link")

MAX_DEVICES = 1000  # devices in one call
BROADCASTS = "broadcasts"  # the channel every pod listens to, besides its own
DIRECT_MAX_PAYLOAD = 1024  # a message this small travels with its notice: the pod sends it without a read


@dataclass(frozen=True)
class Delivered:
    device_id: str
    seq: int  # its number in the device's inbox
    online: bool  # a link pod held the device's connection when it was appended


class Local(Protocol):
    """What the bus hands this process: notices for devices it holds, and routes other pods took over."""

    def notify(self, device: str, message: Message, *, small: bool, at: float) -> None: ...

    def replaced(self, device: str, token: str) -> None: ...

    def broadcast(self, app_key: str, message: Message, *, small: bool, at: float) -> None: ...


class Bus:
    """The pods' channels. A message is notices, a line each, of tab-separated fields:
    `N device seq flags expires_ms sent_ms [payload base64]` or `R device lease-token`; broadcasts go on one
    channel every pod listens to: `B app/workspace seq flags expires_ms sent_ms [payload base64]`."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "link:pod:"):
        self.redis, self.prefix = redis, prefix
        self._task: asyncio.Task[None] | None = None

    async def notify(self, pod: str, device: str, message: Message) -> None:
        await self.redis.publish(self.prefix + pod, _notice(device, message))

    async def notify_many(self, pod: str, items: Sequence[tuple[str, Message]]) -> None:
        """One publish for all of a call's notices to one pod: a line each."""
        await self.redis.publish(self.prefix + pod, "\n".join(_notice(device, m) for device, m in items))

    async def replaced(self, pod: str, device: str, token: str) -> None:
        await self.redis.publish(self.prefix + pod, f"R\t{device}\t{token}")

    async def broadcast(self, app_key: str, message: Message) -> None:
        await self.redis.publish(self.prefix + BROADCASTS, "B" + _notice(app_key, message)[1:])

    def listen(self, pod: str, local: Local) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(pod, local), name="link bus")

    async def _listen(self, pod: str, local: Local) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.prefix + pod, self.prefix + BROADCASTS)
                try:
                    async for item in pubsub.listen():
                        if item.get("type") == "message":
                            _handle(item["data"], local)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: devices catch up by pulling when they next hear from us
                log.warning("link: the pod channel failed, listening again in 1 s: %r", e)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _notice(device: str, m: Message) -> str:
    payload = base64.b64encode(m.payload).decode() if len(m.payload) <= DIRECT_MAX_PAYLOAD else ""
    return f"N\t{device}\t{m.seq}\t{m.flags}\t{m.expires_at_ms}\t{int(time.time() * 1000)}\t{payload}"


def _handle(data: bytes | str, local: Local) -> None:
    text = data.decode() if isinstance(data, bytes) else data
    for line in text.split("\n"):
        _handle_line(line, local)


def _handle_line(text: str, local: Local) -> None:
    parts = text.split("\t")
    try:
        if parts[0] in ("N", "B") and len(parts) == 7:
            seq, flags, expires, sent = (int(x) for x in parts[2:6])
            payload = base64.b64decode(parts[6]) if parts[6] else b""
            age = max(time.time() - sent / 1000, 0.0)
            message, small, at = Message(seq, payload, flags, expires), bool(parts[6]), time.monotonic() - age
            if parts[0] == "N":
                local.notify(parts[1], message, small=small, at=at)
            else:
                local.broadcast(parts[1], message, small=small, at=at)
        elif parts[0] == "R" and len(parts) == 3:
            local.replaced(parts[1], parts[2])
    except ValueError:
        log.warning("link: a notice that does not parse: %r", text[:200])


class Deliverer:
    def __init__(
        self,
        inbox: Inbox,
        routes: RouteTable,
        bus: Bus | None,
        pod: str = "",
        local: Local | None = None,
        broadcasts: Inbox | None = None,
        receipts: SequencedLog | None = None,
    ):
        self.inbox, self.routes, self.bus, self.pod, self.local = inbox, routes, bus, pod, local
        self.broadcasts = broadcasts or inbox
        self.receipts = receipts  # the link pods' log of acked RECEIPT messages (server.RECEIPT_LOG)

    async def broadcast(
        self,
        app_key: str,
        payload: bytes,
        *,
        urgent: bool = True,
        ttl_seconds: float = 86400,
        dedupe: str | None = None,
    ) -> Message:
        """One message to every device of an app (`app/workspace`): appended once to the app's broadcast stream,
        then every link pod tells its devices of that app. A device offline gets it when it reconnects within
        the TTL (if it had read a broadcast before: a device new to broadcasts starts at the newest). `dedupe`:
        the message's id; a broadcast retried with it is appended once (and announced again)."""
        if ttl_seconds <= 0:
            raise ValueError("ttlSeconds must be positive")
        message = await self.broadcasts.append(app_key, payload, urgent=urgent, ttl_seconds=ttl_seconds, dedupe=dedupe)
        if self.bus is not None:
            await self.bus.broadcast(app_key, message)
        elif self.local is not None:
            self.local.broadcast(app_key, message, small=len(payload) <= DIRECT_MAX_PAYLOAD, at=time.monotonic())
        return message

    async def deliver(
        self,
        app_id: str,
        workspace_id: str,
        device_ids: Sequence[str],
        payload: bytes,
        *,
        urgent: bool = True,
        ttl_seconds: float = 86400,
        dedupe: str | None = None,
        receipt: bool = False,
    ) -> list[Delivered]:
        """Append `payload` to each device's inbox and notify the online ones; ValueError for bad arguments.
        Raises when the store fails: what was appended before stays (a retry may deliver it twice, unless it
        passes the same `dedupe` id: the message's id, whose inbox entries are then not appended again).
        `receipt`: the payload is JSON with a messageId, and each device's ack of it goes to the receipt log."""
        if not device_ids or len(device_ids) > MAX_DEVICES:
            raise ValueError(f"deliver to 1 to {MAX_DEVICES} devices at a time")
        if ttl_seconds <= 0:
            raise ValueError("ttlSeconds must be positive")
        keys = [f"{app_id}/{workspace_id}/{d}" for d in device_ids]
        appended = await self.inbox.append_many(
            keys, payload, urgent=urgent, ttl_seconds=ttl_seconds, dedupe=dedupe, receipt=receipt
        )
        # The routes after the appends: a device that connects in between reads the message in its WELCOME.
        where = await self.routes.routes(keys)
        by_pod: dict[str, list[tuple[str, Message]]] = defaultdict(list)
        for key, message in zip(keys, appended, strict=True):
            pod = where.get(key)
            if pod is not None and message is not None:
                by_pod[pod].append((key, message))
        now = time.monotonic()
        for pod, items in by_pod.items():
            if pod == self.pod and self.local is not None:
                for key, message in items:
                    self.local.notify(key, message, small=len(message.payload) <= DIRECT_MAX_PAYLOAD, at=now)
            elif self.bus is not None:  # without a bus (one process, `mpaas dev`) every route is this process's
                await self.bus.notify_many(pod, items)
        return [
            Delivered(d, m.seq if m is not None else 0, k in where)
            for d, k, m in zip(device_ids, keys, appended, strict=True)
        ]

    async def online(self, app_id: str, workspace_id: str, device_ids: Sequence[str]) -> set[str]:
        """The devices a link pod holds now."""
        prefix = f"{app_id}/{workspace_id}/"
        where = await self.routes.routes([prefix + d for d in device_ids])
        return {k.removeprefix(prefix) for k in where}

    async def presence(self, app_id: str, workspace_id: str, device_id: str) -> tuple[str | None, float | None]:
        """(the pod holding the device, None when offline; when it was last seen, epoch seconds)."""
        key = f"{app_id}/{workspace_id}/{device_id}"
        return await self.routes.route(key), await self.routes.last_seen(key)
