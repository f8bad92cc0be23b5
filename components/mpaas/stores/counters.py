"""Counters and HyperLogLogs: analytics tallies, gray-release counts, unique devices per day.

Keys are the caller's (with the store's prefix). Operations on several keys (pfcount of a union,
pfmerge) need them in one Redis Cluster slot, so the keys must share a `{tag}`, such as
`uv:{app-1}:2026-11-30` and `uv:{app-1}:2026-12-01`; keys from two slots are refused on a single
server too, so the mistake shows before production.

The in-process twin keeps a real HyperLogLog (2^14 six-bit registers in a byte each, 16 KiB per key,
standard error 0.81 % like Redis's), so its memory per key is bounded whatever is added. Its counts are
estimates close to, not equal to, Redis's (another hash function); both are exact enough to tell 0, 1
and a few apart.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import cast

import redis.asyncio as aioredis

from .expiring import ExpiringMap
from .redis_common import RedisRole, check_prefix, require_one_slot


class Counters(ABC):
    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    def _key(self, key: str) -> str:
        if not key:
            raise ValueError("empty key")
        return self.prefix + key

    def _one_slot(self, keys: Iterable[str]) -> list[str]:
        full = [self._key(k) for k in keys]
        require_one_slot(full)
        return full

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        """Add to a counter; the TTL is set when the counter is created and not extended after."""

    @abstractmethod
    async def get(self, key: str) -> int:
        """The counter's value, 0 when absent."""

    @abstractmethod
    async def pfadd(self, key: str, members: Iterable[str | bytes], *, ttl_seconds: float | None = None) -> bool:
        """Add to a HyperLogLog; True when its estimate may have changed. The TTL is set at creation."""

    @abstractmethod
    async def pfcount(self, *keys: str) -> int:
        """Estimated distinct members of one HyperLogLog, or of the union of several (one slot)."""

    @abstractmethod
    async def pfmerge(self, dest: str, *sources: str, ttl_seconds: float | None = None) -> None:
        """`dest` becomes the union of itself and `sources` (one slot); the TTL is set if given."""

    @abstractmethod
    async def delete(self, *keys: str) -> int: ...

    async def close(self) -> None:
        return None


def _as_bytes(member: str | bytes) -> bytes:
    return member.encode() if isinstance(member, str) else member


class RedisCounters(RedisRole, Counters):
    def __init__(self, redis: str | aioredis.Redis, *, prefix: str = "count:"):
        RedisRole.__init__(self, redis, prefix)
        Counters.__init__(self, prefix)

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        async with self.redis.pipeline(transaction=True) as p:  # one key: Cluster safe
            p.incrby(self._key(key), amount)
            if ttl_seconds:
                p.pexpire(self._key(key), int(ttl_seconds * 1000), nx=True)
            res = await p.execute()
        return int(res[0])

    async def get(self, key: str) -> int:
        value = await self.redis.get(self._key(key))
        return int(value) if value is not None else 0

    async def pfadd(self, key: str, members: Iterable[str | bytes], *, ttl_seconds: float | None = None) -> bool:
        values = [_as_bytes(m) for m in members]
        if not values:
            return False
        async with self.redis.pipeline(transaction=True) as p:
            p.pfadd(self._key(key), *values)
            if ttl_seconds:
                p.pexpire(self._key(key), int(ttl_seconds * 1000), nx=True)
            res = await p.execute()
        return bool(res[0])

    async def pfcount(self, *keys: str) -> int:
        return int(await self.redis.pfcount(*self._one_slot(keys)))

    async def pfmerge(self, dest: str, *sources: str, ttl_seconds: float | None = None) -> None:
        full = self._one_slot([dest, *sources])
        async with self.redis.pipeline(transaction=True) as p:
            p.pfmerge(full[0], *full[1:])
            if ttl_seconds:
                p.pexpire(full[0], int(ttl_seconds * 1000))
            await p.execute()

    async def delete(self, *keys: str) -> int:
        # One DEL per key: a multi-key DEL would need one slot.
        async with self.redis.pipeline(transaction=False) as p:
            for key in keys:
                p.delete(self._key(key))
            return sum(cast(list[int], await p.execute()))


_P = 14
_M = 1 << _P
_ALPHA_M2 = 0.7213 / (1 + 1.079 / _M) * _M * _M


class HyperLogLog:
    """Flajolet's HyperLogLog with linear counting for small sets; 64-bit BLAKE2b hashes."""

    def __init__(self, registers: bytes | None = None) -> None:
        self.registers = bytearray(registers) if registers is not None else bytearray(_M)

    def add(self, member: bytes) -> bool:
        h = int.from_bytes(hashlib.blake2b(member, digest_size=8).digest(), "little")
        index, rest = h & (_M - 1), h >> _P
        rank = (rest & -rest).bit_length() if rest else 64 - _P + 1  # position of the lowest set bit
        if rank > self.registers[index]:
            self.registers[index] = rank
            return True
        return False

    def merge(self, other: HyperLogLog) -> None:
        self.registers = bytearray(map(max, self.registers, other.registers))

    def count(self) -> int:
        regs = bytes(self.registers)
        harmonic = sum(regs.count(r) * 2.0**-r for r in range(64 - _P + 2))
        estimate = _ALPHA_M2 / harmonic
        zeros = regs.count(0)
        if estimate <= 2.5 * _M and zeros:
            estimate = _M * math.log(_M / zeros)
        return round(estimate)


class MemoryCounters(Counters):
    def __init__(self, *, prefix: str = "count:", clock: Callable[[], float] = time.monotonic):
        super().__init__(prefix)
        self._values: ExpiringMap[int | HyperLogLog] = ExpiringMap(clock)

    def _hll(self, key: str) -> HyperLogLog | None:
        value = self._values.get(key)
        if value is not None and not isinstance(value, HyperLogLog):
            raise TypeError(f"{key!r} holds a counter, not a HyperLogLog")  # Redis: WRONGTYPE
        return value

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        full = self._key(key)
        current = self._values.get(full)
        if isinstance(current, HyperLogLog):
            raise TypeError(f"{key!r} holds a HyperLogLog, not a counter")
        value = (current or 0) + amount
        self._values.set(full, value, ttl_seconds=ttl_seconds, keep_ttl=True)
        return value

    async def get(self, key: str) -> int:
        value = self._values.get(self._key(key))
        if isinstance(value, HyperLogLog):
            raise TypeError(f"{key!r} holds a HyperLogLog, not a counter")
        return value or 0

    async def pfadd(self, key: str, members: Iterable[str | bytes], *, ttl_seconds: float | None = None) -> bool:
        full = self._key(key)
        values = [_as_bytes(m) for m in members]
        if not values:
            return False
        hll = self._hll(full)
        created = hll is None
        hll = hll or HyperLogLog()
        changed = False
        for value in values:
            changed = hll.add(value) or changed
        self._values.set(full, hll, ttl_seconds=ttl_seconds, keep_ttl=True)
        return changed or created

    async def pfcount(self, *keys: str) -> int:
        union = HyperLogLog()
        for full in self._one_slot(keys):
            hll = self._hll(full)
            if hll is not None:
                union.merge(hll)
        return union.count()

    async def pfmerge(self, dest: str, *sources: str, ttl_seconds: float | None = None) -> None:
        full = self._one_slot([dest, *sources])
        existing = self._hll(full[0])
        union = HyperLogLog(bytes(existing.registers) if existing else None)
        for key in full[1:]:
            hll = self._hll(key)
            if hll is not None:
                union.merge(hll)
        if ttl_seconds:
            self._values.set(full[0], union, ttl_seconds=ttl_seconds)
        else:
            self._values.set(full[0], union, keep_ttl=True)

    async def delete(self, *keys: str) -> int:
        return sum(self._values.pop(self._key(k)) is not None for k in keys)
