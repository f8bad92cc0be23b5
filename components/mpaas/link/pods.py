"""The link pods of a deployment, with their load: what `/dispatch` answers and where a draining pod sends its
clients.

Each pod writes its record (address, connections, capacity) into the hot store every PUBLISH_SECONDS, kept
RECORD_TTL_SECONDS: a pod that dies drops out of the list within that. Every pod reads the whole list as often
and answers from memory, so `/dispatch` costs no store call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mpaas.link")

PUBLISH_SECONDS = 2.0
RECORD_TTL_SECONDS = 10
MAX_ADDRESSES = 8  # in a /dispatch answer or a GOAWAY


@dataclass(frozen=True)
class Pod:
    name: str
    address: str  # wss://host:port/v1/link, as clients reach this pod
    connections: int
    capacity: int
    draining: bool = False
    sent: int = 0  # messages sent since the process started (the operator's deliveries per second)

    @property
    def load(self) -> float:
        return self.connections / self.capacity if self.capacity else 1.0


class Pods:
    """This pod's record in the store, and everyone's, refreshed in the background."""

    def __init__(self, redis: Any, prefix: str, me: Callable[[], Pod]):
        self.redis, self.prefix, self.me = redis, prefix, me
        self.known: list[Pod] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="link pods")

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.publish()
                await self.refresh()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failing:
                    log.warning("link: the pods list could not be read or written: %r", e)
                failing = True
            await asyncio.sleep(PUBLISH_SECONDS)

    async def publish(self) -> None:
        if self.redis is None:
            self.known = [self.me()]
            return
        me = self.me()
        record = json.dumps(
            {
                "address": me.address,
                "connections": me.connections,
                "capacity": me.capacity,
                "draining": me.draining,
                "sent": me.sent,
                "at": time.time(),
            }
        )
        async with self.redis.pipeline(transaction=False) as p:
            p.set(f"{self.prefix}{me.name}", record, ex=RECORD_TTL_SECONDS)
            p.sadd(f"{self.prefix}names", me.name)
            await p.execute()

    async def refresh(self) -> None:
        if self.redis is None:
            return
        names = sorted(
            n.decode() if isinstance(n, bytes) else n for n in await self.redis.smembers(f"{self.prefix}names")
        )
        if not names:
            self.known = []
            return
        values = await self.redis.mget([f"{self.prefix}{n}" for n in names])
        pods, gone = [], []
        for name, raw in zip(names, values, strict=True):
            if raw is None:
                gone.append(name)
                continue
            try:
                r = json.loads(raw)
                pods.append(
                    Pod(name, str(r["address"]), int(r["connections"]), int(r["capacity"]), bool(r["draining"]))
                )
            except (ValueError, KeyError, TypeError):
                gone.append(name)
        if gone:
            await self.redis.srem(f"{self.prefix}names", *gone)
        self.known = pods

    async def leave(self) -> None:
        """Drop this pod's record at once (drain): nobody is sent here any more."""
        if self.redis is None:
            return
        with contextlib.suppress(Exception):
            await self.redis.delete(f"{self.prefix}{self.me().name}")

    def ranked(self, *, exclude: str = "") -> list[Pod]:
        """Pods taking connections, lightest first."""
        live = [p for p in self.known if p.name != exclude and not p.draining and p.connections < p.capacity]
        return sorted(live, key=lambda p: (p.load, p.name))[:MAX_ADDRESSES]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def dispatch_body(pods: list[Pod]) -> bytes:
    return json.dumps(
        {"addresses": [{"url": p.address, "load": round(p.load, 3)} for p in pods], "at": int(time.time())}
    ).encode()
