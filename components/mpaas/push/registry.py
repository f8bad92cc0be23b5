"""The device registry: each app's devices, their vendor tokens and tags, and who uses them (users, aliases).

Per app (`appId/workspaceId`): a device has a platform, a brand, its vendor tokens (channel type -> token), an
app version, tags, at most one user and at most one alias. A user has any number of devices; binding a
device to another user moves it. An alias names one device; giving it to another device moves it. Every key
of an app shares the app's hash tag (one Redis Cluster slot), so each change is one atomic script: a device's
tags, user and alias and the sets that index them never disagree.

Redis keys, under `prefix{app/workspace}:`: `d:{device}` (hash), `all` (set of devices), `u:{user}`,
`g:{tag}` (sets of devices), `a:{alias}` (the device).
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import redis.asyncio as aioredis

from ..stores.redis_common import RedisRole, run_script, tagged
from .redis_text import text

# Ids: 1-128 characters without control characters, spaces or braces (the link protocol's device ids); tags
# at most 64. Vendor tokens are opaque but bounded.
_ID = re.compile(r"[^\x00-\x20\x7f-\x9f{}\u2028\u2029\ud800-\udfff]{1,128}")
_TAG = re.compile(r"[^\x00-\x20\x7f-\x9f{}\u2028\u2029\ud800-\udfff]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,1024}")  # the vendors' tokens are 44 to about 200 characters
MAX_TAGS = 100
PLATFORMS = ("ios", "android", "harmony", "web")


class UnknownDevice(LookupError):
    pass


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def valid_tag(value: object) -> bool:
    return isinstance(value, str) and _TAG.fullmatch(value) is not None


def valid_token(value: object) -> bool:
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


@dataclass(frozen=True)
class Device:
    device_id: str
    platform: str  # one of PLATFORMS
    brand: str = ""  # lower case: apple, huawei, honor, xiaomi, oppo, vivo, samsung, ...
    tokens: Mapping[str, str] = field(default_factory=dict)  # channel type (APNs, FCM, Huawei, ...) -> token
    app_version: str = ""
    tags: tuple[str, ...] = ()
    user_id: str | None = None
    alias: str | None = None
    updated_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "platform": self.platform,
            "brand": self.brand,
            "tokens": dict(self.tokens),
            "appVersion": self.app_version,
            "tags": list(self.tags),
            "userId": self.user_id,
            "alias": self.alias,
            "updatedAt": self.updated_ms,
        }


def _fields(d: Device) -> dict[str, str]:
    return {
        "p": d.platform,
        "b": d.brand,
        "k": json.dumps(dict(d.tokens), separators=(",", ":")),
        "v": d.app_version,
        "g": json.dumps(list(d.tags), separators=(",", ":")),
        "at": str(d.updated_ms),
    }


def _device(device_id: str, h: Mapping[str, str]) -> Device:
    return Device(
        device_id=device_id,
        platform=h.get("p", ""),
        brand=h.get("b", ""),
        tokens=json.loads(h.get("k") or "{}"),
        app_version=h.get("v", ""),
        tags=tuple(json.loads(h.get("g") or "[]")),
        user_id=h.get("u") or None,
        alias=h.get("a") or None,
        updated_ms=int(h.get("at") or 0),
    )


class Registry(ABC):
    """One app is `app` = "appId/workspaceId" in every call."""

    @abstractmethod
    async def register(self, app: str, device: Device) -> Device:
        """Create or replace a device's platform, brand, tokens, version and tags; its user and alias stay."""

    @abstractmethod
    async def get_many(self, app: str, device_ids: Sequence[str]) -> list[Device | None]: ...

    async def get(self, app: str, device_id: str) -> Device | None:
        return (await self.get_many(app, [device_id]))[0]

    async def registered(self, app: str, device_ids: Sequence[str]) -> list[bool]:
        """Whether each device is registered (one round trip on Redis, without reading the records)."""
        return [d is not None for d in await self.get_many(app, device_ids)]

    @abstractmethod
    async def unregister(self, app: str, device_id: str) -> bool:
        """Forget a device with its user binding, tags and alias; False when unknown."""

    @abstractmethod
    async def bind(self, app: str, user_id: str, device_id: str) -> str | None:
        """Bind the device to the user (moving it from its former user, returned); UnknownDevice."""

    @abstractmethod
    async def unbind(self, app: str, user_id: str, device_id: str) -> bool:
        """False when the device was not bound to that user."""

    @abstractmethod
    async def user_devices(self, app: str, user_id: str) -> list[str]: ...

    @abstractmethod
    async def set_alias(self, app: str, device_id: str, alias: str | None) -> str | None:
        """Give the device the alias (taken from any other device), or none; returns the device that had it
        before, if another. UnknownDevice."""

    @abstractmethod
    async def alias_device(self, app: str, alias: str) -> str | None: ...

    async def alias_devices(self, app: str, aliases: Sequence[str]) -> list[str | None]:
        """alias_device of each (one round trip on Redis)."""
        return [await self.alias_device(app, a) for a in aliases]

    async def bound_users(self, app: str, user_ids: Sequence[str]) -> list[bool]:
        """Whether each user has a device bound (one round trip on Redis)."""
        return [bool(await self.user_devices(app, u)) for u in user_ids]

    @abstractmethod
    async def change_tags(self, app: str, device_id: str, add: Iterable[str], remove: Iterable[str]) -> list[str]:
        """The device's tags after the change; UnknownDevice; ValueError past MAX_TAGS."""

    @abstractmethod
    async def scan(self, app: str, cursor: str, count: int, *, tag: str | None = None) -> tuple[str, list[str]]:
        """A page of the app's devices (or a tag's): (next cursor, "" when done; device ids). A scan resumed
        from a cursor may repeat a device, never misses one that stayed registered."""

    @abstractmethod
    async def remove_token(self, app: str, device_id: str, channel: str, token: str) -> bool:
        """Drop the device's token for `channel` if it is still `token` (the vendor said it is dead)."""

    @abstractmethod
    async def count(self, app: str) -> int: ...

    async def close(self) -> None:
        return None


# --- Redis ---------------------------------------------------------------------------------------------
# KEYS[1] = the device hash, KEYS[2] = the app's device set; key names of sets are built in the scripts from
# ARGV[1], the app's key prefix ("prefix{app}:"), which carries the same hash tag.

_REGISTER = """
local old = redis.call('HGET', KEYS[1], 'g')
local removed = {}
if old then
  for _, t in ipairs(cjson.decode(old)) do removed[t] = true end
end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local new = cjson.decode(redis.call('HGET', KEYS[1], 'g'))
for _, t in ipairs(new) do
  if removed[t] then removed[t] = nil else redis.call('SADD', ARGV[1] .. 'g:' .. t, ARGV[2]) end
end
for t, _ in pairs(removed) do redis.call('SREM', ARGV[1] .. 'g:' .. t, ARGV[2]) end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

_UNREGISTER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = redis.call('HMGET', KEYS[1], 'g', 'u', 'a')
for _, t in ipairs(cjson.decode(h[1] or '[]')) do redis.call('SREM', ARGV[1] .. 'g:' .. t, ARGV[2]) end
if h[2] then redis.call('SREM', ARGV[1] .. 'u:' .. h[2], ARGV[2]) end
if h[3] and redis.call('GET', ARGV[1] .. 'a:' .. h[3]) == ARGV[2] then redis.call('DEL', ARGV[1] .. 'a:' .. h[3]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

# ARGV: prefix, device, user. Returns {found, former user or ''}.
_BIND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local former = redis.call('HGET', KEYS[1], 'u') or ''
if former ~= '' and former ~= ARGV[3] then redis.call('SREM', ARGV[1] .. 'u:' .. former, ARGV[2]) end
redis.call('HSET', KEYS[1], 'u', ARGV[3])
redis.call('SADD', ARGV[1] .. 'u:' .. ARGV[3], ARGV[2])
return {1, former}
"""

_UNBIND = """
if redis.call('HGET', KEYS[1], 'u') ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], 'u')
redis.call('SREM', ARGV[1] .. 'u:' .. ARGV[3], ARGV[2])
return 1
"""

# ARGV: prefix, device, alias ('' to remove). Returns {found, the device that had the alias or ''}.
_ALIAS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local mine = redis.call('HGET', KEYS[1], 'a')
if mine and mine ~= ARGV[3] and redis.call('GET', ARGV[1] .. 'a:' .. mine) == ARGV[2] then
  redis.call('DEL', ARGV[1] .. 'a:' .. mine)
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'a')
  return {1, ''}
end
local holder = redis.call('GET', ARGV[1] .. 'a:' .. ARGV[3]) or ''
if holder ~= '' and holder ~= ARGV[2] then redis.call('HDEL', ARGV[1] .. 'd:' .. holder, 'a') end
redis.call('SET', ARGV[1] .. 'a:' .. ARGV[3], ARGV[2])
redis.call('HSET', KEYS[1], 'a', ARGV[3])
if holder == ARGV[2] then holder = '' end
return {1, holder}
"""

# ARGV: prefix, device, max tags, then '+tag' or '-tag' each. Returns the tags as JSON, or 0 when unknown, -1
# when past the limit.
_TAGS = """
local g = redis.call('HGET', KEYS[1], 'g')
if not g then return 0 end
local tags, seen = {}, {}
for _, t in ipairs(cjson.decode(g)) do tags[#tags + 1] = t; seen[t] = true end
for i = 4, #ARGV do
  local op, t = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if op == '+' and not seen[t] then tags[#tags + 1] = t; seen[t] = true end
  if op == '-' and seen[t] then seen[t] = nil end
end
local out = {}
for _, t in ipairs(tags) do if seen[t] then out[#out + 1] = t end end
if #out > tonumber(ARGV[3]) then return -1 end
for i = 4, #ARGV do
  local op, t = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if seen[t] then redis.call('SADD', ARGV[1] .. 'g:' .. t, ARGV[2])
  else redis.call('SREM', ARGV[1] .. 'g:' .. t, ARGV[2]) end
end
local encoded = '[]'
if #out > 0 then encoded = cjson.encode(out) end
redis.call('HSET', KEYS[1], 'g', encoded)
return encoded
"""

# ARGV: channel, token. Returns 1 when removed.
_REMOVE_TOKEN = """
local k = redis.call('HGET', KEYS[1], 'k')
if not k then return 0 end
local tokens = cjson.decode(k)
if tokens[ARGV[1]] ~= ARGV[2] then return 0 end
tokens[ARGV[1]] = nil
local encoded = cjson.encode(tokens)
if encoded == '[]' then encoded = '{}' end
redis.call('HSET', KEYS[1], 'k', encoded)
return 1
"""


class RedisRegistry(RedisRole, Registry):
    def __init__(self, redis: str | aioredis.Redis, *, prefix: str = "push:"):
        RedisRole.__init__(self, redis, prefix)
        scripts = {
            "register": _REGISTER,
            "unregister": _UNREGISTER,
            "bind": _BIND,
            "unbind": _UNBIND,
            "alias": _ALIAS,
            "tags": _TAGS,
            "remove_token": _REMOVE_TOKEN,
        }
        self._scripts = {name: self.redis.register_script(text) for name, text in scripts.items()}

    def _base(self, app: str) -> str:
        return tagged(self.prefix, app) + ":"

    def _keys(self, app: str, device_id: str) -> list[str]:
        base = self._base(app)
        return [f"{base}d:{device_id}", f"{base}all"]

    async def _run(self, name: str, app: str, device_id: str, *args: object) -> Any:
        return await run_script(self._scripts[name], self._keys(app, device_id), [self._base(app), device_id, *args])

    async def register(self, app: str, device: Device) -> Device:
        device = replace(device, updated_ms=int(time.time() * 1000))
        pairs = [x for kv in _fields(device).items() for x in kv]
        await self._run("register", app, device.device_id, *pairs)
        found = await self.get(app, device.device_id)
        assert found is not None
        return found

    async def get_many(self, app: str, device_ids: Sequence[str]) -> list[Device | None]:
        base = self._base(app)
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                p.hgetall(f"{base}d:{d}")
            rows = await p.execute()
        out: list[Device | None] = []
        for d, row in zip(device_ids, rows, strict=True):
            h = {k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], row).items()}
            out.append(_device(d, h) if h else None)
        return out

    async def registered(self, app: str, device_ids: Sequence[str]) -> list[bool]:
        base = self._base(app)
        async with self.redis.pipeline(transaction=False) as p:
            for d in device_ids:
                p.exists(f"{base}d:{d}")
            return [bool(n) for n in await p.execute()]

    async def unregister(self, app: str, device_id: str) -> bool:
        return bool(await self._run("unregister", app, device_id))

    async def bind(self, app: str, user_id: str, device_id: str) -> str | None:
        found, former = await self._run("bind", app, device_id, user_id)
        if not found:
            raise UnknownDevice(device_id)
        former = former.decode() if isinstance(former, bytes) else former
        return former if former and former != user_id else None

    async def unbind(self, app: str, user_id: str, device_id: str) -> bool:
        return bool(await self._run("unbind", app, device_id, user_id))

    async def user_devices(self, app: str, user_id: str) -> list[str]:
        return sorted(text(m) for m in await self.redis.smembers(f"{self._base(app)}u:{user_id}"))

    async def set_alias(self, app: str, device_id: str, alias: str | None) -> str | None:
        found, holder = await self._run("alias", app, device_id, alias or "")
        if not found:
            raise UnknownDevice(device_id)
        holder = holder.decode() if isinstance(holder, bytes) else holder
        return holder or None

    async def alias_device(self, app: str, alias: str) -> str | None:
        value = await self.redis.get(f"{self._base(app)}a:{alias}")
        return text(value) if value is not None else None

    async def alias_devices(self, app: str, aliases: Sequence[str]) -> list[str | None]:
        if not aliases:
            return []
        values = await self.redis.mget([f"{self._base(app)}a:{a}" for a in aliases])  # one app's: one slot
        return [text(v) if v is not None else None for v in values]

    async def bound_users(self, app: str, user_ids: Sequence[str]) -> list[bool]:
        async with self.redis.pipeline(transaction=False) as p:
            for u in user_ids:
                p.scard(f"{self._base(app)}u:{u}")
            return [bool(n) for n in await p.execute()]

    async def change_tags(self, app: str, device_id: str, add: Iterable[str], remove: Iterable[str]) -> list[str]:
        ops = [f"+{t}" for t in add] + [f"-{t}" for t in remove]
        result = await self._run("tags", app, device_id, MAX_TAGS, *ops)
        if result == 0:
            raise UnknownDevice(device_id)
        if result == -1:
            raise ValueError(f"a device has at most {MAX_TAGS} tags")
        return list(json.loads(result))

    async def scan(self, app: str, cursor: str, count: int, *, tag: str | None = None) -> tuple[str, list[str]]:
        key = f"{self._base(app)}g:{tag}" if tag is not None else f"{self._base(app)}all"
        nxt, members = await self.redis.sscan(key, int(cursor or 0), count=count)
        return ("" if int(nxt) == 0 else str(nxt)), [text(m) for m in members]

    async def remove_token(self, app: str, device_id: str, channel: str, token: str) -> bool:
        keys = self._keys(app, device_id)
        return bool(await run_script(self._scripts["remove_token"], keys, [channel, token]))

    async def count(self, app: str) -> int:
        return int(await self.redis.scard(f"{self._base(app)}all"))


# --- in-process ----------------------------------------------------------------------------------------


@dataclass
class _App:
    devices: dict[str, Device] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tags: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    aliases: dict[str, str] = field(default_factory=dict)


class MemoryRegistry(Registry):
    """The same behaviour in this process (`mpaas dev`)."""

    def __init__(self) -> None:
        self._apps: dict[str, _App] = defaultdict(_App)

    def _device(self, app: str, device_id: str) -> tuple[_App, Device]:
        state = self._apps[app]
        d = state.devices.get(device_id)
        if d is None:
            raise UnknownDevice(device_id)
        return state, d

    async def register(self, app: str, device: Device) -> Device:
        state = self._apps[app]
        old = state.devices.get(device.device_id)
        for t in old.tags if old else ():
            state.tags[t].discard(device.device_id)
        for t in device.tags:
            state.tags[t].add(device.device_id)
        device = replace(
            device,
            tags=tuple(dict.fromkeys(device.tags)),
            user_id=old.user_id if old else None,
            alias=old.alias if old else None,
            updated_ms=int(time.time() * 1000),
        )
        state.devices[device.device_id] = device
        return device

    async def get_many(self, app: str, device_ids: Sequence[str]) -> list[Device | None]:
        state = self._apps[app]
        return [state.devices.get(d) for d in device_ids]

    async def unregister(self, app: str, device_id: str) -> bool:
        state = self._apps[app]
        d = state.devices.pop(device_id, None)
        if d is None:
            return False
        for t in d.tags:
            state.tags[t].discard(device_id)
        if d.user_id:
            state.users[d.user_id].discard(device_id)
        if d.alias and state.aliases.get(d.alias) == device_id:
            del state.aliases[d.alias]
        return True

    async def bind(self, app: str, user_id: str, device_id: str) -> str | None:
        state, d = self._device(app, device_id)
        former = d.user_id
        if former and former != user_id:
            state.users[former].discard(device_id)
        state.users[user_id].add(device_id)
        state.devices[device_id] = replace(d, user_id=user_id)
        return former if former and former != user_id else None

    async def unbind(self, app: str, user_id: str, device_id: str) -> bool:
        state = self._apps[app]
        d = state.devices.get(device_id)
        if d is None or d.user_id != user_id:
            return False
        state.users[user_id].discard(device_id)
        state.devices[device_id] = replace(d, user_id=None)
        return True

    async def user_devices(self, app: str, user_id: str) -> list[str]:
        return sorted(self._apps[app].users.get(user_id, ()))

    async def set_alias(self, app: str, device_id: str, alias: str | None) -> str | None:
        state, d = self._device(app, device_id)
        if d.alias and d.alias != alias and state.aliases.get(d.alias) == device_id:
            del state.aliases[d.alias]
        if alias is None:
            state.devices[device_id] = replace(d, alias=None)
            return None
        holder = state.aliases.get(alias)
        if holder is not None and holder != device_id and holder in state.devices:
            state.devices[holder] = replace(state.devices[holder], alias=None)
        state.aliases[alias] = device_id
        state.devices[device_id] = replace(d, alias=alias)
        return holder if holder != device_id else None

    async def alias_device(self, app: str, alias: str) -> str | None:
        return self._apps[app].aliases.get(alias)

    async def change_tags(self, app: str, device_id: str, add: Iterable[str], remove: Iterable[str]) -> list[str]:
        state, d = self._device(app, device_id)
        gone = set(remove)
        tags = [t for t in dict.fromkeys([*d.tags, *add]) if t not in gone]
        if len(tags) > MAX_TAGS:
            raise ValueError(f"a device has at most {MAX_TAGS} tags")
        for t in d.tags:
            state.tags[t].discard(device_id)
        for t in tags:
            state.tags[t].add(device_id)
        state.devices[device_id] = replace(d, tags=tuple(tags))
        return tags

    async def scan(self, app: str, cursor: str, count: int, *, tag: str | None = None) -> tuple[str, list[str]]:
        state = self._apps[app]
        ids = sorted(state.tags.get(tag, set()) if tag is not None else state.devices)
        start = int(cursor or 0)
        page = ids[start : start + count]
        end = start + len(page)
        return ("" if end >= len(ids) else str(end)), page

    async def remove_token(self, app: str, device_id: str, channel: str, token: str) -> bool:
        state = self._apps[app]
        d = state.devices.get(device_id)
        if d is None or d.tokens.get(channel) != token:
            return False
        state.devices[device_id] = replace(d, tokens={k: v for k, v in d.tokens.items() if k != channel})
        return True

    async def count(self, app: str) -> int:
        return len(self._apps[app].devices)
