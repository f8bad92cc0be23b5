"""Real-time aggregates from the event log, per app and UTC day, counted once per event id.

A consumer group (`MPAAS_REALTIME_GROUP`) reads the events topic; each event is applied to the aggregate
store in one atomic step that first records its id (kept 3 days), so an event read again after a restart
(offsets are committed after applying, every half second) is not counted twice. Pods share the work by
partition; the store (Redis, or in-process under `mpaas dev`) holds the totals every pod answers from.

What counts as what (docs/analytics.md, "Real-time metrics"): launches, sessions and their length, startup
times, crashes, stalls and freezes (with mPaaS's thresholds), custom events; distinct devices per day and
month (HyperLogLog), devices that crashed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram

from ..stores import EventLog
from ..stores.counters import HyperLogLog
from ..stores.expiring import ExpiringMap
from ..stores.redis_common import connect_redis
from . import crashes
from .crashes import Crash
from .symbols import Symbolicator

log = logging.getLogger("mpaas.analytics.realtime")

SEEN_SECONDS = 3 * 86400  # an event id is remembered this long: replays within it are not counted again
KEEP_SECONDS = 40 * 86400  # a day's aggregates are kept this long
CUSTOM_EVENT_NAMES = 200  # per app and day; more distinct names are counted under "_other"
VERSIONS = 50  # app versions with their own launch and crash counts, per app and day; more count as "_other"
CRASH_GROUPS = 1000  # the most frequent kept per app version (and for all versions); rarer ones drop out

# mPaaS's stall thresholds: the main thread busy this long in one method (milliseconds), by platform.
STALL_MS = {"android": 2250, "ios": 2000}

EVENTS = Counter(
    "mpaas_analytics_app_events_total",
    "Events applied to the real-time aggregates, by app, platform and kind",
    ["app", "platform", "kind"],
)
STARTUP = Histogram(
    "mpaas_analytics_startup_seconds",
    "App startup times reported by the apps",
    ["app", "platform", "start"],
    buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 8, 13, 30),
)
REPLAYED = Counter(
    "mpaas_analytics_replayed_events", "Events read again (after a restart) and not counted a second time"
)
LAG = Histogram(
    "mpaas_analytics_realtime_lag_seconds",
    "From an event's upload accepted to its aggregates updated",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


def platform_of(value: str) -> str:
    """A bounded label value for the platform a client names."""
    v = value.lower()
    if v in ("android", "ios", "harmonyos", "web"):
        return v
    if v in ("iphone os", "ipados", "ios_native"):
        return "ios"
    return "other" if v else ""


@dataclass(frozen=True)
class Update:
    """What one event adds to its app's aggregates for its day."""

    counts: dict[str, int]  # field -> amount
    crashed: bool
    crash: Crash | None = None  # the crash's group, when it carries a stack or message
    version: str = ""  # the app version, for crash groups
    ts_ms: int = 0  # the event's time


def classify(event: dict[str, Any]) -> tuple[str, Update]:
    """(kind, update) of an event record (events.Event.record)."""
    name, props, platform = event["event"], event.get("props") or {}, platform_of(event.get("platform", ""))
    counts: dict[str, int] = {"events": 1}
    kind = "custom"
    if name in ("launch", "$session_start", "Application Opened"):
        kind = "launch"
        counts["launches"] = 1
        counts["v.launches"] = 1
    elif name in ("session_end", "$session_end"):
        kind = "session"
        seconds = props.get("durationSeconds", props.get("duration"))
        counts["sessions"] = 1
        if isinstance(seconds, int) and not isinstance(seconds, bool) and 0 <= seconds < 86400:
            counts["session_seconds"] = seconds
    elif name in ("crash", "$crash", "$exception"):
        kind = "crash"
        counts["crashes"] = 1
        counts["v.crashes"] = 1
    elif name == "startup":
        kind = "startup"
        counts["startups"] = 1
    elif name == "stall":
        ms = props.get("ms")
        stalled = isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= STALL_MS.get(platform, 2000)
        kind = "stall" if stalled else "short_stall"  # under the threshold: not a stall by mPaaS's measure
        if stalled:
            counts["stalls"] = 1
    elif name == "freeze":
        kind = "freeze"
        counts["freezes"] = 1
    if kind == "custom":
        counts[f"event:{name}"] = 1
    crash = crashes.of_event(name, props) if kind == "crash" else None
    version = str(event.get("version") or "")
    return kind, Update(counts, crashed=kind == "crash", crash=crash, version=version, ts_ms=int(event.get("ts") or 0))


def day_of(ts_ms: int) -> tuple[str, str]:
    d = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")


Applied = tuple[str, str, str, str, str, "Update"]  # (app, event id, device, day, month, update)


class Aggregates(ABC):
    """The aggregate store: `apply` is atomic and idempotent per event id."""

    @abstractmethod
    async def apply(self, app: str, event_id: str, device: str, day: str, month: str, update: Update) -> bool:
        """Apply once; False when this event id was applied before (a replay)."""

    async def apply_many(self, items: list[Applied]) -> list[bool]:
        """Apply several events (one log record's); the store may send them together."""
        return [await self.apply(*item) for item in items]

    @abstractmethod
    async def day(self, app: str, day: str, month: str) -> dict[str, Any]:
        """The day's figures: counts, distinct devices (day and month), crashed devices, per-version counts."""

    @abstractmethod
    async def crashes(self, app: str, version: str | None, limit: int) -> list[dict[str, Any]]:
        """The top crash groups (of one app version, or of all), most frequent first."""

    async def close(self) -> None:
        return None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _group(fingerprint: str, count: int, fields: dict[str, str], devices: int) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "count": count,
        "type": fields.get("type", ""),
        "title": fields.get("title", ""),
        "firstSeen": int(fields.get("first_seen", 0)),
        "lastSeen": int(fields.get("last_seen", 0)),
        "firstVersion": fields.get("first_version", ""),
        "affectedDevices": devices,
        "sample": fields.get("sample", ""),
    }


def _figures(counts: dict[str, int], dau: int, mau: int, crashed: int) -> dict[str, Any]:
    events = {k.removeprefix("event:"): v for k, v in counts.items() if k.startswith("event:")}
    versions: dict[str, dict[str, Any]] = {}
    for k, v in counts.items():
        if k.startswith("v:"):
            version, _, what = k[2:].rpartition(":")
            versions.setdefault(version, {"launches": 0, "crashes": 0})[what] = v
    for figures in versions.values():  # the signal a release's automatic pause reads
        figures["crashes_per_launch"] = (
            round(figures["crashes"] / figures["launches"], 6) if figures["launches"] else None
        )
    out: dict[str, Any] = {
        k: counts.get(k, 0)
        for k in ("events", "launches", "sessions", "session_seconds", "startups", "crashes", "stalls", "freezes")
    }
    out.update(
        active_devices=dau,
        monthly_active_devices=mau,
        crashed_devices=crashed,
        crash_free_devices_rate=round(1 - crashed / dau, 6) if dau else None,
        custom_events=events,
        versions=versions,
    )
    return out


# Keys share the app's hash tag, so the script runs in one Redis Cluster slot.
_APPLY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
local keep = tonumber(ARGV[2])
redis.call('PFADD', KEYS[3], ARGV[3]) redis.call('EXPIRE', KEYS[3], keep)
redis.call('PFADD', KEYS[4], ARGV[3]) redis.call('EXPIRE', KEYS[4], keep)
if ARGV[4] == '1' then redis.call('PFADD', KEYS[6], ARGV[3]) redis.call('EXPIRE', KEYS[6], keep) end
if ARGV[6] ~= '' then
  local ts = tonumber(ARGV[10])
  if redis.call('HINCRBY', KEYS[7], 'count', 1) == 1 then
    redis.call('HSET', KEYS[7], 'type', ARGV[7], 'title', ARGV[8], 'sample', ARGV[9], 'first_seen', ARGV[10],
               'last_seen', ARGV[10], 'first_version', ARGV[11])
  else
    if ts > tonumber(redis.call('HGET', KEYS[7], 'last_seen')) then redis.call('HSET', KEYS[7], 'last_seen', ts) end
    if ts < tonumber(redis.call('HGET', KEYS[7], 'first_seen')) then
      redis.call('HSET', KEYS[7], 'first_seen', ts, 'first_version', ARGV[11])
    end
  end
  redis.call('PFADD', KEYS[8], ARGV[3])
  -- Space-saving top-k (Metwally et al.): when the ranking is full, a new group takes the place of the least
  -- frequent one with its count plus one, so a crash that keeps coming rises instead of being cut at once.
  local groups = tonumber(ARGV[12])
  for i = 9, 10 do
    if redis.call('ZSCORE', KEYS[i], ARGV[6]) == false and redis.call('ZCARD', KEYS[i]) >= groups then
      local least = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      redis.call('ZREM', KEYS[i], least[1])
      redis.call('ZADD', KEYS[i], tonumber(least[2]) + 1, ARGV[6])
    else
      redis.call('ZINCRBY', KEYS[i], 1, ARGV[6])
    end
  end
  for i = 7, 10 do redis.call('EXPIRE', KEYS[i], keep) end
end
local limit = tonumber(ARGV[5])
local version = nil
for i = 14, #ARGV, 2 do
  local field = ARGV[i]
  if string.sub(field, 1, 6) == 'event:' and redis.call('HEXISTS', KEYS[2], field) == 0 then
    if redis.call('HINCRBY', KEYS[2], 'names', 1) > limit then field = 'event:_other' end
  elseif string.sub(field, 1, 2) == 'v.' then
    if version == nil then
      version = ARGV[11]
      local mark = redis.call('HGET', KEYS[2], 'vs:' .. version)
      if not mark then
        mark = '1'
        if redis.call('HINCRBY', KEYS[2], 'versions', 1) > tonumber(ARGV[13]) then mark = '0' end
        redis.call('HSET', KEYS[2], 'vs:' .. version, mark)
      end
      if mark == '0' then version = '_other' end
    end
    field = 'v:' .. version .. ':' .. string.sub(field, 3)
  end
  redis.call('HINCRBY', KEYS[2], field, tonumber(ARGV[i + 1]))
end
redis.call('EXPIRE', KEYS[2], keep)
return 1
"""


class RedisAggregates(Aggregates):
    def __init__(self, redis: str | aioredis.Redis, prefix: str = "rt:"):
        self.redis = connect_redis(redis) if isinstance(redis, str) else redis
        self.prefix = prefix
        self._apply = self.redis.register_script(_APPLY)

    def _keys(self, app: str, event_id: str, day: str, month: str) -> list[str]:
        t = f"{self.prefix}{{{app}}}"
        return [
            f"{t}:seen:{event_id}",
            f"{t}:day:{day}",
            f"{t}:dau:{day}",
            f"{t}:mau:{month}",
            f"{t}:devices",
            f"{t}:crashed:{day}",
        ]

    def _crash_keys(self, app: str, fingerprint: str, version: str | None) -> list[str]:
        t = f"{self.prefix}{{{app}}}"
        top = f"{t}:crashes:all" if version is None else f"{t}:crashes:v:{version}"
        return [f"{t}:crash:{fingerprint}", f"{t}:crashdev:{fingerprint}", top]

    async def apply(self, app: str, event_id: str, device: str, day: str, month: str, update: Update) -> bool:
        keys, args = self._call(app, event_id, device, day, month, update)
        return bool(await self._apply(keys=keys, args=args))

    async def apply_many(self, items: list[Applied]) -> list[bool]:
        """One round trip for a record's events: the scripts pipelined (each still atomic on its own)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                keys, args = self._call(*item)
                await self._apply(keys=keys, args=args, client=pipe)
            return [bool(r) for r in await pipe.execute()]

    def _call(
        self, app: str, event_id: str, device: str, day: str, month: str, update: Update
    ) -> tuple[list[str], list[Any]]:
        c = update.crash
        # Without a crash the script leaves these alone; they still name the app's slot (Redis Cluster).
        group_keys = self._crash_keys(app, c.fingerprint if c else "-", update.version)
        keys = [*self._keys(app, event_id, day, month), group_keys[0], group_keys[1], group_keys[2]]
        keys.append(self._crash_keys(app, "-", None)[2])
        args: list[Any] = [SEEN_SECONDS, KEEP_SECONDS, device, "1" if update.crashed else "0", CUSTOM_EVENT_NAMES]
        if c is not None:
            args += [c.fingerprint, c.type, c.title, c.sample, update.ts_ms, update.version, CRASH_GROUPS]
        else:
            args += ["", "", "", "", 0, update.version, CRASH_GROUPS]
        args.append(VERSIONS)
        for k, v in update.counts.items():
            args += [k, v]
        return keys, args

    async def crashes(self, app: str, version: str | None, limit: int) -> list[dict[str, Any]]:
        top = self._crash_keys(app, "-", version)[2]
        ranked = cast(list[tuple[bytes, float]], await self.redis.zrevrange(top, 0, limit - 1, withscores=True))
        out = []
        for member, score in ranked:
            fp = _text(member)
            group_key, devices_key, _ = self._crash_keys(app, fp, version)
            raw = await self.redis.hgetall(group_key)
            fields = {_text(k): _text(v) for k, v in raw.items()}
            out.append(_group(fp, int(score), fields, await self.redis.pfcount(devices_key)))
        return out

    async def day(self, app: str, day: str, month: str) -> dict[str, Any]:
        _, day_key, dau, mau, _, crashed = self._keys(app, "-", day, month)
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(day_key)
            p.pfcount(dau)
            p.pfcount(mau)
            p.pfcount(crashed)
            raw, n_dau, n_mau, n_crashed = await p.execute()
        counts = {k.decode(): int(v) for k, v in raw.items() if k not in (b"names", b"versions")}
        return _figures(counts, n_dau, n_mau, n_crashed)

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryAggregates(Aggregates):
    """The in-process twin (`mpaas dev`): the same figures, HyperLogLogs included; seen ids expire."""

    def __init__(self) -> None:
        self.seen: ExpiringMap[bool] = ExpiringMap()
        self.counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.hll: dict[tuple[str, str], HyperLogLog] = defaultdict(HyperLogLog)
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}  # (app, fingerprint) -> fields
        self.ranked: dict[tuple[str, str | None], dict[str, int]] = defaultdict(dict)  # (app, version) -> fp -> n

    async def apply(self, app: str, event_id: str, device: str, day: str, month: str, update: Update) -> bool:
        seen_key = f"{app}\n{event_id}"
        if self.seen.get(seen_key) is not None:
            return False
        self.seen.set(seen_key, True, ttl_seconds=SEEN_SECONDS)
        member = device.encode()
        counts = self.counts[(app, day)]
        self.hll[(app, f"dau:{day}")].add(member)
        self.hll[(app, f"mau:{month}")].add(member)
        if update.crashed:
            self.hll[(app, f"crashed:{day}")].add(member)
        if update.crash is not None:
            self._crash(app, member, update.crash, update.version, update.ts_ms)
        names = sum(1 for k in counts if k.startswith("event:"))
        version = update.version
        if any(f.startswith("v.") for f in update.counts):
            if f"vs:{version}" not in counts:  # 1: counted under its own name; 0: over the bound, as "_other"
                counts["versions"] += 1
                counts[f"vs:{version}"] = int(counts["versions"] <= VERSIONS)
            if not counts[f"vs:{version}"]:
                version = "_other"
        for field, amount in update.counts.items():
            if field.startswith("event:") and field not in counts and names >= CUSTOM_EVENT_NAMES:
                field = "event:_other"
            elif field.startswith("v."):
                field = f"v:{version}:{field[2:]}"
            counts[field] += amount
        return True

    def _crash(self, app: str, device: bytes, crash: Crash, version: str, ts: int) -> None:
        g = self.groups.get((app, crash.fingerprint))
        if g is None:
            g = self.groups[(app, crash.fingerprint)] = {
                "type": crash.type,
                "title": crash.title,
                "sample": crash.sample,
                "first_seen": ts,
                "last_seen": ts,
                "first_version": version,
            }
        g["last_seen"] = max(g["last_seen"], ts)
        if ts < g["first_seen"]:
            g["first_seen"], g["first_version"] = ts, version
        self.hll[(app, f"crashdev:{crash.fingerprint}")].add(device)
        for key in ((app, version), (app, None)):  # space-saving top-k, as the Redis script
            ranked = self.ranked[key]
            if crash.fingerprint not in ranked and len(ranked) >= CRASH_GROUPS:
                least = min(ranked, key=lambda fp: ranked[fp])
                ranked[crash.fingerprint] = ranked.pop(least) + 1
            else:
                ranked[crash.fingerprint] = ranked.get(crash.fingerprint, 0) + 1

    async def crashes(self, app: str, version: str | None, limit: int) -> list[dict[str, Any]]:
        ranked = sorted(self.ranked.get((app, version), {}).items(), key=lambda kv: -kv[1])[:limit]
        out = []
        for fp, n in ranked:
            fields = {k: str(v) for k, v in self.groups.get((app, fp), {}).items()}
            out.append(_group(fp, n, fields, self.hll[(app, f"crashdev:{fp}")].count()))
        return out

    async def day(self, app: str, day: str, month: str) -> dict[str, Any]:
        def count(key: str) -> int:
            h = self.hll.get((app, key))
            return h.count() if h is not None else 0

        return _figures(
            dict(self.counts.get((app, day), {})), count(f"dau:{day}"), count(f"mau:{month}"), count(f"crashed:{day}")
        )


def open_aggregates(url: str, prefix: str = "rt:") -> Aggregates:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisAggregates(url, prefix)
    if url.startswith("memory:"):
        return MemoryAggregates()
    raise ValueError(f"unsupported aggregate store URL {url!r}: use redis://host:port/db or memory://")


async def apply_records(store: Aggregates, value: bytes, symbols: Symbolicator | None = None) -> int:
    """Apply a log record's events (JSON lines); returns how many were new. With `symbols`, a crash stack of
    an app version with a mapping is retraced before it is grouped."""
    parsed = [p for p in (_parse(line) for line in value.split(b"\n") if line.strip()) if p is not None]
    if not parsed:
        return 0
    if symbols is not None:
        parsed = [(await _symbolicated(symbols, item, event), event) for item, event in parsed]
    results = await store.apply_many([item for item, _ in parsed])
    for (_, event), new in zip(parsed, results, strict=True):
        _observe(event, new)
    return sum(results)


async def apply_record(store: Aggregates, value: bytes) -> bool:
    """Apply one event; False for a replay or a line that is not an event (logged, skipped)."""
    parsed = _parse(value)
    if parsed is None:
        return False
    item, event = parsed
    new = await store.apply(*item)
    _observe(event, new)
    return new


async def _symbolicated(symbols: Symbolicator, item: Applied, event: dict[str, Any]) -> Applied:
    update = item[5]
    found = crashes.raw_stack(event["event"], event.get("props") or {}) if update.crash is not None else None
    if found is None:
        return item
    try:
        retraced = await symbols.retrace(item[0], update.version, found[0])
    except Exception as e:  # the object store away, a broken mapping: grouped as sent
        log.warning("symbolication of %s %s failed: %r", item[0], update.version, e)
        return item
    if retraced is None:
        return item
    return (*item[:5], dataclasses.replace(update, crash=crashes.group(retraced, found[1])))


def _parse(line: bytes) -> tuple[Applied, dict[str, Any]] | None:
    try:
        event = json.loads(line)
        app = f"{event['app']}/{event['workspace']}"
        day, month = day_of(int(event["ts"]))
        kind, update = classify(event)
        event["_kind"] = kind
        return (app, str(event["id"]), str(event["device"]), day, month, update), event
    except Exception as e:  # one bad line must never hold up the partition behind it
        log.warning("skipping a record that is not an event: %r", e)
        return None


def _observe(event: dict[str, Any], new: bool) -> None:
    """Metrics of an applied event; a replay only counts as one."""
    if not new:
        REPLAYED.inc()
        return
    kind, platform = event["_kind"], platform_of(event.get("platform", ""))
    EVENTS.labels(event["app"], platform, kind).inc()
    props = event.get("props") or {}
    startup_ms = props.get("ms")
    if kind == "startup" and isinstance(startup_ms, int | float) and not isinstance(startup_ms, bool):
        STARTUP.labels(event["app"], platform, "cold" if props.get("cold") else "warm").observe(startup_ms / 1000)
    received = event.get("received")
    if isinstance(received, int):
        LAG.observe(max(0.0, time.time() - received / 1000))


async def consume_forever(
    events: EventLog,
    topic: str,
    group: str,
    store: Aggregates,
    *,
    symbols: Symbolicator | None = None,
    commit_every: float = 0.5,
) -> None:
    """The consumer: applies every event of `topic`, committing the group's offsets after applying. Its member
    stays joined while the topic is quiet (no rebalance every idle spell)."""
    while True:
        try:
            committed_at = time.monotonic()
            async for record in events.consume(topic, group, idle_timeout=None):
                await apply_records(store, record.value, symbols)
                if time.monotonic() - committed_at >= commit_every:
                    await events.commit(group, record)
                    committed_at = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the log or the store away: what was not committed is read again, not counted twice
            log.warning("real-time consumer: %r; resuming in 1 s", e)
            await asyncio.sleep(1)
