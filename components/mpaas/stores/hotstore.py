"""HotStore: small, fast, shared state (nonces, counters, token buckets, ordered oplogs)."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from .redis_common import connect_redis

log = logging.getLogger(__name__)

# Atomic token bucket: refill by elapsed time, then take `n` if there are enough.
# KEYS[1] bucket; ARGV rate/s, burst, n, now (ms). Returns 1 when taken.
_TOKEN_BUCKET = """
local rate, burst, n, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local ok = 0
if tokens >= n then tokens = tokens - n; ok = 1 end
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
"""

# Append with an integer id, atomically: the next id is the stream's newest plus one, read and written in
# one script, so concurrent appenders never write out of order. Trimming keeps the newest entry, so it is
# always there to count from. One key: safe on a Redis Cluster. KEYS: stream; ARGV: value, maxlen (0 = none).
_APPEND = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 1
if #newest > 0 then seq = tonumber(string.match(newest[1][1], '^(%d+)')) + 1 end
local id = string.format('%d-1', seq)
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], id, 'v', ARGV[1])
else
  redis.call('XADD', KEYS[1], id, 'v', ARGV[1])
end
return seq
"""


class HotStore(ABC):
    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None: ...

    @abstractmethod
    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool:
        """True if the key was free and is now ours (nonce replay checks, locks)."""

    @abstractmethod
    async def delete(self, key: str) -> bool: ...

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        """Add to a counter; the TTL is set when the counter is created."""

    @abstractmethod
    async def take_tokens(self, key: str, *, rate: float, burst: int, n: int = 1) -> bool:
        """Token bucket shared by every client of the store."""

    @abstractmethod
    async def append(self, stream: str, value: bytes, *, max_len: int | None = None) -> int:
        """Append to an ordered log; returns the new entry's id (monotonic per stream, from 1)."""

    @abstractmethod
    async def read_after(self, stream: str, after_id: int, *, count: int = 100) -> list[tuple[int, bytes]]:
        """Entries with id > after_id, oldest first."""

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisHotStore(HotStore):
    def __init__(self, url: str):
        self.redis = connect_redis(url)
        self._bucket = self.redis.register_script(_TOKEN_BUCKET)
        self._append = self.redis.register_script(_APPEND)

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self.redis.get(key))

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        await self.redis.set(key, value, px=int(ttl_seconds * 1000) if ttl_seconds else None)

    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool:
        return bool(await self.redis.set(key, value, px=int(ttl_seconds * 1000), nx=True))

    async def delete(self, key: str) -> bool:
        return bool(await self.redis.delete(key))

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        async with self.redis.pipeline(transaction=True) as p:
            p.incrby(key, amount)
            if ttl_seconds:
                p.pexpire(key, int(ttl_seconds * 1000), nx=True)
            res = await p.execute()
        return int(res[0])

    async def take_tokens(self, key: str, *, rate: float, burst: int, n: int = 1) -> bool:
        return bool(await self._bucket(keys=[key], args=[rate, burst, n, int(time.time() * 1000)]))

    async def append(self, stream: str, value: bytes, *, max_len: int | None = None) -> int:
        return int(await self._append(keys=[stream], args=[value, max_len or 0]))

    async def read_after(self, stream: str, after_id: int, *, count: int = 100) -> list[tuple[int, bytes]]:
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await self.redis.xrange(stream, min=f"({after_id}-1", max="+", count=count),
        )
        return [(int(rid.split(b"-")[0]), fields[b"v"]) for rid, fields in rows]

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.redis.aclose()


# Expired keys removed per write, at most: more than the one key a write can add, so the sweep keeps up.
_SWEEP_PER_WRITE = 8


class MemoryHotStore(HotStore):
    """In-process implementation with the same semantics (expiry, atomicity within the process).

    Expired keys are not only hidden but removed, as Redis does: each key with a TTL is also filed under
    the second after it expires (a timing wheel: one list slot per key), and every write removes up to
    `_SWEEP_PER_WRITE` keys from seconds already past. Memory stays bounded by what was written within
    the TTLs (for nonces: the request rate times twice the timestamp window), however long the process
    runs; `hack/bench/hotstore_memory.py` measures it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, tuple[object, float | None]] = {}
        self._streams: dict[str, tuple[int, OrderedDict[int, bytes]]] = {}
        self._lock = asyncio.Lock()
        self._clock = clock
        self._wheel: dict[int, list[str]] = {}  # second -> keys that expire before it
        self._due: list[int] = []  # the wheel's seconds, a min-heap

    def __len__(self) -> int:
        """Keys held, expired or not (what the memory is spent on)."""
        return len(self._data)

    def _live(self, key: str) -> object | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            del self._data[key]
            return None
        return value

    def _expiry(self, ttl: float | None) -> float | None:
        return self._clock() + ttl if ttl else None

    def _put(self, key: str, value: object, expires: float | None) -> None:
        """Store, file the key by its expiry second, and sweep a little."""
        old = self._data.get(key)
        self._data[key] = (value, expires)
        if expires is not None:
            second = int(expires) + 1
            if old is None or old[1] is None or int(old[1]) + 1 != second:  # else already filed there
                keys = self._wheel.get(second)
                if keys is None:
                    keys = self._wheel[second] = []
                    heapq.heappush(self._due, second)
                keys.append(key)
        if self._due and self._due[0] <= self._clock():
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock()
        budget = _SWEEP_PER_WRITE
        due, data = self._due, self._data
        while budget > 0 and due and due[0] <= now:
            keys = self._wheel[due[0]]
            while keys and budget > 0:
                key = keys.pop()
                budget -= 1
                item = data.get(key)
                if item is not None and item[1] is not None and item[1] <= now:
                    del data[key]
            if not keys:
                del self._wheel[heapq.heappop(due)]

    async def get(self, key: str) -> bytes | None:
        v = self._live(key)
        return v if isinstance(v, bytes) else (str(v).encode() if v is not None else None)

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        self._put(key, value, self._expiry(ttl_seconds))

    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, value, self._expiry(ttl_seconds))
        return True

    async def delete(self, key: str) -> bool:
        return self._live(key) is not None and self._data.pop(key, None) is not None

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        current = self._live(key)
        if current is None:
            value, expires = amount, self._expiry(ttl_seconds)
        else:
            value, expires = int(current) + amount, self._data[key][1]  # type: ignore[call-overload]
        self._put(key, value, expires)
        return value

    async def take_tokens(self, key: str, *, rate: float, burst: int, n: int = 1) -> bool:
        now = self._clock()
        state = self._live(key)
        tokens, ts = state if isinstance(state, tuple) else (float(burst), now)
        tokens = min(burst, tokens + max(0.0, now - ts) * rate)
        ok = tokens >= n
        if ok:
            tokens -= n
        self._put(key, (tokens, now), now + burst / rate + 1)
        return ok

    async def append(self, stream: str, value: bytes, *, max_len: int | None = None) -> int:
        seq, log = self._streams.get(stream, (0, OrderedDict()))
        seq += 1
        log[seq] = value
        while max_len is not None and len(log) > max_len:
            log.popitem(last=False)
        self._streams[stream] = (seq, log)
        return seq

    async def read_after(self, stream: str, after_id: int, *, count: int = 100) -> list[tuple[int, bytes]]:
        _, log = self._streams.get(stream, (0, OrderedDict()))
        return [(i, v) for i, v in log.items() if i > after_id][:count]


class FallbackHotStore(HotStore):
    """A shared store (Redis) that falls back to this process's memory while it is unreachable.

    For state where a per-replica answer beats no answer: rate-limit buckets
    keep limiting and nonces keep being checked through an outage.

    - Each call to the shared store gets `call_budget_seconds`: a Redis that hangs (stopped, not closed)
      costs the requests in flight that budget once, not its socket timeout each; the first failure
      switches every call to local state at once, and after `retry_seconds` the shared store is tried
      again (a breaker).
    - Keys taken with `set_if_absent` (nonces, idempotency keys) are also remembered here for their TTL
      (the newest `mirror_max_keys`), so during an outage this process still refuses one it saw before
      the outage; those taken during the outage are written back to the shared store when it returns,
      so no replica accepts them afterwards. What an outage cannot give: a key taken by another
      replica during the outage is unknown here until it returns.
    """

    def __init__(
        self,
        shared: HotStore,
        *,
        retry_seconds: float = 2.0,
        call_budget_seconds: float = 0.25,
        mirror_max_keys: int = 200_000,
        on_change: Callable[[bool], None] | None = None,
    ):
        self.shared, self.local = shared, MemoryHotStore()
        self.retry_seconds, self.call_budget_seconds = retry_seconds, call_budget_seconds
        self.mirror_max_keys = mirror_max_keys
        self._down_until = 0.0
        self._on_change = on_change
        self._mirror: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (value, expires)
        self._taken_while_down: dict[str, tuple[bytes, float]] = {}
        self._write_back: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.degraded:
            try:
                result = await asyncio.wait_for(getattr(self.shared, method)(*args, **kwargs), self.call_budget_seconds)
                if self._down_until:
                    self._recovered()
                self._down_until = 0.0
                return result
            except Exception as e:  # connection refused, timeout, READONLY, over budget, ...
                if not self._down_until:  # the first failure of an outage (later retries fail quietly)
                    log.warning(
                        "hot store unreachable, using local state for %.0fs: %s", self.retry_seconds, e or type(e)
                    )
                self._down_until = time.monotonic() + self.retry_seconds
                if self._on_change:
                    self._on_change(True)
        return await getattr(self.local, method)(*args, **kwargs)

    def _recovered(self) -> None:
        if self._on_change:
            self._on_change(False)
        if self._taken_while_down and (self._write_back is None or self._write_back.done()):
            taken, self._taken_while_down = self._taken_while_down, {}
            self._write_back = asyncio.get_running_loop().create_task(self._give_back(taken))

    async def _give_back(self, taken: dict[str, tuple[bytes, float]]) -> None:
        """Write the keys taken during the outage to the shared store, for what is left of their TTL."""
        now = time.monotonic()
        try:
            for key, (value, expires) in taken.items():
                if expires > now:
                    await self.shared.set_if_absent(key, value, ttl_seconds=expires - now)
            log.info("hot store back: %d keys taken during the outage written back", len(taken))
        except Exception as e:
            log.warning("writing keys taken during the outage back failed: %s", e)

    def _remember(self, key: str, value: bytes, ttl_seconds: float) -> None:
        mirror = self._mirror
        mirror[key] = (value, time.monotonic() + ttl_seconds)
        mirror.move_to_end(key)
        while len(mirror) > self.mirror_max_keys:
            mirror.popitem(last=False)

    def _remembered(self, key: str) -> bool:
        seen = self._mirror.get(key)
        if seen is None:
            return False
        if seen[1] <= time.monotonic():
            del self._mirror[key]
            return False
        return True

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self._call("get", key))

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        await self._call("set", key, value, ttl_seconds=ttl_seconds)

    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool:
        if self._remembered(key):
            return False
        taken = bool(await self._call("set_if_absent", key, value, ttl_seconds=ttl_seconds))
        if taken:
            self._remember(key, value, ttl_seconds)
            if self.degraded:
                down = self._taken_while_down
                down[key] = (value, time.monotonic() + ttl_seconds)
                if len(down) > self.mirror_max_keys:  # a long outage: give back the newest, as the mirror keeps
                    del down[next(iter(down))]
        return taken

    async def delete(self, key: str) -> bool:
        self._mirror.pop(key, None)
        self._taken_while_down.pop(key, None)
        return bool(await self._call("delete", key))

    async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        return int(await self._call("incr", key, amount, ttl_seconds=ttl_seconds))

    async def take_tokens(self, key: str, *, rate: float, burst: int, n: int = 1) -> bool:
        return bool(await self._call("take_tokens", key, rate=rate, burst=burst, n=n))

    async def append(self, stream: str, value: bytes, *, max_len: int | None = None) -> int:
        return int(await self._call("append", stream, value, max_len=max_len))

    async def read_after(self, stream: str, after_id: int, *, count: int = 100) -> list[tuple[int, bytes]]:
        return cast(list[tuple[int, bytes]], await self._call("read_after", stream, after_id, count=count))

    async def ping(self) -> bool:
        return await self.shared.ping()

    async def close(self) -> None:
        await self.shared.close()
