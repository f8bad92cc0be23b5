"""What push keeps besides the registry: messages and their outcome counts, idempotency keys, failed tokens,
per-minute stats, the schedule, fan-out checkpoints and per-device send claims, templates, and what waits for
a user's next device.

Redis keys (prefix `push:` by default): `m:{id}` (the message's JSON and state, a hash; a batch's messages are
fields `json:{index}` and `state:{index}` of their batch's hash, `m:{batch}`), `m:{id}:n` (outcome counts),
`m:{id}:f` (failed tokens, a capped list), `m:{id}:c` (the fan-out checkpoint), `m:{id}:p` (the pages counted),
`i:{app}:{key}` (idempotency), `s:{app}:{minute}` and `t:{app}` (stats), `ch:{namespace}/{name}` (a vendor
channel's totals), `{sched}` and `{sched}:m` (the schedule), `x:{id}:{device}` (claims), `m:{id}:rt` (token
digest -> the device it was sent to, for the vendor receipts that name the token), `tpl:{app}` (templates),
`wait:{app}:{user}` (messages waiting for a user's next device). Messages and their figures are kept
`KEEP_SECONDS` after their TTL ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from ..stores.redis_common import RedisRole
from .messages import PushMessage, batch_part
from .redis_text import text

log = logging.getLogger("mpaas.push")

KEEP_SECONDS = 7 * 86400
STATS_SECONDS = 8 * 86400
MAX_FAILED = 1000  # failed tokens kept per message
MAX_TEMPLATES = 1000  # templates an app holds (GET /v1/push/templates returns them all)
SCHEDULE_LEASE_MS = 60_000  # a due message taken by a pod is handed out again after this, unless done
CLAIM_LEASE_SECONDS = 60  # a send claimed and neither made nor failed by then (its sender died) is made again


def token_digest(token: str) -> str:
    """What a token is stored under with its device, for the vendor receipts that name only the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Failed:
    device_id: str
    channel: str
    token: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"deviceId": self.device_id, "channel": self.channel, "token": self.token, "reason": self.reason}


@dataclass
class Status:
    message: PushMessage
    state: str  # Accepted, Scheduled, Sending, Done, Canceled, Revoked
    counts: dict[str, int] = field(default_factory=dict)  # "{channel}.{outcome}" -> n
    targets: int = 0  # devices the fan-out reached (or tokens)


def sent_and_failed(counts: dict[str, int]) -> tuple[int, int]:
    """A channel's sent and failed among a group's outcome counts (a recall it cannot make is neither)."""
    sent = sum(n for k, n in counts.items() if k.endswith(".Sent"))
    return sent, sum(n for k, n in counts.items() if not k.endswith((".Sent", ".NotRecallable")))


def _minute(now: float | None = None) -> int:
    return int((now if now is not None else time.time()) // 60)


def _keep(message: PushMessage) -> float:
    return _keep_until(message.expires_ms)


def _keep_until(expires_ms: int) -> float:
    """Seconds to keep what a message expiring then leaves behind."""
    return max(expires_ms / 1000 - time.time(), 0) + KEEP_SECONDS


class PushState(ABC):
    @abstractmethod
    async def claim_idempotency(self, app: str, key: str, message_id: str, ttl_seconds: float) -> str | None:
        """None when `key` is new (now bound to `message_id`); else the message id it was first used for."""

    @abstractmethod
    async def release_idempotency(self, app: str, key: str, message_id: str) -> None:
        """Unbind `key` (a send that could not be accepted after all), if still bound to `message_id`."""

    @abstractmethod
    async def save(self, message: PushMessage, state: str) -> None: ...

    async def save_many(self, items: Sequence[tuple[PushMessage, str]]) -> None:
        """Several messages at once (a batch): one round trip on Redis."""
        for message, state in items:
            await self.save(message, state)

    async def claim_idempotency_many(self, items: Sequence[tuple[str, str, str, float]]) -> list[str | None]:
        """claim_idempotency for each (app, key, message id, ttl seconds): one round trip on Redis for new keys."""
        return [await self.claim_idempotency(*item) for item in items]

    @abstractmethod
    async def set_state(self, message_id: str, state: str, *, only_from: Sequence[str] = ()) -> bool:
        """Move the state (only from one of `only_from`, when given); False when not moved."""

    @abstractmethod
    async def status(self, message_id: str) -> Status | None: ...

    @abstractmethod
    async def count(self, message: PushMessage, counts: dict[str, int], *, targets: int = 0) -> None:
        """Add outcome counts ("{channel}.{outcome}") to the message, its app's minute and its app's totals."""

    @abstractmethod
    async def count_channel(self, channel: tuple[str, str], sent: int, failed: int) -> None:
        """A vendor channel's running totals (`ch:{namespace}/{name}`: sent, failed), which the operator reads."""

    @abstractmethod
    async def add_failed(self, message_id: str, failed: Sequence[Failed]) -> None: ...

    async def finish_sends(
        self,
        message: PushMessage,
        device_ids: Sequence[str],
        keep_seconds: float,
        counts: dict[str, int],
        failed: Sequence[Failed],
        channel: tuple[str, str],
        sent: Collection[str] = (),
    ) -> None:
        """What a sender records after a group's sends, together (one write on Redis, so that a kill cannot mark
        sends made without counting them): the claims done (`sent`: those the vendor took), the outcome counts,
        the failed tokens, and the channel's totals."""
        await self.finish_devices(message.message_id, device_ids, keep_seconds, sent=sent)
        await self.count(message, counts)
        await self.add_failed(message.message_id, failed)
        await self.count_channel(channel, *sent_and_failed(counts))

    @abstractmethod
    async def remember_tokens(self, message_id: str, pairs: Sequence[tuple[str, str]], keep_seconds: float) -> None:
        """The (device, token) pairs the message is being sent to through a channel whose vendor posts receipts
        naming the token alone (device "": a send by token): written before the sends, so that an early receipt
        finds them, and kept as long as the message."""

    @abstractmethod
    async def token_devices(self, message_id: str, tokens: Sequence[str]) -> list[str | None]:
        """The device the message was sent to with each token ("" for a send by token); None for a token it was
        not sent with: a receipt naming it is not the message's."""

    @abstractmethod
    async def failed(self, message_id: str) -> list[Failed]: ...

    @abstractmethod
    async def stats(self, app: str, first_minute: int, last_minute: int) -> dict[int, dict[str, int]]: ...

    @abstractmethod
    async def totals(self, app: str) -> dict[str, int]: ...

    @abstractmethod
    async def checkpoint(self, message_id: str, step: str | None = None) -> str:
        """Set the fan-out's checkpoint when `step` is given; returns the checkpoint ("" at the start)."""

    @abstractmethod
    async def first_page(self, message_id: str, page: str) -> bool:
        """True the first time the fan-out takes the page after checkpoint `page` (a page done again after a
        kill, between its sends and its checkpoint, is not counted again)."""

    @abstractmethod
    async def claim_devices(self, message_id: str, device_ids: Sequence[str]) -> list[str | None]:
        """Claim (message, device) sends before making them: per device None when now claimed by the caller,
        "p" when another claim is in flight (younger than CLAIM_LEASE_SECONDS), "s" or "d" when done already."""

    @abstractmethod
    async def sent_devices(self, message_id: str, device_ids: Sequence[str]) -> list[bool]:
        """Whether a sender sent the message to each device (the vendor took it), or is sending it."""

    @abstractmethod
    async def renew_devices(self, message_id: str, device_ids: Sequence[str]) -> None:
        """Extend the caller's claims in flight (a send retried after a wait) by CLAIM_LEASE_SECONDS."""

    @abstractmethod
    async def finish_devices(
        self, message_id: str, device_ids: Sequence[str], keep_seconds: float, *, sent: Collection[str] = ()
    ) -> None:
        """Mark the sends done, "s" those in `sent` (the vendor took them), "d" the others (failed), kept
        `keep_seconds` (the message's TTL and then some)."""

    @abstractmethod
    async def schedule(self, message: PushMessage) -> None: ...

    @abstractmethod
    async def take_due(self, now_ms: int, limit: int) -> list[PushMessage]:
        """Due scheduled messages, each leased to the caller for SCHEDULE_LEASE_MS (then handed out again)."""

    @abstractmethod
    async def unschedule(self, message_id: str) -> bool:
        """Drop it from the schedule (sent or canceled); False when it was not there."""

    @abstractmethod
    async def put_template(self, app: str, name: str, template: dict[str, Any]) -> bool:
        """Store (or replace) it; False when the app holds MAX_TEMPLATES others already."""

    @abstractmethod
    async def template(self, app: str, name: str) -> dict[str, Any] | None: ...

    async def templates_named(self, app: str, names: Sequence[str]) -> list[dict[str, Any] | None]:
        """template() of each name (one round trip on Redis)."""
        return [await self.template(app, n) for n in names]

    @abstractmethod
    async def templates(self, app: str) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    async def delete_template(self, app: str, name: str) -> bool: ...

    @abstractmethod
    async def wait_for_user(self, app: str, user_id: str, message_id: str, expires_ms: int) -> None:
        """Keep the message for the user's next bound device until it expires."""

    @abstractmethod
    async def waiting_for_user(self, app: str, user_id: str, now_ms: int) -> list[str]: ...

    async def close(self) -> None:
        return None


class RedisPushState(RedisRole, PushState):
    def __init__(self, redis: str | aioredis.Redis, *, prefix: str = "push:"):
        RedisRole.__init__(self, redis, prefix)
        self._take = self.redis.register_script(
            # KEYS: schedule zset; ARGV: now ms, limit, lease ms. Moves due members to now + lease, returns them.
            """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), id) end
return due
"""
        )

        # KEYS: a batch's hash; ARGV: its messages' JSON lines (no JSON holds a raw newline), their parts (3 hex
        # digits each), their states (lines), seconds to keep the hash: a new one that long, one added to as
        # long as its longest-kept message.
        self._save_batch = self.redis.register_script(
            """
local function line(text, at)  -- the line at `at`, and where the next begins
  local stop = string.find(text, '\\n', at, true) or (#text + 1)
  return string.sub(text, at, stop - 1), stop + 1
end
local fields, n, pos, spos, json, state = {}, 0, 1, 1, nil, nil
while pos <= #ARGV[1] + 1 do
  n = n + 1
  local part = string.sub(ARGV[2], 3 * n - 2, 3 * n)
  json, pos = line(ARGV[1], pos)
  state, spos = line(ARGV[3], spos)
  fields[#fields + 1] = 'json:' .. part
  fields[#fields + 1] = json
  fields[#fields + 1] = 'state:' .. part
  fields[#fields + 1] = state
  if #fields == 1000 then  -- unpack's limit is some thousands of values
    redis.call('HSET', KEYS[1], unpack(fields))
    fields = {}
  end
end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('EXPIRE', KEYS[1], ARGV[4], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[4], 'GT')
return n
"""
        )

        # KEYS: a claim; ARGV: seconds. Extends a claim in flight, never a send made.
        self._renew = self.redis.register_script(
            "if redis.call('GET', KEYS[1]) == 'p' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return 0"
        )

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def claim_idempotency(self, app: str, key: str, message_id: str, ttl_seconds: float) -> str | None:
        k = self._k("i", app, key)
        if await self.redis.set(k, message_id, nx=True, ex=max(int(ttl_seconds), 1)):
            return None
        first = await self.redis.get(k)
        return text(first) if first is not None else None

    async def release_idempotency(self, app: str, key: str, message_id: str) -> None:
        k = self._k("i", app, key)
        if (await self.redis.get(k)) == message_id.encode():
            await self.redis.delete(k)

    async def save(self, message: PushMessage, state: str) -> None:
        await self.save_many([(message, state)])

    def _record(self, message_id: str) -> tuple[str, str, str]:
        """(the key, the JSON's field, the state's field) of a message: a batch's messages share one hash."""
        record, part = batch_part(message_id)
        if not part:
            return self._k("m", record), "json", "state"
        return self._k("m", record), f"json:{part}", f"state:{part}"

    async def save_many(self, items: Sequence[tuple[PushMessage, str]]) -> None:
        # A batch's messages go as three arguments (their JSON lines, parts and states), split into the hash's
        # fields by a script: packing two arguments a message was a tenth of push's CPU per send.
        lone: list[tuple[str, bytes, str, int]] = []
        batches: dict[str, tuple[list[bytes], list[str], list[str], list[int]]] = {}
        for message, state in items:
            record, part = batch_part(message.message_id)
            if not part:
                lone.append((self._k("m", record), message.to_json(), state, int(_keep(message))))
                continue
            lines, parts, states, expiries = batches.setdefault(self._k("m", record), ([], [], [], []))
            lines.append(message.to_json())
            parts.append(part)
            states.append(state)
            expiries.append(message.expires_ms)
        for first in (True, False):
            async with self.redis.pipeline(transaction=False) as p:  # one key each: no transaction needed
                for k, encoded, state, keep in lone:
                    p.hset(k, mapping={"json": encoded, "state": state})
                    p.expire(k, keep)
                for k, (lines, parts, states, expiries) in batches.items():
                    json_lines, keep = b"\n".join(lines), int(_keep_until(max(expiries)))
                    p.evalsha(self._save_batch.sha, 1, k, json_lines, "".join(parts), "\n".join(states), keep)
                try:
                    await p.execute()
                    return
                except NoScriptError:  # not loaded yet, or a Redis restarted since: the writes are idempotent
                    if not first:
                        raise
            await self.redis.script_load(self._save_batch.script)

    async def claim_idempotency_many(self, items: Sequence[tuple[str, str, str, float]]) -> list[str | None]:
        async with self.redis.pipeline(transaction=False) as p:
            for app, key, message_id, ttl in items:
                p.set(self._k("i", app, key), message_id, nx=True, ex=max(int(ttl), 1), get=True)
            firsts = await p.execute()
        return [None if f is None else text(f) for f in firsts]

    async def set_state(self, message_id: str, state: str, *, only_from: Sequence[str] = ()) -> bool:
        k, json_field, state_field = self._record(message_id)
        # KEYS: the message's hash; ARGV: its JSON's field, its state's field, the new state, the states allowed.
        script = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if #ARGV > 3 then
  local ok = false
  for i = 4, #ARGV do if ARGV[i] == cur then ok = true end end
  if not ok then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""
        return bool(await self.redis.eval(script, 1, k, json_field, state_field, state, *only_from))

    async def status(self, message_id: str) -> Status | None:
        k, json_field, state_field = self._record(message_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.hmget(k, [json_field, state_field])
            p.hgetall(self._k("m", message_id, "n"))
            (raw, state), counts = await p.execute()
        if raw is None or state is None:
            return None
        counts = {a.decode(): int(b) for a, b in counts.items()}
        targets = counts.pop("targets", 0)
        return Status(PushMessage.from_json(raw), state.decode(), counts, targets)

    async def count(self, message: PushMessage, counts: dict[str, int], *, targets: int = 0) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            self._count(p, message, counts, targets)
            await p.execute()

    def _count(self, p: Any, message: PushMessage, counts: dict[str, int], targets: int = 0) -> None:
        m, s, t = (
            self._k("m", message.message_id, "n"),
            self._k("s", message.app, str(_minute())),
            self._k("t", message.app),
        )
        for name, n in counts.items():
            if n:
                p.hincrby(m, name, n)
                p.hincrby(s, name, n)
                p.hincrby(t, name, n)
        if targets:
            p.hincrby(m, "targets", targets)
        p.expire(m, int(_keep(message)))
        p.expire(s, STATS_SECONDS)

    async def count_channel(self, channel: tuple[str, str], sent: int, failed: int) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            self._count_channel(p, channel, sent, failed)
            await p.execute()

    def _count_channel(self, p: Any, channel: tuple[str, str], sent: int, failed: int) -> None:
        k = self._k("ch", "/".join(channel))
        p.hincrby(k, "sent", sent)
        p.hincrby(k, "failed", failed)

    async def finish_sends(
        self,
        message: PushMessage,
        device_ids: Sequence[str],
        keep_seconds: float,
        counts: dict[str, int],
        failed: Sequence[Failed],
        channel: tuple[str, str],
        sent: Collection[str] = (),
    ) -> None:
        # One pipeline, written at once: Redis runs every command of it or, if the write never left, none.
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                p.set(self._k("x", message.message_id, d), b"s" if d in sent else b"d", ex=max(int(keep_seconds), 1))
            self._count(p, message, counts)
            self._add_failed(p, message.message_id, failed)
            self._count_channel(p, channel, *sent_and_failed(counts))
            await p.execute()

    async def remember_tokens(self, message_id: str, pairs: Sequence[tuple[str, str]], keep_seconds: float) -> None:
        if pairs:
            k = self._k("m", message_id, "rt")  # one hash a message: token digest -> device
            async with self.redis.pipeline(transaction=False) as p:
                p.hset(k, mapping={token_digest(t): d for d, t in pairs})
                p.expire(k, max(int(keep_seconds), 1), gt=True)
                p.expire(k, max(int(keep_seconds), 1), nx=True)
                await p.execute()

    async def token_devices(self, message_id: str, tokens: Sequence[str]) -> list[str | None]:
        if not tokens:
            return []
        found = await self.redis.hmget(self._k("m", message_id, "rt"), [token_digest(t) for t in tokens])
        return [None if d is None else text(d) for d in found]

    async def add_failed(self, message_id: str, failed: Sequence[Failed]) -> None:
        if not failed:
            return
        async with self.redis.pipeline(transaction=False) as p:
            self._add_failed(p, message_id, failed)
            await p.execute()

    def _add_failed(self, p: Any, message_id: str, failed: Sequence[Failed]) -> None:
        if not failed:
            return
        k = self._k("m", message_id, "f")
        p.rpush(k, *[json.dumps(f.to_json()) for f in failed])
        p.ltrim(k, 0, MAX_FAILED - 1)
        p.expire(k, KEEP_SECONDS + 30 * 86400)

    async def failed(self, message_id: str) -> list[Failed]:
        rows = await self.redis.lrange(self._k("m", message_id, "f"), 0, MAX_FAILED - 1)
        out = []
        for r in rows:
            d = json.loads(r)
            out.append(Failed(d["deviceId"], d["channel"], d["token"], d["reason"]))
        return out

    async def stats(self, app: str, first_minute: int, last_minute: int) -> dict[int, dict[str, int]]:
        minutes = list(range(first_minute, last_minute + 1))
        async with self.redis.pipeline(transaction=False) as p:
            for m in minutes:
                p.hgetall(self._k("s", app, str(m)))
            rows = await p.execute()
        return {m: {text(a): int(b) for a, b in row.items()} for m, row in zip(minutes, rows, strict=True) if row}

    async def totals(self, app: str) -> dict[str, int]:
        return {text(a): int(b) for a, b in (await self.redis.hgetall(self._k("t", app))).items()}

    async def checkpoint(self, message_id: str, step: str | None = None) -> str:
        k = self._k("m", message_id, "c")
        if step is not None:
            await self.redis.set(k, step, ex=KEEP_SECONDS)
            return step
        value = await self.redis.get(k)
        return text(value) if value is not None else ""

    async def first_page(self, message_id: str, page: str) -> bool:
        k = self._k("m", message_id, "p")  # one set a message: the pages taken
        async with self.redis.pipeline(transaction=False) as p:
            p.sadd(k, page)
            p.expire(k, KEEP_SECONDS)
            added, _ = await p.execute()
        return bool(added)

    async def claim_devices(self, message_id: str, device_ids: Sequence[str]) -> list[str | None]:
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                p.set(self._k("x", message_id, d), b"p", nx=True, ex=CLAIM_LEASE_SECONDS, get=True)
            return [None if r is None else text(r) for r in await p.execute()]

    async def sent_devices(self, message_id: str, device_ids: Sequence[str]) -> list[bool]:
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                p.get(self._k("x", message_id, d))
            return [v in (b"s", b"p") for v in await p.execute()]

    async def renew_devices(self, message_id: str, device_ids: Sequence[str]) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                await self._renew(keys=[self._k("x", message_id, d)], args=[CLAIM_LEASE_SECONDS], client=p)
            await p.execute()

    async def finish_devices(
        self, message_id: str, device_ids: Sequence[str], keep_seconds: float, *, sent: Collection[str] = ()
    ) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                p.set(self._k("x", message_id, d), b"s" if d in sent else b"d", ex=max(int(keep_seconds), 1))
            await p.execute()

    async def schedule(self, message: PushMessage) -> None:
        assert message.scheduled_ms is not None
        async with self.redis.pipeline(transaction=True) as p:
            p.zadd(self._k("{sched}"), {message.message_id: message.scheduled_ms})
            p.hset(self._k("{sched}", "m"), message.message_id, message.to_json())
            await p.execute()

    async def take_due(self, now_ms: int, limit: int) -> list[PushMessage]:
        keys = [self._k("{sched}")]
        ids = cast(list[bytes], await self._take(keys=keys, args=[now_ms, limit, SCHEDULE_LEASE_MS]))
        if not ids:
            return []
        rows = await self.redis.hmget(self._k("{sched}", "m"), ids)
        out = []
        for message_id, row in zip(ids, rows, strict=True):
            try:
                out.append(PushMessage.from_json(text(row).encode()))
            except (ValueError, KeyError, TypeError):  # unreadable (or gone): dropped, not handed out for ever
                log.error("push schedule: an entry that does not parse is dropped: %r", text(message_id))
                await self.unschedule(text(message_id))
        return out

    async def unschedule(self, message_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(self._k("{sched}"), message_id)
            p.hdel(self._k("{sched}", "m"), message_id)
            removed, _ = await p.execute()
        return bool(removed)

    async def put_template(self, app: str, name: str, template: dict[str, Any]) -> bool:
        # KEYS: the app's templates; ARGV: name, template, the most an app holds. Checked and set at once.
        script = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
        return bool(await self.redis.eval(script, 1, self._k("tpl", app), name, json.dumps(template), MAX_TEMPLATES))

    async def template(self, app: str, name: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self._k("tpl", app), name)
        return json.loads(raw) if raw is not None else None

    async def templates_named(self, app: str, names: Sequence[str]) -> list[dict[str, Any] | None]:
        if not names:
            return []
        rows = await self.redis.hmget(self._k("tpl", app), names)
        return [json.loads(raw) if raw is not None else None for raw in rows]

    async def templates(self, app: str) -> dict[str, dict[str, Any]]:
        return {text(k): json.loads(v) for k, v in (await self.redis.hgetall(self._k("tpl", app))).items()}

    async def delete_template(self, app: str, name: str) -> bool:
        return bool(await self.redis.hdel(self._k("tpl", app), name))

    async def wait_for_user(self, app: str, user_id: str, message_id: str, expires_ms: int) -> None:
        k = self._k("wait", app, user_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.zadd(k, {message_id: expires_ms})
            p.zremrangebyscore(k, "-inf", int(time.time() * 1000))
            p.zremrangebyrank(k, 0, -1001)  # the 1 000 latest
            await p.execute()
        longest = await self.redis.zrange(k, -1, -1, withscores=True)
        if longest:
            await self.redis.pexpireat(k, int(longest[0][1]))

    async def waiting_for_user(self, app: str, user_id: str, now_ms: int) -> list[str]:
        rows = await self.redis.zrangebyscore(self._k("wait", app, user_id), f"({now_ms}", "+inf")
        return [text(r) for r in rows]


class MemoryPushState(PushState):
    """The same in this process (`mpaas dev`); nothing expires but idempotency keys, claims and waits."""

    def __init__(self) -> None:
        self._idem: dict[tuple[str, str], tuple[str, float]] = {}
        self._messages: dict[str, list[Any]] = {}  # id -> [message, state]
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._failed: dict[str, list[Failed]] = defaultdict(list)
        self._stats: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._channels: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._checkpoints: dict[str, str] = {}
        self._pages: dict[str, set[str]] = {}
        self._claims: dict[tuple[str, str], tuple[str, float]] = {}
        self._sched: dict[str, tuple[int, PushMessage]] = {}
        self._templates: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._waits: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        self._tokens: dict[tuple[str, str], str] = {}  # (message id, token) -> device

    async def claim_idempotency(self, app: str, key: str, message_id: str, ttl_seconds: float) -> str | None:
        now = time.monotonic()
        seen = self._idem.get((app, key))
        if seen is not None and seen[1] > now:
            return seen[0]
        self._idem[(app, key)] = (message_id, now + ttl_seconds)
        return None

    async def release_idempotency(self, app: str, key: str, message_id: str) -> None:
        if self._idem.get((app, key), ("",))[0] == message_id:
            del self._idem[(app, key)]

    async def save(self, message: PushMessage, state: str) -> None:
        self._messages[message.message_id] = [message, state]

    async def remember_tokens(self, message_id: str, pairs: Sequence[tuple[str, str]], keep_seconds: float) -> None:
        self._tokens.update({(message_id, t): d for d, t in pairs})

    async def token_devices(self, message_id: str, tokens: Sequence[str]) -> list[str | None]:
        return [self._tokens.get((message_id, t)) for t in tokens]

    async def set_state(self, message_id: str, state: str, *, only_from: Sequence[str] = ()) -> bool:
        row = self._messages.get(message_id)
        if row is None or (only_from and row[1] not in only_from):
            return False
        row[1] = state
        return True

    async def status(self, message_id: str) -> Status | None:
        row = self._messages.get(message_id)
        if row is None:
            return None
        counts = dict(self._counts.get(message_id, {}))
        targets = counts.pop("targets", 0)
        return Status(row[0], row[1], counts, targets)

    async def count(self, message: PushMessage, counts: dict[str, int], *, targets: int = 0) -> None:
        minute = _minute()
        for name, n in counts.items():
            if n:
                self._counts[message.message_id][name] += n
                self._stats[(message.app, minute)][name] += n
                self._totals[message.app][name] += n
        if targets:
            self._counts[message.message_id]["targets"] += targets

    async def count_channel(self, channel: tuple[str, str], sent: int, failed: int) -> None:
        row = self._channels[channel]
        row["sent"] += sent
        row["failed"] += failed

    async def add_failed(self, message_id: str, failed: Sequence[Failed]) -> None:
        kept = self._failed[message_id]
        kept.extend(failed[: max(MAX_FAILED - len(kept), 0)])

    async def failed(self, message_id: str) -> list[Failed]:
        return list(self._failed.get(message_id, []))

    async def stats(self, app: str, first_minute: int, last_minute: int) -> dict[int, dict[str, int]]:
        out = {}
        for m in range(first_minute, last_minute + 1):
            row = self._stats.get((app, m))
            if row:
                out[m] = dict(row)
        return out

    async def totals(self, app: str) -> dict[str, int]:
        return dict(self._totals.get(app, {}))

    async def checkpoint(self, message_id: str, step: str | None = None) -> str:
        if step is not None:
            self._checkpoints[message_id] = step
        return self._checkpoints.get(message_id, "")

    async def first_page(self, message_id: str, page: str) -> bool:
        pages = self._pages.setdefault(message_id, set())
        if page in pages:
            return False
        pages.add(page)
        return True

    async def claim_devices(self, message_id: str, device_ids: Sequence[str]) -> list[str | None]:
        now = time.monotonic()
        out: list[str | None] = []
        for d in device_ids:
            key = (message_id, d)
            state, until = self._claims.get(key, ("", 0.0))
            if until > now:
                out.append(state)
            else:
                self._claims[key] = ("p", now + CLAIM_LEASE_SECONDS)
                out.append(None)
        return out

    async def sent_devices(self, message_id: str, device_ids: Sequence[str]) -> list[bool]:
        now = time.monotonic()
        claims = [self._claims.get((message_id, d), ("", 0.0)) for d in device_ids]
        return [state in ("s", "p") and until > now for state, until in claims]

    async def renew_devices(self, message_id: str, device_ids: Sequence[str]) -> None:
        until = time.monotonic() + CLAIM_LEASE_SECONDS
        for d in device_ids:
            if self._claims.get((message_id, d), ("", 0.0))[0] == "p":
                self._claims[(message_id, d)] = ("p", until)

    async def finish_devices(
        self, message_id: str, device_ids: Sequence[str], keep_seconds: float, *, sent: Collection[str] = ()
    ) -> None:
        for d in device_ids:
            self._claims[(message_id, d)] = ("s" if d in sent else "d", time.monotonic() + keep_seconds)

    async def schedule(self, message: PushMessage) -> None:
        assert message.scheduled_ms is not None
        self._sched[message.message_id] = (message.scheduled_ms, message)

    async def take_due(self, now_ms: int, limit: int) -> list[PushMessage]:
        due = sorted((at, mid) for mid, (at, _) in self._sched.items() if at <= now_ms)[:limit]
        out = []
        for _, mid in due:
            message = self._sched[mid][1]
            self._sched[mid] = (now_ms + SCHEDULE_LEASE_MS, message)
            out.append(message)
        return out

    async def unschedule(self, message_id: str) -> bool:
        return self._sched.pop(message_id, None) is not None

    async def put_template(self, app: str, name: str, template: dict[str, Any]) -> bool:
        held = self._templates[app]
        if name not in held and len(held) >= MAX_TEMPLATES:
            return False
        held[name] = template
        return True

    async def template(self, app: str, name: str) -> dict[str, Any] | None:
        return self._templates.get(app, {}).get(name)

    async def templates(self, app: str) -> dict[str, dict[str, Any]]:
        return dict(self._templates.get(app, {}))

    async def delete_template(self, app: str, name: str) -> bool:
        return self._templates.get(app, {}).pop(name, None) is not None

    async def wait_for_user(self, app: str, user_id: str, message_id: str, expires_ms: int) -> None:
        self._waits[(app, user_id)][message_id] = expires_ms

    async def waiting_for_user(self, app: str, user_id: str, now_ms: int) -> list[str]:
        waits = self._waits.get((app, user_id), {})
        return [m for m, exp in sorted(waits.items(), key=lambda kv: kv[1]) if exp > now_ms]
