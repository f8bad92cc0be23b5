"""A push message as the server API takes it, checked strictly, and as it travels (JSON on the event log).

Request fields (docs/push.md, "Sending"): `target` {type: device | user | alias | tag | all, ids, filter
{platforms, tags, minAppVersion, maxAppVersion}}, `notification` {title, body, data, badge, sound, category}
or `template` {name, variables}, `ttlSeconds`, `urgent`, `collapseKey`, `scheduledAt`, `idempotencyKey`.
Every malformed field is an `Invalid` naming it; nothing of a refused request is kept.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..rules import version_key as rules_version_key
from .registry import PLATFORMS, valid_id, valid_tag, valid_token

TARGET_TYPES = ("device", "user", "alias", "tag", "all", "token")
MAX_IDS = 1000  # ids in one target
MAX_TTL_SECONDS = 30 * 86400
MAX_SCHEDULE_SECONDS = 30 * 86400
MAX_NOTIFICATION_BYTES = 4096  # the notification as JSON: APNs' and FCM's limit, the smallest common one
MAX_DATA_KEYS = 64
MAX_TEXT = 4096  # characters of any one text of a notification (a data value, the body)
_COLLAPSE = re.compile(r"[\x21-\x7e]{1,64}")
_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")
_IDEMPOTENCY = re.compile(r"[\x21-\x7e]{1,128}")


class Invalid(ValueError):
    """A request the API refuses: `code` is its documented result code (docs/push.md, "Result codes")."""

    def __init__(self, message: str, code: str = "InvalidRequest", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


# Values, never changed once built (dataclasses.replace makes another), yet not frozen: a frozen dataclass sets
# each field through object.__setattr__, which made building the three cost 2.7 times as much.


@dataclass
class Target:
    type: str  # one of TARGET_TYPES
    ids: tuple[str, ...] = ()  # devices, users, aliases or tags; none for "all"
    platforms: tuple[str, ...] = ()  # filter: any of these (empty: every platform)
    tags: tuple[str, ...] = ()  # filter: devices with any of these tags
    min_app_version: str | None = None
    max_app_version: str | None = None
    # type "token" (the gorush API): (channel type, token) pairs sent as they are, without the registry
    tokens: tuple[tuple[str, str], ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.platforms or self.tags or self.min_app_version or self.max_app_version)


@dataclass
class Content:
    title: str | None = None
    body: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    badge: int | None = None
    sound: str | None = None
    category: str | None = None


@dataclass
class PushMessage:
    message_id: str
    app_id: str
    workspace_id: str
    target: Target
    content: Content
    ttl_seconds: int = 86400
    urgent: bool = True
    collapse_key: str | None = None
    scheduled_ms: int | None = None
    created_ms: int = 0
    sync: bool = False  # the caller waits for the vendors' answers (gorush's sync mode)
    link_only: bool = False  # over link alone, never a vendor (a recall notice of a message that showed nothing)
    # A recall notice: the id of the message it recalls. Over link, the notice for the app; through a vendor,
    # to the devices the recalled message was sent to that way, a notification that replaces it where shown.
    # The last field: to_json leaves it out when unset.
    recalls: str | None = None

    @property
    def app(self) -> str:
        return f"{self.app_id}/{self.workspace_id}"

    @property
    def expires_ms(self) -> int:
        return (self.scheduled_ms or self.created_ms) + self.ttl_seconds * 1000

    def link_payload(self) -> bytes:
        """What a link client receives: the notification as UTF-8 JSON with the message id (a recall notice:
        its data alone, for the app to act on; its title and body are what the vendors show)."""
        c = self.content
        body: dict[str, Any] = {"messageId": self.message_id}
        if self.recalls is not None:
            return orjson.dumps(body | {"data": c.data})
        for k, v in (("title", c.title), ("body", c.body), ("badge", c.badge), ("sound", c.sound)):
            if v is not None:
                body[k] = v
        if c.category is not None:
            body["category"] = c.category
        if c.data:
            body["data"] = c.data
        if self.collapse_key is not None:
            body["collapseKey"] = self.collapse_key
        return orjson.dumps(body)

    def to_json(self) -> bytes:
        """Encoded once (the state store and the event log both write it); kept outside the fields, so it is
        not compared. A plain attribute: functools.cached_property takes a lock on every first read."""
        encoded: bytes | None = self.__dict__.get("_json")
        if encoded is None:
            encoded = orjson.dumps(self)  # the dataclasses' fields, as to_dict gives them (orjson, natively)
            if encoded.endswith(_NO_RECALL):  # the last field, left out when unset: what older readers know
                encoded = encoded[: -len(_NO_RECALL)] + b"}"
            self.__dict__["_json"] = encoded
        return encoded

    def to_dict(self) -> dict[str, Any]:
        """By hand: dataclasses.asdict deep-copies every field and costs several times the encoding."""
        t, c = self.target, self.content
        return {
            "message_id": self.message_id,
            "app_id": self.app_id,
            "workspace_id": self.workspace_id,
            "target": {
                "type": t.type,
                "ids": t.ids,
                "platforms": t.platforms,
                "tags": t.tags,
                "min_app_version": t.min_app_version,
                "max_app_version": t.max_app_version,
                "tokens": t.tokens,
            },
            "content": {
                "title": c.title,
                "body": c.body,
                "data": c.data,
                "badge": c.badge,
                "sound": c.sound,
                "category": c.category,
            },
            "ttl_seconds": self.ttl_seconds,
            "urgent": self.urgent,
            "collapse_key": self.collapse_key,
            "scheduled_ms": self.scheduled_ms,
            "created_ms": self.created_ms,
            "sync": self.sync,
            "link_only": self.link_only,
        } | ({"recalls": self.recalls} if self.recalls is not None else {})

    @staticmethod
    def from_json(raw: bytes) -> PushMessage:
        return PushMessage.from_dict(orjson.loads(raw))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PushMessage:
        t = d["target"]
        target = Target(
            type=t["type"],
            ids=tuple(t["ids"]),
            platforms=tuple(t["platforms"]),
            tags=tuple(t["tags"]),
            min_app_version=t["min_app_version"],
            max_app_version=t["max_app_version"],
            tokens=tuple((c, k) for c, k in t["tokens"]),
        )
        d.setdefault("link_only", False)  # written before recalls existed
        known = {k: v for k, v in d.items() if k in _FIELDS}  # a field a newer version writes is left out
        return PushMessage(**{**known, "target": target, "content": Content(**d["content"])})


_FIELDS = frozenset(PushMessage.__dataclass_fields__)
_NO_RECALL = b',"recalls":null}'


def new_message_id() -> str:
    """Time-ordered and unguessable: 12 hex digits of epoch milliseconds, 16 random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def new_batch_ids(n: int) -> list[str]:
    """The ids of a batch's messages (at most 4096): the batch's 24 hex digits (12 of epoch milliseconds, 12
    random), a dash, the message's index in 3 hex digits. The messages of a batch are stored as one record
    (`batch_part`), so that storing a batch costs about one write, not one per message."""
    batch = f"{int(time.time() * 1000):012x}{os.urandom(6).hex()}"
    return [f"{batch}-{i:03x}" for i in range(n)]


def batch_part(message_id: str) -> tuple[str, str]:
    """(the id of the record holding the message, its part in the record): a lone message is its own record
    (part ""), a batch's message is part of its batch's."""
    if len(message_id) == 28 and message_id[24] == "-":
        return message_id[:24], message_id[25:]
    return message_id, ""


_MESSAGE_ID = re.compile(r"[0-9a-f]{28}|[0-9a-f]{24}-[0-9a-f]{3}")


def valid_message_id(value: str) -> bool:
    return _MESSAGE_ID.fullmatch(value) is not None


def version_key(v: str) -> tuple[int, ...]:
    """As the delivery rules compare versions (mpaas.rules: 2.10 is 2.10.0, 2.10.1-beta is 2.10.1); ValueError
    for a version too long to be one."""
    key = rules_version_key(v)
    if key is None:
        raise ValueError(f"not a version: {v[:40]!r}")
    return key


def text_ok(v: object, max_len: int) -> bool:
    """A string of at most `max_len` characters that is valid Unicode (a lone surrogate, which JSON's \\ud800
    escapes can carry, is not: it could never be sent as UTF-8)."""
    if not isinstance(v, str) or len(v) > max_len:
        return False
    if v.isascii():
        return True
    try:
        v.encode()
    except UnicodeEncodeError:
        return False
    return True


def _str(d: dict[str, Any], name: str, *, max_len: int, required: bool = False) -> str | None:
    v = d.get(name)
    if v is None:
        if required:
            raise Invalid(f"{name} is required")
        return None
    if not text_ok(v, max_len):
        raise Invalid(f"{name}: a string of at most {max_len} characters (valid Unicode)")
    return v


def _object(d: dict[str, Any], name: str) -> dict[str, Any]:
    v = d.get(name, {})
    if not isinstance(v, dict):
        raise Invalid(f"{name}: a JSON object")
    return v


def _list(d: dict[str, Any], name: str, check: Any, what: str, *, max_items: int = MAX_IDS) -> tuple[str, ...]:
    v = d.get(name, [])
    if not isinstance(v, list) or len(v) > max_items or not all(check(x) for x in v):
        raise Invalid(f"{name}: a list of at most {max_items} {what}")
    return tuple(dict.fromkeys(v))


def parse_target(raw: object) -> Target:
    if not isinstance(raw, dict):
        raise Invalid("target: an object with type (device, user, alias, tag or all) and ids")
    kind = raw.get("type")
    if kind not in TARGET_TYPES or kind == "token":
        raise Invalid("target.type: device, user, alias, tag or all")
    ids: tuple[str, ...] = ()
    if kind != "all":
        check = valid_tag if kind == "tag" else valid_id
        ids = _list(raw, "ids", check, "ids of 1-128 characters (tags 1-64) without spaces, controls or braces")
        if not ids:
            raise Invalid("target.ids: at least one id")
    elif "ids" in raw:
        raise Invalid("target.ids: not allowed for type all")
    f = _object(raw, "filter")
    if not f:
        return Target(kind, ids)
    unknown = set(f) - {"platforms", "tags", "minAppVersion", "maxAppVersion"}
    if unknown:
        raise Invalid(f"target.filter: unknown fields {sorted(unknown)}")
    if kind not in ("all", "tag", "user"):
        raise Invalid("target.filter applies to types all, tag and user")
    platforms = _list(f, "platforms", lambda p: p in PLATFORMS, f"platforms ({', '.join(PLATFORMS)})", max_items=4)
    tags = _list(f, "tags", valid_tag, "tags", max_items=100)
    versions = []
    for name in ("minAppVersion", "maxAppVersion"):
        v = f.get(name)
        if v is not None and (not isinstance(v, str) or not _VERSION.fullmatch(v)):
            raise Invalid(f"target.filter.{name}: a version of 1 to 4 numbers, like 2.10.1")
        versions.append(v)
    return Target(kind, ids, platforms, tags, versions[0], versions[1])


CONTENT_FIELDS = frozenset(("title", "body", "data", "badge", "sound", "category"))


def parse_content(raw: object) -> Content:
    if not isinstance(raw, dict):
        raise Invalid("notification: an object with title, body, data, badge, sound, category")
    unknown = raw.keys() - CONTENT_FIELDS
    if unknown:
        raise Invalid(f"notification: unknown fields {sorted(unknown)}")
    data = _object(raw, "data")
    if len(data) > MAX_DATA_KEYS or not _texts(data):
        raise Invalid(
            f"notification.data: at most {MAX_DATA_KEYS} keys (strings of up to 256 characters) with string values "
            f"of up to {MAX_TEXT} characters"
        )
    badge = raw.get("badge")
    if badge is not None and (not isinstance(badge, int) or isinstance(badge, bool) or not 0 <= badge <= 99999):
        raise Invalid("notification.badge: an integer 0-99999")
    title, body = _str(raw, "title", max_len=512), _str(raw, "body", max_len=MAX_TEXT)
    if title is None and body is None and not data:
        raise Invalid("notification: give a title, a body or data")
    return Content(title, body, data, badge, _str(raw, "sound", max_len=256), _str(raw, "category", max_len=256))


def _texts(data: dict[str, Any]) -> bool:
    """Keys of up to 256 characters and values of up to MAX_TEXT, all valid Unicode."""
    for k, v in data.items():
        if not (text_ok(k, 256) and text_ok(v, MAX_TEXT)):
            return False
    return True


def parse_time_ms(value: object, name: str) -> int:
    """Epoch milliseconds, or an RFC 3339 time with its offset."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**15:
        return value
    if isinstance(value, str) and len(value) <= 40 and value.isascii():
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            return int(when.timestamp() * 1000)
    raise Invalid(f"{name}: epoch milliseconds, or an RFC 3339 time with its offset (2026-12-01T09:00:00Z)")


def parse_options(raw: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """ttlSeconds, urgent, collapseKey, scheduledAt as PushMessage fields."""
    ttl = raw.get("ttlSeconds", 86400)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= MAX_TTL_SECONDS:
        raise Invalid(f"ttlSeconds: an integer 0-{MAX_TTL_SECONDS} (0: now or never)")
    urgent = raw.get("urgent", True)
    if not isinstance(urgent, bool):
        raise Invalid("urgent: true or false")
    collapse = raw.get("collapseKey")
    if collapse is not None and (not isinstance(collapse, str) or not _COLLAPSE.fullmatch(collapse)):
        raise Invalid("collapseKey: 1-64 printable ASCII characters")
    scheduled = None
    if raw.get("scheduledAt") is not None:
        scheduled = parse_time_ms(raw["scheduledAt"], "scheduledAt")
        if scheduled <= now_ms:
            raise Invalid("scheduledAt is in the past", "ScheduleInPast")
        if scheduled > now_ms + MAX_SCHEDULE_SECONDS * 1000:
            raise Invalid(f"scheduledAt: at most {MAX_SCHEDULE_SECONDS // 86400} days ahead", "ScheduleTooFar")
    return {"ttl_seconds": ttl, "urgent": urgent, "collapse_key": collapse, "scheduled_ms": scheduled}


def idempotency_key(raw: dict[str, Any], header: str | None) -> str | None:
    body = raw.get("idempotencyKey")
    if header is not None and body is not None and body != header:
        raise Invalid("idempotencyKey differs from the Idempotency-Key header")
    key = body if body is not None else header
    if key is not None and (not isinstance(key, str) or not _IDEMPOTENCY.fullmatch(key)):
        raise Invalid("idempotencyKey: 1-128 printable ASCII characters")
    return key


def check_size(message: PushMessage) -> None:
    # The stored JSON holds every field of the link payload, under keys no shorter, so it bounds its size:
    # the payload itself is built only for a message near the limit.
    if len(message.to_json()) <= MAX_NOTIFICATION_BYTES:
        return
    size = len(message.link_payload())
    if size > MAX_NOTIFICATION_BYTES:
        raise Invalid(
            f"the notification is {size} bytes as JSON; at most {MAX_NOTIFICATION_BYTES}", "PayloadTooLarge", 413
        )


def valid_pair(channel: str, token: str) -> bool:
    return bool(channel) and valid_token(token)
