"""RouteTable: which link pod holds a device's connection, and when the device was last seen.

A connection claims its device's route and gets a `Lease`; heartbeats keep the route alive (it expires
`ttl_seconds` after the last one, so a pod that dies stops owning its devices without any clean-up),
and the route is removed only through the lease that set it. A device that reconnects elsewhere claims
again, and the old connection's late heartbeat or release then finds another lease in place and
changes nothing: a stale pod (or a stale connection on the same pod) never removes a newer route.

Last-seen is the time of the last claim, heartbeat or release by the owner, kept `seen_ttl_seconds`.
Redis: compare-and-set scripts, both keys of a device under its `{device}` hash tag (Cluster safe).
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import redis.asyncio as aioredis

from .expiring import ExpiringMap
from .redis_common import RedisRole, run_script, tagged


@dataclass(frozen=True)
class Lease:
    device: str
    pod: str
    token: str  # unique per claim: what heartbeat and release compare
    previous_pod: str | None  # whose route this claim replaced: that pod can close its stale connection

    @property
    def value(self) -> str:
        return f"{self.pod} {self.token}"


def _pod_of(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return text.rpartition(" ")[0]


class RouteTable(ABC):
    def __init__(self, *, seen_ttl_seconds: float) -> None:
        self.seen_ttl_seconds = seen_ttl_seconds

    @staticmethod
    def _new_lease(device: str, pod: str, previous: bytes | str | None) -> Lease:
        if not pod or " " in pod:
            raise ValueError(f"invalid pod name {pod!r}")
        return Lease(device, pod, secrets.token_hex(8), _pod_of(previous))

    @abstractmethod
    async def claim(self, device: str, pod: str, *, ttl_seconds: float) -> Lease:
        """Route `device` to `pod` for `ttl_seconds`, replacing any route (the newest connection wins)."""

    @abstractmethod
    async def heartbeat(self, lease: Lease, *, ttl_seconds: float) -> bool:
        """Extend the route if it is still this lease's (or recreate it if it lapsed); False if another took it."""

    @abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Remove the route only if it is still this lease's; True when removed."""

    @abstractmethod
    async def route(self, device: str) -> str | None:
        """The pod holding the device's connection, None when offline."""

    @abstractmethod
    async def routes(self, devices: Sequence[str]) -> dict[str, str]:
        """Pods of the online devices among `devices` (the offline ones are left out)."""

    @abstractmethod
    async def last_seen(self, device: str) -> float | None:
        """Unix time of the last claim, heartbeat or release, None if unknown or older than seen_ttl_seconds."""

    async def close(self) -> None:
        return None


# KEYS: route, seen. ARGV: lease value, ttl ms, now ms, seen ttl ms. Returns the previous route.
_CLAIM = """
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return previous
"""

# KEYS: route, seen. ARGV: lease value, ttl ms, now ms, seen ttl ms. Returns 1 when still the owner.
_HEARTBEAT = """
local current = redis.call('GET', KEYS[1])
if current ~= false and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
"""

# KEYS: route, seen. ARGV: lease value, now ms, seen ttl ms. Returns 1 when removed.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

SCRIPTS = {"claim": _CLAIM, "heartbeat": _HEARTBEAT, "release": _RELEASE}


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisRouteTable(RedisRole, RouteTable):
    def __init__(self, redis: str | aioredis.Redis, *, prefix: str = "presence:", seen_ttl_seconds: float = 30 * 86400):
        RedisRole.__init__(self, redis, prefix)
        RouteTable.__init__(self, seen_ttl_seconds=seen_ttl_seconds)
        self._scripts = {name: self.redis.register_script(text) for name, text in SCRIPTS.items()}

    def keys(self, device: str) -> list[str]:
        return [tagged(self.prefix, device, "route"), tagged(self.prefix, device, "seen")]

    async def claim(self, device: str, pod: str, *, ttl_seconds: float) -> Lease:
        lease = self._new_lease(device, pod, None)
        now = int(time.time() * 1000)
        args = [lease.value, _ms(ttl_seconds), now, _ms(self.seen_ttl_seconds)]
        previous = await run_script(self._scripts["claim"], self.keys(device), args)
        return replace(lease, previous_pod=_pod_of(cast(bytes | None, previous)))

    async def heartbeat(self, lease: Lease, *, ttl_seconds: float) -> bool:
        now = int(time.time() * 1000)
        args = [lease.value, _ms(ttl_seconds), now, _ms(self.seen_ttl_seconds)]
        return bool(await run_script(self._scripts["heartbeat"], self.keys(lease.device), args))

    async def release(self, lease: Lease) -> bool:
        args = [lease.value, int(time.time() * 1000), _ms(self.seen_ttl_seconds)]
        return bool(await run_script(self._scripts["release"], self.keys(lease.device), args))

    async def route(self, device: str) -> str | None:
        return _pod_of(cast(bytes | None, await self.redis.get(self.keys(device)[0])))

    async def routes(self, devices: Sequence[str]) -> dict[str, str]:
        # One GET per device, pipelined without a transaction: on a Cluster each goes to its own slot's node.
        async with self.redis.pipeline(transaction=False) as p:
            for device in devices:
                p.get(self.keys(device)[0])
            values = await p.execute()
        return {d: cast(str, _pod_of(v)) for d, v in zip(devices, values, strict=True) if v is not None}

    async def last_seen(self, device: str) -> float | None:
        value = await self.redis.get(self.keys(device)[1])
        return None if value is None else int(value) / 1000


class MemoryRouteTable(RouteTable):
    def __init__(self, *, seen_ttl_seconds: float = 30 * 86400, clock: Callable[[], float] = time.monotonic):
        super().__init__(seen_ttl_seconds=seen_ttl_seconds)
        self._routes: ExpiringMap[str] = ExpiringMap(clock)
        self._seen: ExpiringMap[float] = ExpiringMap(clock)

    def _saw(self, device: str) -> None:
        self._seen.set(device, time.time(), ttl_seconds=self.seen_ttl_seconds)

    async def claim(self, device: str, pod: str, *, ttl_seconds: float) -> Lease:
        tagged("", device)  # the same names as Redis
        lease = self._new_lease(device, pod, self._routes.get(device))
        self._routes.set(device, lease.value, ttl_seconds=ttl_seconds)
        self._saw(device)
        return lease

    async def heartbeat(self, lease: Lease, *, ttl_seconds: float) -> bool:
        current = self._routes.get(lease.device)
        if current is not None and current != lease.value:
            return False
        self._routes.set(lease.device, lease.value, ttl_seconds=ttl_seconds)
        self._saw(lease.device)
        return True

    async def release(self, lease: Lease) -> bool:
        if self._routes.get(lease.device) != lease.value:
            return False
        self._routes.pop(lease.device)
        self._saw(lease.device)
        return True

    async def route(self, device: str) -> str | None:
        return _pod_of(self._routes.get(device))

    async def routes(self, devices: Sequence[str]) -> dict[str, str]:
        found = {d: _pod_of(self._routes.get(d)) for d in devices}
        return {d: pod for d, pod in found.items() if pod is not None}

    async def last_seen(self, device: str) -> float | None:
        return self._seen.get(device)
