"""What the Redis roles share: the client's settings, and key names that keep every key one
operation touches in one Redis Cluster hash slot.

A Cluster runs a multi-key script or transaction only when all its keys hash to one slot. Keys are
`prefix{name}:part`: Redis hashes only the text between the first `{` and the next `}`, so every part
of one name (an inbox, a route, a set) lands on the same slot whatever the part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError


def check_prefix(prefix: str) -> str:
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"key prefix {prefix!r} must not contain braces: the hash tag is the name's")
    return prefix


def tagged(prefix: str, name: str, *parts: str) -> str:
    """`prefix{name}:part...`; a name with braces or an empty one would move the hash tag, so it is refused."""
    if not name or "{" in name or "}" in name:
        raise ValueError(f"invalid name {name!r}: non-empty, without braces")
    return f"{prefix}{{{name}}}" + "".join(f":{p}" for p in parts)


def slot(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def require_one_slot(keys: Sequence[str]) -> None:
    """Refuse an operation a Cluster would refuse (CROSSSLOT), on a single server too, so it shows in tests."""
    if len({slot(k) for k in keys}) > 1:
        raise ValueError(f"keys {list(keys)!r} hash to different Redis Cluster slots: give them one {{tag}}")


async def run_script(script: AsyncScript, keys: list[str], args: Sequence[Any]) -> Any:
    """Every role's scripts go through here, so none can run with keys from two slots."""
    require_one_slot(keys)
    return await script(keys=keys, args=list(args))


MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 5


def connect_redis(url: str) -> aioredis.Redis:
    """Short timeouts; a pooled connection the server closed (a Redis restart, an idle timeout) fails its
    next command, so it is retried once at once on a fresh connection instead of being reported as an outage.
    Past `MAX_CONNECTIONS` commands in flight, a command waits (up to `POOL_WAIT_SECONDS`) for a connection
    instead of failing at once as redis-py's default pool does.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    client = aioredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as from_url does: closing the client closes its pool
    return client


class RedisRole:
    """A role's Redis client: its own (from a URL, closed with the role) or one shared with other roles."""

    def __init__(self, redis: str | aioredis.Redis, prefix: str):
        self._owns_client = isinstance(redis, str)
        self.redis: aioredis.Redis = connect_redis(redis) if isinstance(redis, str) else redis
        self.prefix = check_prefix(prefix)

    async def close(self) -> None:
        if self._owns_client:
            await self.redis.aclose()
