"""MemberSets: named sets of ids (gray-release and push whitelists), replaceable as a whole.

`replace` swaps in a new set atomically: readers see the old members until the new ones are all
there, never a half-loaded list. Redis: the members go into a temporary key in chunked SADDs (no
single huge command, no long block of the server), then one MULTI/EXEC renames it over the set. The
temporary key shares the set's `{name}` hash tag, so RENAME stays inside one Cluster slot, and it
carries a TTL while loading, so a loader that dies leaves nothing behind.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Iterable
from typing import Any, cast

import redis.asyncio as aioredis

from .redis_common import RedisRole, require_one_slot, tagged

Members = Iterable[str | bytes] | AsyncIterable[str | bytes]

# Members per SADD while replacing a set.
REPLACE_CHUNK = 1000
# How long a half-loaded temporary set survives its loader (refreshed at each chunk).
LOADING_TTL_SECONDS = 600


def _as_bytes(member: str | bytes) -> bytes:
    return member.encode() if isinstance(member, str) else member


async def _chunks(members: Members, size: int) -> AsyncIterable[list[bytes]]:
    chunk: list[bytes] = []
    if isinstance(members, AsyncIterable):
        async for m in members:
            chunk.append(_as_bytes(m))
            if len(chunk) >= size:
                yield chunk
                chunk = []
    else:
        for m in members:
            chunk.append(_as_bytes(m))
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


class MemberSets(ABC):
    @abstractmethod
    async def add(self, name: str, *members: str | bytes) -> int:
        """Returns how many were new."""

    @abstractmethod
    async def remove(self, name: str, *members: str | bytes) -> int:
        """Returns how many were there."""

    @abstractmethod
    async def contains(self, name: str, member: str | bytes) -> bool: ...

    @abstractmethod
    async def contains_many(self, name: str, members: list[str | bytes]) -> list[bool]: ...

    @abstractmethod
    async def size(self, name: str) -> int: ...

    @abstractmethod
    async def replace(self, name: str, members: Members) -> int:
        """Make the set exactly `members` (an iterable or an async one, any length) atomically; returns its size."""

    @abstractmethod
    async def delete(self, name: str) -> bool: ...

    @abstractmethod
    async def add_capped(self, name: str, member: str | bytes, cap: int) -> bool:
        """Atomically: True when `member` is in the set, or was added because the set held fewer than `cap`;
        False when the set is full without it (exactly `cap` members admitted, whoever asks concurrently)."""

    async def close(self) -> None:
        return None


# KEYS[1] set; ARGV member, cap. One script: the check and the add cannot interleave with another replica's.
_ADD_CAPPED = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""


class RedisMemberSets(RedisRole, MemberSets):
    def __init__(self, redis: str | aioredis.Redis, *, prefix: str = "set:", chunk_size: int = REPLACE_CHUNK):
        RedisRole.__init__(self, redis, prefix)
        self.chunk_size = chunk_size
        self._add_capped: Any = None

    def key(self, name: str) -> str:
        return tagged(self.prefix, name)

    def loading_key(self, name: str) -> str:
        return tagged(self.prefix, name, "loading", secrets.token_hex(8))

    async def add(self, name: str, *members: str | bytes) -> int:
        if not members:
            return 0
        return int(await self.redis.sadd(self.key(name), *map(_as_bytes, members)))

    async def remove(self, name: str, *members: str | bytes) -> int:
        if not members:
            return 0
        return int(await self.redis.srem(self.key(name), *map(_as_bytes, members)))

    async def contains(self, name: str, member: str | bytes) -> bool:
        return bool(await self.redis.sismember(self.key(name), _as_bytes(member)))  # type: ignore[arg-type]

    async def contains_many(self, name: str, members: list[str | bytes]) -> list[bool]:
        if not members:
            return []
        found = await self.redis.smismember(self.key(name), [_as_bytes(m) for m in members])
        return [bool(x) for x in cast(list[int], found)]

    async def size(self, name: str) -> int:
        return int(await self.redis.scard(self.key(name)))

    async def replace(self, name: str, members: Members) -> int:
        target, loading = self.key(name), self.loading_key(name)
        require_one_slot([target, loading])
        loaded = False
        try:
            async for chunk in _chunks(members, self.chunk_size):
                async with self.redis.pipeline(transaction=False) as p:
                    p.sadd(loading, *chunk)
                    p.expire(loading, LOADING_TTL_SECONDS)
                    await p.execute()
                loaded = True
            async with self.redis.pipeline(transaction=True) as p:
                if loaded:
                    p.rename(loading, target)
                    p.persist(target)  # RENAME carries the loading TTL over
                else:
                    p.delete(target)  # an empty set is no key in Redis
                p.scard(target)
                res = await p.execute()
            return int(res[-1])
        except BaseException:
            if loaded:
                await self.redis.delete(loading)
            raise

    async def delete(self, name: str) -> bool:
        return bool(await self.redis.delete(self.key(name)))

    async def add_capped(self, name: str, member: str | bytes, cap: int) -> bool:
        if self._add_capped is None:
            self._add_capped = self.redis.register_script(_ADD_CAPPED)
        return bool(await self._add_capped(keys=[self.key(name)], args=[_as_bytes(member), int(cap)]))


class MemoryMemberSets(MemberSets):
    """In-process sets; `replace` builds the new set aside and swaps it in."""

    def __init__(self) -> None:
        self._sets: dict[str, set[bytes]] = {}

    def _get(self, name: str) -> set[bytes]:
        tagged("", name)  # the same names as Redis
        return self._sets.get(name, set())

    async def add(self, name: str, *members: str | bytes) -> int:
        current = self._get(name)
        new = {_as_bytes(m) for m in members} - current
        if new:
            self._sets[name] = current | new
        return len(new)

    async def remove(self, name: str, *members: str | bytes) -> int:
        current = self._get(name)
        gone = {_as_bytes(m) for m in members} & current
        if gone:
            current -= gone
            if not current:
                del self._sets[name]
        return len(gone)

    async def contains(self, name: str, member: str | bytes) -> bool:
        return _as_bytes(member) in self._get(name)

    async def contains_many(self, name: str, members: list[str | bytes]) -> list[bool]:
        current = self._get(name)
        return [_as_bytes(m) in current for m in members]

    async def size(self, name: str) -> int:
        return len(self._get(name))

    async def replace(self, name: str, members: Members) -> int:
        self._get(name)
        new: set[bytes] = set()
        async for chunk in _chunks(members, REPLACE_CHUNK):
            new.update(chunk)
        if new:
            self._sets[name] = new
        else:
            self._sets.pop(name, None)
        return len(new)

    async def delete(self, name: str) -> bool:
        return self._sets.pop(name, None) is not None

    async def add_capped(self, name: str, member: str | bytes, cap: int) -> bool:
        current, m = self._get(name), _as_bytes(member)
        if m in current:
            return True
        if len(current) >= cap:
            return False
        self._sets.setdefault(name, current).add(m)  # in place: a window's seats may number millions
        return True
