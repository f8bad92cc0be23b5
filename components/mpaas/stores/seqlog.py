"""SequencedLog: numbered entries with per-reader cursors and acks; device inboxes and sync oplogs.

One mechanism, two roles:

- a device inbox (push, link): one log per device, one reader (the device). Each message gets the
  device's next sequence number and its own TTL; the device pulls what follows its last ack, and an
  ack lets the entries it covers be dropped. Typical settings: `max_len=1000`,
  `overflow="drop_oldest"`, `idle_ttl_seconds` of a few weeks.
- a sync oplog: one log per stream (user or device, bizType), several readers, each with its own
  cursor. Entries are dropped once every known reader has acked them. Typical settings: a larger
  `max_len`, `overflow="reject"` (an op is never dropped unread).

Sequence numbers start at 1 (with `time_numbers`, at the log's creation time in milliseconds times 1 000,
so that a log removed when idle and created again never hands out a number it used before: a reader holding
an old number reads every entry of the new log), never repeat while the log exists, and readers see them in
order. Gaps
are normal: an entry can expire (its TTL) or be evicted (`drop_oldest`) before it is read, so a reader
must not wait for a missing number. When a log has had no append, ack or reader change for
`idle_ttl_seconds` it is removed whole, counter and cursors included (reads do not keep it), and
numbering starts again at 1; a client holding its own cursor sees `LogBatch.last_seq` below it and
starts over.

An append whose reply is lost (the connection drops after Redis ran it) is retried once by the client
and can then be stored twice under two numbers, unless the append names a `dedupe` id: an append with an
id the log already holds (for as long as that entry's TTL, or the idle TTL without one) stores nothing and
returns the number the first one got. A sender that retries after a crash passes its message id and never
delivers twice.

When the log holds `max_len` entries, an append either fails with `LogFull` (`overflow="reject"`:
back-pressure, the sender decides) or first evicts the oldest entries (`overflow="drop_oldest"`: the
newest messages win). Expired entries are removed before the length is checked.

Redis: append is one Lua script (number assignment and insert together), so concurrent appenders never
interleave; all keys of a log share its `{name}` hash tag (Cluster safe). The log is only as durable
as Redis is: run it with AOF (`appendonly yes`, `appendfsync everysec`, at most about a second of
writes lost on a crash) for this role; without it a restart loses every inbox and oplog.
"""

from __future__ import annotations

import heapq
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import redis.asyncio as aioredis

from .expiring import ExpiringMap
from .redis_common import RedisRole, require_one_slot, run_script, tagged

Overflow = Literal["reject", "drop_oldest"]


class LogFull(Exception):
    """The log holds `max_len` entries and its overflow policy is "reject"."""


@dataclass(frozen=True)
class LogBatch:
    entries: list[tuple[int, bytes]]  # (sequence number, value), ascending
    last_seq: int  # the newest number handed out, 0 for a log never written (or removed when idle)
    after: int  # the position read from: the reader's cursor, or the `after` given


class SequencedLog(ABC):
    def __init__(
        self, *, max_len: int, overflow: Overflow, idle_ttl_seconds: float | None, time_numbers: bool = False
    ) -> None:
        self.time_numbers = time_numbers
        if max_len < 1:
            raise ValueError("max_len must be at least 1: a log is bounded")
        if overflow not in ("reject", "drop_oldest"):
            raise ValueError(f"overflow must be 'reject' or 'drop_oldest', not {overflow!r}")
        self.max_len, self.overflow, self.idle_ttl_seconds = max_len, overflow, idle_ttl_seconds

    def _check_ttl(self, ttl_seconds: float | None) -> None:
        idle = self.idle_ttl_seconds
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if idle is not None and ttl_seconds is not None and ttl_seconds > idle:
            raise ValueError(f"an entry cannot outlive its idle log: give a ttl_seconds of at most {idle}")

    @abstractmethod
    async def append(
        self, log: str, value: bytes, *, ttl_seconds: float | None = None, dedupe: str | None = None
    ) -> int:
        """Add an entry; returns its sequence number. Raises LogFull when full and overflow is "reject".
        With `dedupe`, an id the log already holds appends nothing and returns the first append's number."""

    def _dedupe_ttl(self, ttl_seconds: float | None) -> float:
        return ttl_seconds or self.idle_ttl_seconds or 86400.0

    async def append_many(
        self, items: Sequence[tuple[str, bytes, float | None]], *, dedupe: str | None = None
    ) -> list[int | LogFull]:
        """Append one entry to each of many logs, (log, value, ttl_seconds) each: a broadcast's fan-out. The
        sequence number of each, or its LogFull; one round trip on Redis. Raises when the store fails (entries
        appended before stay). `dedupe`: the same id for every log (a message's fan-out retried)."""
        out: list[int | LogFull] = []
        for log, value, ttl in items:
            try:
                out.append(await self.append(log, value, ttl_seconds=ttl, dedupe=dedupe))
            except LogFull as e:
                out.append(e)
        return out

    @abstractmethod
    async def read(
        self, log: str, *, reader: str | None = None, after: int | None = None, count: int = 100
    ) -> LogBatch:
        """Live entries after `after`, or after `reader`'s cursor (0 for an unknown reader), oldest first."""

    @abstractmethod
    async def ack(self, log: str, reader: str, seq: int) -> int:
        """Move `reader`'s cursor forward to `seq` (never back, never past the last number); returns the cursor.

        An unknown reader is added. Entries every known reader has acked are dropped.
        """

    async def ack_many(self, items: Sequence[tuple[str, str, int]]) -> list[int]:
        """Several acks, (log, reader, seq) each, in one round trip on Redis; the cursors."""
        return [await self.ack(log, reader, seq) for log, reader, seq in items]

    @abstractmethod
    async def cursor(self, log: str, reader: str) -> int | None:
        """`reader`'s cursor, None when the log does not know it."""

    @abstractmethod
    async def add_reader(self, log: str, reader: str, *, at: int | None = None) -> int:
        """Register a reader at `at` (default: the last number, so it reads only what comes next).

        A reader already known keeps its cursor. Until added (or its first ack) a reader does not hold
        entries back from being dropped.
        """

    @abstractmethod
    async def remove_reader(self, log: str, reader: str) -> bool:
        """Forget a reader (one gone for good would otherwise hold every entry back)."""

    @abstractmethod
    async def length(self, log: str) -> int:
        """Live entries held."""

    async def close(self) -> None:
        return None


# --- Redis ---------------------------------------------------------------------------
# KEYS (all `prefix{log}:...`): 1 entries (zset: score = seq, member = "seq:value"), 2 counter,
# 3 expiries (zset: score = expiry ms, member = seq), 4 cursors (hash: reader -> seq),
# 5 dedupe ids (hash: id -> seq), 6 their expiries (zset: score = expiry ms, member = id).
_LUA_COMMON = """
local function purge_expired(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, s in ipairs(gone) do redis.call('ZREMRANGEBYSCORE', KEYS[1], s, s) end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
end
local function forget_expiries(rows)
  for i = 2, #rows, 2 do redis.call('ZREM', KEYS[3], rows[i]) end
end
local function trim_acked()
  local low = nil
  for _, v in ipairs(redis.call('HVALS', KEYS[4])) do
    local n = tonumber(v)
    if low == nil or n < low then low = n end
  end
  if low ~= nil and low > 0 then
    forget_expiries(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', low, 'WITHSCORES'))
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', low)
  end
end
local function touch(idle_ms)
  if idle_ms > 0 then
    for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], idle_ms) end
  end
end
"""

# ARGV: value, now ms, expiry ms (0: none), max_len, overflow ("reject" | "drop_oldest"), idle ms (0: none),
# first number of a new log (0: 1), dedupe id ("" : none), its expiry ms.
# Returns the new number (the first append's for a known dedupe id), or -1 when full and rejecting.
_APPEND = (
    _LUA_COMMON
    + """
local dedupe = ARGV[8]
if dedupe ~= '' then
  -- Expired ids, a bounded number per append (each append adds one): no unpack of an unbounded list.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', ARGV[2], 'LIMIT', 0, 100)
  for _, id in ipairs(gone) do
    redis.call('HDEL', KEYS[5], id)
    redis.call('ZREM', KEYS[6], id)
  end
  local first = redis.call('HGET', KEYS[5], dedupe)
  local until_ms = redis.call('ZSCORE', KEYS[6], dedupe)
  if first and until_ms and tonumber(until_ms) > tonumber(ARGV[2]) then return tonumber(first) end
end
purge_expired(tonumber(ARGV[2]))
local max_len = tonumber(ARGV[4])
local held = redis.call('ZCARD', KEYS[1])
if held >= max_len then
  if ARGV[5] ~= 'drop_oldest' then return -1 end
  local n = held - max_len + 1
  forget_expiries(redis.call('ZRANGE', KEYS[1], 0, n - 1, 'WITHSCORES'))
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
end
if tonumber(ARGV[7]) > 0 and redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[7]) end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], seq, string.format('%d:', seq) .. ARGV[1])
local expires = tonumber(ARGV[3])
if expires > 0 then redis.call('ZADD', KEYS[3], expires, seq) end
if dedupe ~= '' then
  redis.call('HSET', KEYS[5], dedupe, seq)
  redis.call('ZADD', KEYS[6], tonumber(ARGV[9]), dedupe)
end
touch(tonumber(ARGV[6]))
return seq
"""
)

# ARGV: after ("" = the reader's cursor), reader, count, now ms. Returns {last, after, members}.
_READ = (
    _LUA_COMMON
    + """
purge_expired(tonumber(ARGV[4]))
local after = ARGV[1]
if after == '' then after = redis.call('HGET', KEYS[4], ARGV[2]) or '0' end
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. after, '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
return {redis.call('GET', KEYS[2]) or '0', after, rows}
"""
)

# ARGV: reader, seq, idle ms. Returns the reader's cursor.
_ACK = (
    _LUA_COMMON
    + """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local want = math.max(0, math.min(tonumber(ARGV[2]), last))
local cur = redis.call('HGET', KEYS[4], ARGV[1])
if cur == false or want > tonumber(cur) then
  redis.call('HSET', KEYS[4], ARGV[1], want)
  cur = want
end
trim_acked()
touch(tonumber(ARGV[3]))
return tonumber(cur)
"""
)

# ARGV: reader, at ("" = the last number), idle ms. Returns the reader's cursor.
_ADD_READER = (
    _LUA_COMMON
    + """
local at = ARGV[2]
if at == '' then at = redis.call('GET', KEYS[2]) or '0' end
redis.call('HSETNX', KEYS[4], ARGV[1], at)
touch(tonumber(ARGV[3]))
return tonumber(redis.call('HGET', KEYS[4], ARGV[1]))
"""
)

# ARGV: reader, idle ms. Returns 1 when the reader was known.
_REMOVE_READER = (
    _LUA_COMMON
    + """
local removed = redis.call('HDEL', KEYS[4], ARGV[1])
trim_acked()
touch(tonumber(ARGV[2]))
return removed
"""
)

# ARGV: now ms. Returns the live entries held.
_LENGTH = (
    _LUA_COMMON
    + """
purge_expired(tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
"""
)

SCRIPTS = {
    "append": _APPEND,
    "read": _READ,
    "ack": _ACK,
    "add_reader": _ADD_READER,
    "remove_reader": _REMOVE_READER,
    "length": _LENGTH,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisSequencedLog(RedisRole, SequencedLog):
    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        prefix: str = "seqlog:",
        max_len: int,
        overflow: Overflow,
        idle_ttl_seconds: float | None = None,
        time_numbers: bool = False,
    ):
        RedisRole.__init__(self, redis, prefix)
        SequencedLog.__init__(
            self, max_len=max_len, overflow=overflow, idle_ttl_seconds=idle_ttl_seconds, time_numbers=time_numbers
        )
        self._scripts = {name: self.redis.register_script(text) for name, text in SCRIPTS.items()}
        self._idle_ms = int(idle_ttl_seconds * 1000) if idle_ttl_seconds else 0

    def keys(self, log: str) -> list[str]:
        """The log's keys, in the scripts' KEYS order."""
        parts = ("entries", "seq", "expiries", "cursors", "ids", "idexp")
        return [tagged(self.prefix, log, part) for part in parts]

    async def _run(self, script: str, log: str, *args: object) -> object:
        return await run_script(self._scripts[script], self.keys(log), args)

    async def append(
        self, log: str, value: bytes, *, ttl_seconds: float | None = None, dedupe: str | None = None
    ) -> int:
        self._check_ttl(ttl_seconds)
        now = _now_ms()
        expires = now + int(ttl_seconds * 1000) if ttl_seconds else 0
        base = now * 1000 if self.time_numbers else 0
        dedupe_expires = now + int(self._dedupe_ttl(ttl_seconds) * 1000)
        args = (value, now, expires, self.max_len, self.overflow, self._idle_ms, base, dedupe or "", dedupe_expires)
        seq = int(cast(int, await self._run("append", log, *args)))
        if seq < 0:
            raise LogFull(f"log {log!r} holds {self.max_len} entries")
        return seq

    async def append_many(
        self, items: Sequence[tuple[str, bytes, float | None]], *, dedupe: str | None = None
    ) -> list[int | LogFull]:
        # One pipeline of the append script, not a transaction: each log is its own slot on a Cluster.
        now = _now_ms()
        script = self._scripts["append"]
        async with self.redis.pipeline(transaction=False) as p:
            for log, value, ttl in items:
                self._check_ttl(ttl)
                keys = self.keys(log)
                require_one_slot(keys)
                expires = now + int(ttl * 1000) if ttl else 0
                base = now * 1000 if self.time_numbers else 0
                dedupe_expires = now + int(self._dedupe_ttl(ttl) * 1000)
                args: list[bytes | str | int] = [value, now, expires, self.max_len, self.overflow, self._idle_ms, base]
                args += [dedupe or "", dedupe_expires]
                await script(keys=keys, args=args, client=p)
            results = await p.execute()
        return [LogFull(f"log {log!r} holds {self.max_len} entries") if int(r) < 0 else int(r)
                for (log, _, _), r in zip(items, results, strict=True)]  # fmt: skip

    async def read(
        self, log: str, *, reader: str | None = None, after: int | None = None, count: int = 100
    ) -> LogBatch:
        if (reader is None) == (after is None):
            raise ValueError("give either reader or after")
        res = cast(
            list[object], await self._run("read", log, "" if after is None else after, reader or "", count, _now_ms())
        )
        last, position, members = res
        entries = []
        for member in cast(list[bytes], members):
            seq, _, value = member.partition(b":")
            entries.append((int(seq), value))
        return LogBatch(entries, int(cast(bytes, last)), int(cast(bytes, position)))

    async def ack(self, log: str, reader: str, seq: int) -> int:
        return int(cast(int, await self._run("ack", log, reader, seq, self._idle_ms)))

    async def ack_many(self, items: Sequence[tuple[str, str, int]]) -> list[int]:
        script = self._scripts["ack"]
        async with self.redis.pipeline(transaction=False) as p:
            for log, reader, seq in items:
                keys = self.keys(log)
                require_one_slot(keys)
                await script(keys=keys, args=[reader, seq, self._idle_ms], client=p)
            return [int(r) for r in await p.execute()]

    async def cursor(self, log: str, reader: str) -> int | None:
        value = await self.redis.hget(self.keys(log)[3], reader)
        return None if value is None else int(value)

    async def add_reader(self, log: str, reader: str, *, at: int | None = None) -> int:
        return int(cast(int, await self._run("add_reader", log, reader, "" if at is None else at, self._idle_ms)))

    async def remove_reader(self, log: str, reader: str) -> bool:
        return bool(await self._run("remove_reader", log, reader, self._idle_ms))

    async def length(self, log: str) -> int:
        return int(cast(int, await self._run("length", log, _now_ms())))


# --- in-process ------------------------------------------------------------------------


@dataclass
class _Log:
    last_seq: int = 0
    entries: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    expiries: list[tuple[float, int]] = field(default_factory=list)  # heap of (expiry, seq)
    cursors: dict[str, int] = field(default_factory=dict)
    dedupe: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (seq, expiry)


class MemorySequencedLog(SequencedLog):
    """The same behaviour in this process; an idle log is removed like its Redis keys expire."""

    def __init__(
        self,
        *,
        max_len: int,
        overflow: Overflow,
        idle_ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_numbers: bool = False,
    ):
        super().__init__(
            max_len=max_len, overflow=overflow, idle_ttl_seconds=idle_ttl_seconds, time_numbers=time_numbers
        )
        self._logs: ExpiringMap[_Log] = ExpiringMap(clock)
        self._clock = clock

    def _open(self, log: str) -> _Log:
        tagged("", log)  # the same names as Redis
        state = self._logs.get(log)
        return state if state is not None else _Log()

    def _touch(self, log: str, state: _Log) -> None:
        self._logs.set(log, state, ttl_seconds=self.idle_ttl_seconds)

    def _purge_expired(self, state: _Log) -> None:
        now, heap = self._clock(), state.expiries
        while heap and heap[0][0] <= now:
            state.entries.pop(heapq.heappop(heap)[1], None)
        if len(heap) > 2 * self.max_len:  # items of entries already acked or evicted
            state.expiries = [item for item in heap if item[1] in state.entries]
            heapq.heapify(state.expiries)

    def _trim_acked(self, state: _Log) -> None:
        if not state.cursors:
            return
        low = min(state.cursors.values())
        while state.entries and next(iter(state.entries)) <= low:
            state.entries.popitem(last=False)

    async def append(
        self, log: str, value: bytes, *, ttl_seconds: float | None = None, dedupe: str | None = None
    ) -> int:
        self._check_ttl(ttl_seconds)
        state = self._open(log)
        if dedupe is not None:
            now = self._clock()
            if len(state.dedupe) > self.max_len:
                state.dedupe = {k: v for k, v in state.dedupe.items() if v[1] > now}
            first = state.dedupe.get(dedupe)
            if first is not None and first[1] > now:
                return first[0]
        self._purge_expired(state)
        if len(state.entries) >= self.max_len:
            if self.overflow == "reject":
                raise LogFull(f"log {log!r} holds {self.max_len} entries")
            while len(state.entries) >= self.max_len:
                state.entries.popitem(last=False)
        if self.time_numbers and state.last_seq == 0:
            state.last_seq = int(time.time() * 1000) * 1000
        state.last_seq += 1
        state.entries[state.last_seq] = value
        if ttl_seconds:
            heapq.heappush(state.expiries, (self._clock() + ttl_seconds, state.last_seq))
        if dedupe is not None:
            state.dedupe[dedupe] = (state.last_seq, self._clock() + self._dedupe_ttl(ttl_seconds))
        self._touch(log, state)
        return state.last_seq

    async def read(
        self, log: str, *, reader: str | None = None, after: int | None = None, count: int = 100
    ) -> LogBatch:
        if (reader is None) == (after is None):
            raise ValueError("give either reader or after")
        state = self._open(log)
        self._purge_expired(state)
        position = after if after is not None else state.cursors.get(cast(str, reader), 0)
        entries: list[tuple[int, bytes]] = []
        for seq, value in state.entries.items():  # ascending; the first ones are usually past the cursor
            if seq > position:
                entries.append((seq, value))
                if len(entries) >= count:
                    break
        return LogBatch(entries, state.last_seq, position)

    async def ack(self, log: str, reader: str, seq: int) -> int:
        state = self._open(log)
        want = max(0, min(seq, state.last_seq))
        current = state.cursors.get(reader)
        if current is None or want > current:
            state.cursors[reader] = current = want
        self._trim_acked(state)
        self._touch(log, state)
        return current

    async def cursor(self, log: str, reader: str) -> int | None:
        return self._open(log).cursors.get(reader)

    async def add_reader(self, log: str, reader: str, *, at: int | None = None) -> int:
        state = self._open(log)
        position = state.cursors.setdefault(reader, state.last_seq if at is None else at)
        self._touch(log, state)
        return position

    async def remove_reader(self, log: str, reader: str) -> bool:
        state = self._open(log)
        removed = state.cursors.pop(reader, None) is not None
        self._trim_acked(state)
        self._touch(log, state)
        return removed

    async def length(self, log: str) -> int:
        state = self._open(log)
        self._purge_expired(state)
        return len(state.entries)
