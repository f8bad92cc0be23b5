"""Uploads in each accepted format -> events in one shape, each checked on its own (a bad event never drops the
good ones of its batch).

Formats (docs/analytics.md): the platform's own JSON (`POST /v1/events`), PostHog's capture API (`/batch`,
`/capture`, `/e`, `/i/v0/e`, `/track`) and Countly's `/i` (query string or form body).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from ..resultcodes import ResultCode
from . import codes

_NAME = 200  # characters: event names, device and user ids
_DIGITS = re.compile(r"[0-9]{1,15}")


@dataclass
class Event:
    app_id: str
    workspace_id: str
    source: str  # native | posthog | countly
    name: str
    device_id: str
    user_id: str
    ts_ms: int  # the client's time of the event
    id: str  # unique per event; a retried upload repeats it, so consumers drop repeats
    props: dict[str, Any] = field(default_factory=dict)
    dims: tuple[str, str, str] = ("", "", "")  # (platform, app version, channel): what metrics are split by

    def record(self, received_ms: int) -> tuple[bytes, bytes]:
        """(key, value) for the event log: keyed by app and device, so one device's events stay in order."""
        value = {
            "id": self.id,
            "app": self.app_id,
            "workspace": self.workspace_id,
            "source": self.source,
            "event": self.name,
            "device": self.device_id,
            "user": self.user_id,
            "ts": self.ts_ms,
            "received": received_ms,
            "props": self.props,
            "platform": self.dims[0],
            "version": self.dims[1],
            "channel": self.dims[2],
        }
        key = f"{self.app_id}\n{self.workspace_id}\n{self.device_id}"
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate from the client: escaped, never bytes that are not UTF-8
            data = json.dumps(value, separators=(",", ":")).encode()
        return key.encode("utf-8", "backslashreplace"), data


@dataclass
class Refused:
    index: int
    code: ResultCode
    detail: str


class BadUpload(ValueError):
    """The upload as a whole cannot be read (not JSON, no app key): nothing in it is taken."""


Resolve = Callable[[str], tuple[str, str] | None]  # app key -> (appId, workspaceId)


@dataclass
class Batch:
    app: tuple[str, str] | None  # None: the upload's app key names no registered app
    events: list[Event] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


class Checker:
    """Per-event checks against the server clock: the window an event's time must fall in."""

    def __init__(self, max_future_seconds: int, max_age_seconds: int, clock: Callable[[], float] = time.time):
        self.max_future_ms, self.max_age_ms, self.clock = max_future_seconds * 1000, max_age_seconds * 1000, clock

    def time_problem(self, ts_ms: int) -> ResultCode | None:
        now = int(self.clock() * 1000)
        if ts_ms > now + self.max_future_ms:
            return codes.FROM_THE_FUTURE
        if ts_ms < now - self.max_age_ms:
            return codes.TOO_OLD
        return None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _NAME else None


def _millis(value: object) -> int | None:
    """Epoch milliseconds from a JSON integer or an ASCII digit string (never bool, float text or other digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**15 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def _iso_millis(value: object) -> int | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None  # a time without its zone is not a point in time
    return int(dt.timestamp() * 1000)


def _dim(value: object) -> str:
    """A metric dimension from the client: short text, else nothing (it becomes a label value)."""
    return value if isinstance(value, str) and len(value) <= 64 and value.isprintable() else ""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:  # a huge number costs quadratic time to convert, and is never a figure
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python reads them, other consumers would not


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise BadUpload(f"{what} is not JSON: {str(e)[:100]}") from None


MAX_EVENT_BYTES = 64 * 1024  # an event's properties, as JSON


def _add(batch: Batch, checker: Checker, index: int, event: Event | None, why: str = "") -> None:
    if event is None:
        batch.refused.append(Refused(index, codes.INVALID_EVENT, why))
        return
    if len(json.dumps(event.props, separators=(",", ":"))) > MAX_EVENT_BYTES:
        batch.refused.append(Refused(index, codes.INVALID_EVENT, f"properties over {MAX_EVENT_BYTES} bytes"))
        return
    problem = checker.time_problem(event.ts_ms)
    if problem is not None:
        batch.refused.append(Refused(index, problem, f"time {event.ts_ms}"))
        return
    batch.events.append(event)


# ---- the platform's own format -----------------------------------------------------------------------------


def native(body: bytes, resolve: Resolve, checker: Checker, max_events: int) -> Batch:
    """{"appId", "workspaceId", "deviceId", "userId"?, "events": [{"event", "ts", "props"?, "id"?}]}"""
    doc = _json(body, "the body")
    if not isinstance(doc, dict):
        raise BadUpload("the body must be a JSON object")
    app_id, workspace_id, device = _text(doc.get("appId")), _text(doc.get("workspaceId")), _text(doc.get("deviceId"))
    if app_id is None or workspace_id is None or device is None:
        raise BadUpload("appId, workspaceId and deviceId must be non-empty strings of at most 200 characters")
    items = doc.get("events")
    if not isinstance(items, list):
        raise BadUpload("events must be a list")
    if len(items) > max_events:
        raise OverflowError(f"{len(items)} events, over {max_events}")
    user = doc.get("userId", "")
    user = user if isinstance(user, str) and len(user) <= _NAME else ""
    dims = (_dim(doc.get("platform")), _dim(doc.get("appVersion")), _dim(doc.get("channel")))
    app = resolve(f"{app_id}/{workspace_id}")
    batch = Batch(app)
    if app is None:
        return batch
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            _add(batch, checker, i, None, "an event must be a JSON object")
            continue
        name, ts, props = _text(item.get("event")), _millis(item.get("ts")), item.get("props", {})
        given = item.get("id")
        if name is None or ts is None or not isinstance(props, dict) or (given is not None and _text(given) is None):
            _add(batch, checker, i, None, "event (text), ts (epoch milliseconds) and props (object) are required")
            continue
        event = Event(*app, "native", name, device, user, ts, given or str(uuid.uuid4()), props, dims)
        _add(batch, checker, i, event)
    return batch


# ---- PostHog ------------------------------------------------------------------------------------------------


def _posthog_token(item: dict[str, Any]) -> str | None:
    props = item.get("properties")
    for token in (
        item.get("api_key"),
        item.get("token"),
        item.get("$token"),
        props.get("token") if isinstance(props, dict) else None,
    ):
        if isinstance(token, str) and token:
            return token
    return None


def posthog(body: bytes, resolve: Resolve, checker: Checker, max_events: int) -> Batch:
    """A single event, a list of events, or {"api_key", "batch": [...]} (posthog-node sends the last)."""
    doc = _json(body, "the body")
    if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
        items, token = doc["batch"], _posthog_token(doc)
    elif isinstance(doc, dict):
        items, token = [doc], _posthog_token(doc)
    elif isinstance(doc, list):
        items = doc
        token = next((t for t in (_posthog_token(x) for x in doc if isinstance(x, dict)) if t), None)
    else:
        raise BadUpload("the body must be an event, a list of events or a batch")
    if token is None:
        raise PermissionError("no api_key or token")
    if len(items) > max_events:
        raise OverflowError(f"{len(items)} events, over {max_events}")
    batch = Batch(resolve(token))
    if batch.app is None:
        return batch
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            _add(batch, checker, i, None, "an event must be a JSON object")
            continue
        own = _posthog_token(item)
        if own is not None and own != token and resolve(own) != batch.app:
            batch.refused.append(Refused(i, codes.OTHER_APP, "the event's token is not the batch's"))
            continue
        props = item.get("properties", {})
        props = props if isinstance(props, dict) else None
        name = _text(item.get("event"))
        distinct = _text(item.get("distinct_id")) or (_text(props.get("distinct_id")) if props else None)
        stamp = item.get("timestamp")
        ts = checker.now_ms() if stamp is None else _iso_millis(stamp)
        if props is None or name is None or distinct is None or ts is None:
            _add(batch, checker, i, None, "event, distinct_id, properties (object) and an ISO 8601 timestamp")
            continue
        device = _text(props.get("$device_id")) or distinct
        given = _text(item.get("uuid"))
        dims = (_dim(props.get("$os")), _dim(props.get("$app_version")), _dim(props.get("$app_channel")))
        event = Event(*batch.app, "posthog", name, device, distinct, ts, given or str(uuid.uuid4()), props, dims)
        _add(batch, checker, i, event)
    return batch


# ---- Countly ------------------------------------------------------------------------------------------------


def countly_params(query: bytes, body: bytes, content_type: str, max_bytes: int) -> dict[str, str]:
    """The request's parameters: the query string, and a form body (the SDK posts long requests)."""
    if len(query) > max_bytes:
        raise OverflowError(f"query string over {max_bytes} bytes")
    try:
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True, max_num_fields=64))
    except ValueError as e:
        raise BadUpload(f"the query string does not parse: {str(e)[:100]}") from None
    if body:
        if not content_type.lower().startswith("application/x-www-form-urlencoded"):
            raise BadUpload("a Countly POST body must be application/x-www-form-urlencoded")
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as e:
            raise BadUpload(f"the form body does not parse: {str(e)[:100]}") from None
        params.update(form)
    return params


_COUNTLY_PER_ATTEMPT = frozenset({"rr", "checksum", "checksum256"})


def countly(params: dict[str, str], resolve: Resolve, checker: Checker, max_events: int) -> Batch:
    """One Countly request: session begin, extend or end, events, a crash; each becomes an event here."""
    key, device = _text(params.get("app_key")), _text(params.get("device_id"))
    if key is None or device is None:
        raise BadUpload('Missing parameter "app_key" or "device_id"')
    batch = Batch(resolve(key))
    if batch.app is None:
        return batch
    sent = _millis(params.get("timestamp")) if "timestamp" in params else checker.now_ms()
    found: list[tuple[str, int | None, dict[str, Any] | None]] = []  # (name, ts, props): props None = invalid
    metrics = _json(params["metrics"], "metrics") if "metrics" in params else {}
    m = metrics if isinstance(metrics, dict) else {}
    dims = (_dim(m.get("_os")), _dim(m.get("_app_version")), _dim(m.get("_store")))
    if params.get("begin_session") == "1":
        found.append(("$session_start", sent, metrics if isinstance(metrics, dict) else None))
    if "session_duration" in params or params.get("end_session") == "1":
        duration = _millis(params.get("session_duration", "0"))
        name = "$session_end" if params.get("end_session") == "1" else "$session_extend"
        found.append((name, sent, {"duration": duration} if duration is not None else None))
    if "events" in params:
        items = _json(params["events"], "events")
        if not isinstance(items, list):
            raise BadUpload("events must be a JSON list")
        if len(items) > max_events:
            raise OverflowError(f"{len(items)} events, over {max_events}")
        for item in items:
            if not isinstance(item, dict) or _text(item.get("key")) is None:
                found.append(("", None, None))
                continue
            props = {k: item[k] for k in ("count", "sum", "dur", "segmentation") if k in item}
            ts = _millis(item["timestamp"]) if "timestamp" in item else sent
            found.append((item["key"], ts, props))
    if "crash" in params:
        crash = _json(params["crash"], "crash")
        found.append(("$crash", sent, crash if isinstance(crash, dict) else None))
    user = _text(params.get("user_id")) or ""
    # Countly events carry no id; the SDK resends a request unchanged until it is acknowledged, so an id from the
    # request's content lets consumers drop the repeats.
    # Left out: what the SDK changes on each attempt (Android's `rr`, requests left in its queue) and checksums.
    stable = sorted((k, v) for k, v in params.items() if k not in _COUNTLY_PER_ATTEMPT)
    base = hashlib.sha256(json.dumps(stable).encode()).hexdigest()[:24]
    for i, (name, ts, fields) in enumerate(found):
        if not name or ts is None or fields is None:
            _add(batch, checker, i, None, "an event needs a key, an object and a valid timestamp")
            continue
        _add(batch, checker, i, Event(*batch.app, "countly", name, device, user, ts, f"{base}-{i}", fields, dims))
    return batch


# ---- mPaaS log lines ----------------------------------------------------------------------------------------
# One comma-separated line per log, the meaning of each field given by its position and the line's header
# (field 00). The positions are those of mPaaS's published log models (counted from 00): behaviour and custom
# events `D-VM`, performance `D-MM`. A field of "-" is empty.

_MPAAS_FIELDS = {"D-VM": 26, "D-MM": 24}  # the fewest fields a line of each header must have
_MPAAS_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _mpaas_app(field: str) -> tuple[str, str, str] | None:
    """(appId, platform, workspaceId) of field 02, `<appId>_<PLATFORM>-<workspaceId>` (the app id may hold "_")."""
    app, sep, rest = field.rpartition("_")
    platform, dash, workspace = rest.partition("-")
    return (app, platform.lower(), workspace) if sep and dash and app and platform and workspace else None


def _mpaas_props(field: str) -> dict[str, str]:
    """Field 22 of D-VM: `k=v^k=v`."""
    out: dict[str, str] = {}
    for pair in field.split("^")[:64]:
        k, sep, v = pair.partition("=")
        if sep and k:
            out[k[:100]] = v[:1000]
    return out


def mpaas_lines(body: bytes, resolve: Resolve, checker: Checker, max_events: int, tz_minutes: int = 0) -> Batch:
    """Newline-separated mPaaS log lines (UTF-8). Field 01, the client's time, has no zone: it is read in
    `tz_minutes` east of UTC (the upload's `tz` parameter, as Countly's SDKs send it), UTC by default."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadUpload(f"the body is not UTF-8: {e}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > max_events:
        raise OverflowError(f"{len(lines)} lines, over {max_events}")
    first = lines[0].split(",", 3) if lines else []
    named = _mpaas_app(first[2]) if len(first) > 2 else None
    if named is None:
        raise BadUpload("the first line's field 02 must be <appId>_<PLATFORM>-<workspaceId>")
    batch = Batch(resolve(f"{named[0]}/{named[2]}"))
    if batch.app is None:
        return batch
    for i, line in enumerate(lines):
        f = [x if x != "-" else "" for x in line.split(",")]
        need = _MPAAS_FIELDS.get(f[0])
        if need is None or len(f) < need:
            _add(batch, checker, i, None, f"a D-VM line of at least 26 fields or a D-MM line of 24, not {f[0][:8]!r}")
            continue
        app = _mpaas_app(f[2])
        if app is None or (app[0], app[2]) != batch.app:
            batch.refused.append(Refused(i, codes.OTHER_APP, "field 02 names another app than the first line"))
            continue
        try:
            local = datetime.strptime(f[1], _MPAAS_TIME).replace(tzinfo=UTC)
            ts = int(local.timestamp() * 1000) - tz_minutes * 60_000
        except ValueError:
            _add(batch, checker, i, None, "field 01 must be the time as yyyy-MM-dd HH:mm:ss.SSS")
            continue
        if f[0] == "D-VM":
            device, name, channel = f[25], f[15], f[37] if len(f) > 37 else ""
            name = "launch" if name == "reportActive" else name
            props: dict[str, Any] = _mpaas_props(f[22])
        else:  # D-MM: field 12 the measure, 13 its value, 14 "0" for a first (cold) start
            device, channel = f[23], f[22]
            value = _millis(f[13])
            if f[12] == "time_startup":
                name, props = "startup", {"ms": value, "cold": f[14] == "0"}
            else:
                name, props = f"perf:{f[12]}", {"value": value}
        if not name or not device or len(name) > _NAME or len(device) > _NAME:
            _add(batch, checker, i, None, "the line names no event or no device")
            continue
        props |= {"session": f[6]} if f[6] else {}
        dims = (app[1], _dim(f[3]), _dim(channel))
        ident = hashlib.sha256(line.encode()).hexdigest()[:32]  # the same line sent again is the same event
        _add(batch, checker, i, Event(*batch.app, "mpaas", name, device, f[7][:_NAME], ts, ident, props, dims))
    return batch
