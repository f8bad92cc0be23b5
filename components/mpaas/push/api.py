"""The push server API (docs/push.md): devices, users, tags and aliases; sends, batches, templates and
broadcasts; message status, receipts and stats; and gorush's `/api/push` and `/api/stat/app`.

Every answer to a refused call is `{"code": ..., "message": ...}` with a documented code and status; nothing
of a refused call is kept or sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import yaml
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse as StarletteJSONResponse
from redis.exceptions import RedisError

from .. import __version__
from ..analytics.upload import Malformed, TooLarge, read
from ..apps import AppDirectory
from ..config import LiveConfig
from ..rules import parse_uint
from ..stores import HotStore
from . import auth, receipts
from .accept import Accepter, Unavailable
from .config import PushConfig
from .fanout import Fanout
from .messages import (
    MAX_IDS,
    MAX_TEXT,
    Content,
    Invalid,
    PushMessage,
    Target,
    check_size,
    idempotency_key,
    new_batch_ids,
    new_message_id,
    parse_content,
    parse_options,
    parse_target,
    parse_time_ms,
    text_ok,
    valid_message_id,
)
from .registry import MAX_TAGS, PLATFORMS, Device, Registry, UnknownDevice, valid_id, valid_tag, valid_token
from .state import MAX_TEMPLATES, PushState

log = logging.getLogger("mpaas.push")

MAX_BODY = 1 << 20
MAX_BATCH = 500
LOOKUP_CHUNK = 1000  # ids looked up in one round trip when a batch's targets are checked
MAX_RECALLED_TEXT = 256  # characters of the title and the text a recall at a vendor shows in place of the message
MAX_TEMPLATE_BYTES = 16 * 1024  # a stored template as JSON: what it expands to is at most 4096 bytes anyway
SYNC_WAIT_SECONDS = 30.0  # gorush's sync mode waits at most this for the vendors' answers
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]{1,64})\s*\}\}")
_BRAND = re.compile(r"[a-z0-9_-]{0,32}")
_APP_VERSION = re.compile(r"[0-9A-Za-z.+_-]{0,32}")
# gorush's platform numbers: 1 iOS (APNs), 2 Android (FCM), 3 Huawei; then this platform's own.
GORUSH_PLATFORMS = {1: "APNs", 2: "FCM", 3: "Huawei", 4: "Xiaomi", 5: "OPPO", 6: "Vivo", 7: "Honor"}
GORUSH_NAMES = {"APNs": "ios", "FCM": "android", "Huawei": "huawei"}  # gorush's own names; the others lower case
NOT_ERRORS = {"Link.Broadcast", "Link.Sent"}  # counted outcomes that are not failures


@dataclass
class Context:
    live: LiveConfig[PushConfig]
    apps: Callable[[], AppDirectory]
    registry: Registry
    state: PushState
    hot: HotStore
    accepter: Accepter
    fanout: Fanout


class JSONResponse(StarletteJSONResponse):
    """Encoded by orjson: a batch's answer holds one result a message."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


SEND_FIELDS = frozenset(
    ("target", "notification", "template", "ttlSeconds", "urgent", "collapseKey", "scheduledAt", "idempotencyKey")
)


def _error(e: Invalid) -> JSONResponse:
    return JSONResponse({"code": e.code, "message": str(e)}, status_code=e.status)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body else None  # at most 1024 levels deep; no NaN, no lone surrogate
    except ValueError:
        raise Invalid("the body is not JSON (or nests too deep)") from None
    if not isinstance(value, dict):
        raise Invalid("the body is a JSON object")
    return value


# The push API's OpenAPI document (openapi.yaml), served at /openapi.json in place of FastAPI's generated one.
OPENAPI: dict[str, Any] = yaml.safe_load(
    resources.files("mpaas.push").joinpath("openapi.yaml").read_text(encoding="utf-8")
)


def install(app: FastAPI, ctx: Context) -> None:
    app.openapi = lambda: OPENAPI  # type: ignore[method-assign]
    Handler = Callable[[Request, auth.Caller, dict[str, Any]], Awaitable[Any]]

    async def body_of(request: Request) -> bytes:
        try:
            return await read(
                request.receive,  # type: ignore[arg-type]  # Starlette's receive: the same ASGI messages
                dict(request.headers),
                max_body_bytes=MAX_BODY,
                max_inflated_bytes=MAX_BODY,
            )
        except TooLarge:
            raise Invalid(f"the body is over {MAX_BODY} bytes", "PayloadTooLarge", 413) from None
        except Malformed as e:
            raise Invalid(str(e)) from None

    async def run(request: Request, handler: Handler, *, devices_may: str | None = None, basic: bool = False) -> Any:
        """Authenticate, parse, call; every refusal as its documented code. `devices_may`: the path parameter
        naming the device a device's own link token may act for."""

        async def call() -> Any:
            raw = await body_of(request)
            h = request.headers
            config = ctx.live.current
            authorization = h.get("authorization", "")
            if basic and authorization.lower().startswith("basic "):
                caller = auth.basic(config, authorization, ctx.apps().keys)
            elif authorization.lower().startswith("bearer "):
                if devices_may is None:
                    raise Invalid("a device's link token cannot call this route: sign as the backend", "Forbidden", 403)
                device = request.path_params.get(devices_may) or _json(raw).get("deviceId", "")
                caller = auth.device(config, authorization, h.get("appid", ""), h.get("workspaceid", ""), device)
            else:
                caller = await auth.signed(
                    config, ctx.hot, request.method, request.url.path, request.url.query, dict(h), raw
                )
            body = _json(raw) if raw or request.method in ("POST", "PUT") else {}
            return await handler(request, caller, body)

        return await answer(call)

    async def answer(call: Callable[[], Awaitable[Any]]) -> Any:
        """The call's result as JSON, or its refusal as a documented code."""
        try:
            result = await call()
        except Invalid as e:
            return _error(e)
        except UnknownDevice as e:
            return _error(Invalid(f"no device {e.args[0]!r} is registered", "UnknownDevice", 404))
        except Unavailable as e:
            return _error(Invalid(str(e)[:300], "StoreUnavailable", 503))
        except (ConnectionError, OSError, TimeoutError, RedisError, KafkaError) as e:
            log.warning("push: a store did not answer: %r", e)
            return _error(Invalid(f"a store did not answer: {e!r}"[:300], "StoreUnavailable", 503))
        if isinstance(result, JSONResponse):
            return result
        return JSONResponse(result)

    def app_key(caller: auth.Caller) -> str:
        return f"{caller.app_id}/{caller.workspace_id}"

    def server_only(caller: auth.Caller) -> None:
        if caller.device_id is not None:
            raise Invalid("only the app's backend may do this: sign the call", "Forbidden", 403)

    def path_device(request: Request) -> str:
        device_id = request.path_params["device_id"]
        if not valid_id(device_id):
            raise Invalid("deviceId: 1-128 characters without spaces, controls or braces")
        return str(device_id)

    # --- devices ---------------------------------------------------------------------------------------

    async def register(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        device_id = path_device(request)
        platform = body.get("platform")
        if platform not in PLATFORMS:
            raise Invalid(f"platform: one of {', '.join(PLATFORMS)}")
        brand = body.get("brand", "")
        if not isinstance(brand, str) or not _BRAND.fullmatch(brand.lower()):
            raise Invalid("brand: up to 32 letters, digits, '_' or '-' (huawei, xiaomi, apple, ...)")
        tokens = body.get("tokens", {})
        channels = ("APNs", "FCM", "Huawei", "Xiaomi", "OPPO", "Vivo", "Honor")
        if not isinstance(tokens, dict) or not all(k in channels and valid_token(v) for k, v in tokens.items()):
            raise Invalid(f"tokens: an object of channel ({', '.join(channels)}) to its token, printable ASCII")
        version = body.get("appVersion", "")
        if not isinstance(version, str) or not _APP_VERSION.fullmatch(version):
            raise Invalid("appVersion: up to 32 characters, like 2.10.1")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(valid_tag(t) for t in tags):
            raise Invalid(f"tags: at most {MAX_TAGS} tags of 1-64 characters without spaces, controls or braces")
        device = Device(device_id, platform, brand.lower(), tokens, version, tuple(dict.fromkeys(tags)))
        return (await ctx.registry.register(app_key(caller), device)).to_json()

    async def get_device(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        device = await ctx.registry.get(app_key(caller), path_device(request))
        if device is None:
            raise UnknownDevice(request.path_params["device_id"])
        return device.to_json()

    async def unregister(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        if not await ctx.registry.unregister(app_key(caller), path_device(request)):
            raise UnknownDevice(request.path_params["device_id"])
        return {"deleted": True}

    async def tags(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        add, remove = body.get("add", []), body.get("remove", [])
        for name, value in (("add", add), ("remove", remove)):
            if not isinstance(value, list) or len(value) > MAX_TAGS or not all(valid_tag(t) for t in value):
                raise Invalid(f"{name}: a list of at most {MAX_TAGS} tags")
        try:
            now = await ctx.registry.change_tags(app_key(caller), path_device(request), add, remove)
        except UnknownDevice:
            raise
        except ValueError as e:  # past MAX_TAGS
            raise Invalid(str(e)) from None
        return {"tags": now}

    async def alias(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        name = body.get("alias")
        if name is not None and not valid_id(name):
            raise Invalid("alias: 1-128 characters without spaces, controls or braces, or null to remove it")
        moved = await ctx.registry.set_alias(app_key(caller), path_device(request), name)
        return {"alias": name, "movedFrom": moved}

    def ids(body: dict[str, Any]) -> tuple[str, str]:
        user, device_id = body.get("userId"), body.get("deviceId")
        if not isinstance(user, str) or not isinstance(device_id, str) or not (valid_id(user) and valid_id(device_id)):
            raise Invalid("userId and deviceId: 1-128 characters without spaces, controls or braces")
        return user, device_id

    async def bind(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        user, device_id = ids(body)
        former = await ctx.registry.bind(app_key(caller), user, device_id)
        # TTL re-delivery: what waits for this user reaches the newly bound device while its TTL lasts.
        redelivered = 0
        for message_id in await ctx.state.waiting_for_user(app_key(caller), user, int(time.time() * 1000)):
            status = await ctx.state.status(message_id)
            if status is not None and status.state not in ("Canceled", "Revoked"):
                await ctx.fanout.deliver_to(status.message, [device_id])
                redelivered += 1
        return {"userId": user, "deviceId": device_id, "movedFrom": former, "redelivered": redelivered}

    async def unbind(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        user, device_id = ids(body)
        if not await ctx.registry.unbind(app_key(caller), user, device_id):
            raise Invalid(f"device {device_id!r} is not bound to user {user!r}", "NotBound", 404)
        return {"userId": user, "deviceId": device_id, "unbound": True}

    async def user_devices(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        user = request.path_params["user_id"]
        if not valid_id(user):
            raise Invalid("userId: 1-128 characters without spaces, controls or braces")
        return {"userId": user, "deviceIds": await ctx.registry.user_devices(app_key(caller), user)}

    # --- sending ---------------------------------------------------------------------------------------

    async def build_messages(
        caller: auth.Caller, bodies: list[Any], now_ms: int, message_ids: list[str], label: Callable[[int], str]
    ) -> list[PushMessage]:
        """Every send checked before any is accepted (nothing half-sent), its templates read and its targets
        looked up once for all of them; a refusal names the send (`label`: "messages[3]: ")."""
        stored = await read_templates(caller, bodies)
        messages = []
        for i, body in enumerate(bodies):
            try:
                if not isinstance(body, dict):
                    raise Invalid("a JSON object")
                messages.append(build_message(caller, body, now_ms, message_ids[i], stored))
            except Invalid as e:
                raise Invalid(f"{label(i)}{e}", e.code, e.status) from None
        await check_targets(messages, label)
        return messages

    def build_message(
        caller: auth.Caller, body: dict[str, Any], now_ms: int, message_id: str, templates: dict[str, Any]
    ) -> PushMessage:
        target = parse_target(body.get("target"))
        if "template" in body:
            if "notification" in body:
                raise Invalid("give notification or template, not both")
            content = render(body["template"], templates)
        else:
            content = parse_content(body.get("notification"))
        unknown = body.keys() - SEND_FIELDS
        if unknown:
            raise Invalid(f"unknown fields {sorted(unknown)}")
        message = PushMessage(
            message_id=message_id,
            app_id=caller.app_id,
            workspace_id=caller.workspace_id,
            target=target,
            content=content,
            created_ms=now_ms,
            **parse_options(body, now_ms),
        )
        check_size(message)
        return message

    async def check_targets(messages: list[PushMessage], label: Callable[[int], str]) -> None:
        """Unknown devices and aliases, users without a device: refused before anything is sent. One lookup of
        each kind for all the messages (a batch of sends to devices is one round trip, not one a send)."""
        wanted: dict[str, dict[str, bool]] = {}
        for m in messages:
            if m.target.type in ("device", "alias", "user"):
                wanted.setdefault(m.target.type, {}).update(dict.fromkeys(m.target.ids, False))
        if not wanted:
            return
        app = messages[0].app  # one caller's
        for kind, known in wanted.items():
            names = list(known)
            for i in range(0, len(names), LOOKUP_CHUNK):  # a batch may name ~10^5: Redis is not held that long
                ids = names[i : i + LOOKUP_CHUNK]
                if kind == "device":
                    found = await ctx.registry.registered(app, ids)
                elif kind == "alias":
                    found = [d is not None for d in await ctx.registry.alias_devices(app, ids)]
                else:
                    found = await ctx.registry.bound_users(app, ids)
                known.update(zip(ids, found, strict=True))
        for i, m in enumerate(messages):
            known = wanted.get(m.target.type, {})
            missing = ", ".join([x for x in m.target.ids if x in known and not known[x]][:20])
            if not missing:
                continue
            if m.target.type == "device":
                raise Invalid(f"{label(i)}no such devices: {missing}", "UnknownDevice", 404)
            if m.target.type == "alias":
                raise Invalid(f"{label(i)}no device has these aliases: {missing}", "UnknownAlias", 404)
            raise Invalid(f"{label(i)}no device is bound to these users: {missing}", "UnboundUser", 404)

    async def read_templates(caller: auth.Caller, bodies: list[Any]) -> dict[str, Any]:
        """The stored templates the sends name (None for one not stored), each read once."""
        raws = [b["template"] for b in bodies if isinstance(b, dict) and isinstance(b.get("template"), dict)]
        # Names no template can have are not looked up: their sends are refused as TemplateMissing.
        named = {r["name"] for r in raws if isinstance(r.get("name"), str)}
        names = [n for n in named if _TEMPLATE_NAME.fullmatch(n)]
        return dict(zip(names, await ctx.state.templates_named(app_key(caller), names), strict=True))

    def render(raw: object, templates: dict[str, Any]) -> Content:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise Invalid("template: {name, variables}")
        variables = raw.get("variables", {})
        if not isinstance(variables, dict) or not all(text_ok(v, MAX_TEXT) for v in variables.values()):
            raise Invalid(f"template.variables: an object of strings of up to {MAX_TEXT} characters")
        stored = templates.get(raw["name"])
        if stored is None:
            raise Invalid(f"no template {raw['name']!r}", "TemplateMissing", 404)
        missing: set[str] = set()

        def fill(text: str | None) -> str | None:
            if text is None:
                return None
            # The length it would have, before building it: a short template with long values is refused
            # without ever holding the expansion.
            grown = sum(len(str(variables.get(m.group(1), ""))) - len(m.group()) for m in _VARIABLE.finditer(text))
            if len(text) + grown > MAX_TEXT:
                raise Invalid(f"the template expands past {MAX_TEXT} characters", "PayloadTooLarge", 413)

            def one(m: re.Match[str]) -> str:
                if m.group(1) not in variables:
                    missing.add(m.group(1))
                    return ""
                return str(variables[m.group(1)])

            return _VARIABLE.sub(one, text)

        content = Content(
            title=fill(stored.get("title")),
            body=fill(stored.get("body")),
            data={k: fill(v) or "" for k, v in stored.get("data", {}).items()},
            badge=stored.get("badge"),
            sound=fill(stored.get("sound")),
            category=fill(stored.get("category")),
        )
        if missing:
            raise Invalid(f"template variables missing: {', '.join(sorted(missing))}", "TemplateVariableMissing")
        return parse_content({k: v for k, v in content.__dict__.items() if v not in (None, {})})

    async def send(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        (message,) = await build_messages(caller, [body], int(time.time() * 1000), [new_message_id()], lambda i: "")
        key = idempotency_key(body, request.headers.get("idempotency-key"))
        message_id, repeated = await ctx.accepter.accept(message, key)
        state = "Scheduled" if message.scheduled_ms else "Accepted"
        return JSONResponse(
            {"messageId": message_id, "state": state, "duplicate": repeated}, status_code=200 if repeated else 202
        )

    async def batch(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        items = body.get("messages")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise Invalid(f"messages: a list of 1 to {MAX_BATCH} sends")
        messages = await build_messages(
            caller, items, int(time.time() * 1000), new_batch_ids(len(items)), lambda i: f"messages[{i}]: "
        )
        keys = []
        for i, item in enumerate(items):
            try:
                keys.append(idempotency_key(item, None))
            except Invalid as e:
                raise Invalid(f"messages[{i}]: {e}", e.code, e.status) from None
        out: list[dict[str, Any]] = []
        for result in await ctx.accepter.accept_many(list(zip(messages, keys, strict=True))):  # failures per send
            if isinstance(result, Unavailable):
                out.append({"code": "StoreUnavailable", "message": str(result)[:300]})
            else:
                out.append({"messageId": result[0], "duplicate": result[1]})
        failed = sum(1 for r in out if "code" in r)
        return JSONResponse({"results": out}, status_code=202 if not failed else 207 if failed < len(out) else 503)

    async def status(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        message_id = request.path_params["message_id"]
        st = await ctx.state.status(message_id) if valid_message_id(message_id) else None
        if st is None or st.message.app != app_key(caller):
            raise Invalid(f"no message {message_id!r}", "UnknownMessage", 404)
        failed = await ctx.state.failed(message_id)
        return {
            "messageId": message_id,
            "state": st.state,
            "targets": st.targets,
            "counts": st.counts,
            "failed": [f.to_json() for f in failed],
            "createdAt": st.message.created_ms,
            "scheduledAt": st.message.scheduled_ms,
            "expiresAt": st.message.expires_ms if st.message.ttl_seconds else None,
        }

    async def cancel(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        message_id = request.path_params["message_id"]
        st = await ctx.state.status(message_id) if valid_message_id(message_id) else None
        if st is None or st.message.app != app_key(caller):
            raise Invalid(f"no message {message_id!r}", "UnknownMessage", 404)
        texts: dict[str, str] = {}
        for name, arg in (("recalledTitle", "title"), ("recalledText", "text")):
            given = request.query_params.getlist(name)
            if len(given) > 1 or (given and not (given[0] and text_ok(given[0], MAX_RECALLED_TEXT))):
                raise Invalid(f"{name}: once, 1 to {MAX_RECALLED_TEXT} characters")
            texts |= {arg: given[0]} if given else {}
        if st.state == "Scheduled" and await ctx.accepter.cancel(message_id):
            return {"messageId": message_id, "state": "Canceled"}
        if st.message.recalls is not None or st.message.link_only:  # recalling it would leave the message shown
            raise Invalid("a recall notice cannot be recalled", "NotCancelable", 409)
        notice = await ctx.accepter.recall(message_id, **texts)
        if notice is None:
            raise Invalid(
                f"the message is {st.state}: only a scheduled message (canceled) or one being sent or sent "
                "(recalled) can be taken back",
                "NotCancelable",
                409,
            )
        return {"messageId": message_id, "state": "Revoked", "recallMessageId": notice.message_id}

    async def receipt(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        message_id, device_id, event = body.get("messageId"), body.get("deviceId"), body.get("event")
        if not isinstance(message_id, str) or not valid_message_id(message_id):
            raise Invalid("messageId: the id the message came with")
        if event not in ("delivered", "opened", "clicked"):
            raise Invalid("event: delivered, opened or clicked")
        if not valid_id(device_id) or (caller.device_id is not None and caller.device_id != device_id):
            raise Invalid("deviceId: the reporting device")
        st = await ctx.state.status(message_id)
        if st is None or st.message.app != app_key(caller):
            raise Invalid(f"no message {message_id!r}", "UnknownMessage", 404)
        await receipts.count_once(ctx.hot, ctx.state, st.message, [(str(event), str(device_id))])
        return {"messageId": message_id, "event": event}

    async def vendor_receipts(request: Request) -> Any:
        """A vendor's delivery receipts for one channel, at the address its receiptToken makes (docs/push.md,
        "Receipts"): unsigned, as vendors post them; the token in the path is the credential."""

        async def call() -> Any:
            p = request.path_params
            channel = ctx.live.current.channel(p["namespace"], p["name"])
            expected = channel.receipt_token if channel is not None else None
            if channel is None or expected is None or not hmac.compare_digest(expected.encode(), p["token"].encode()):
                raise Invalid("no channel takes receipts at this address", "UnknownChannel", 404)
            raw = await body_of(request)  # read once the address is known to be a channel's
            try:
                found = receipts.parse(channel.type, request.headers.get("content-type", ""), raw)
            except receipts.Malformed as e:
                raise Invalid(str(e)) from None
            await receipts.record(ctx.state, ctx.hot, ctx.registry, channel, found)
            return receipts.reply(channel.type)

        return await answer(call)

    async def stats(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        q = request.query_params

        def when(name: str, default: int) -> int:
            if name not in q:
                return default
            ms = parse_uint(q[name], 15)
            return parse_time_ms(ms if ms is not None else q[name], name)

        last = when("to", int(time.time() * 1000))
        first = when("from", last - 3_600_000)
        if not 0 <= last - first <= 86_400_000:
            raise Invalid("from and to: at most a day apart, from before to")
        rows = await ctx.state.stats(app_key(caller), first // 60000, last // 60000)
        return {
            "minutes": [{"minute": m * 60000, "counts": c} for m, c in sorted(rows.items())],
            "totals": await ctx.state.totals(app_key(caller)),
        }

    # --- templates -------------------------------------------------------------------------------------

    def template_name(request: Request) -> str:
        name = request.path_params["name"]
        if not _TEMPLATE_NAME.fullmatch(name):
            raise Invalid("a template name: 1-64 letters, digits, '_', '.' or '-'")
        return str(name)

    async def put_template(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        name = template_name(request)
        parse_content(body)  # the fields' shapes; {{variables}} are filled at each send
        if len(orjson.dumps(body)) > MAX_TEMPLATE_BYTES:
            raise Invalid(f"a template is at most {MAX_TEMPLATE_BYTES} bytes as JSON", "PayloadTooLarge", 413)
        if not await ctx.state.put_template(app_key(caller), name, body):
            raise Invalid(
                f"the app holds {MAX_TEMPLATES} templates: delete one to store another", "TooManyTemplates", 409
            )
        return {"name": name, "variables": sorted(set(_VARIABLE.findall(json.dumps(body))))}

    async def get_template(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        name = template_name(request)
        stored = await ctx.state.template(app_key(caller), name)
        if stored is None:
            raise Invalid(f"no template {name!r}", "TemplateMissing", 404)
        return {"name": name, "template": stored}

    async def list_templates(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        return {"templates": await ctx.state.templates(app_key(caller))}

    async def delete_template(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        name = template_name(request)
        if not await ctx.state.delete_template(app_key(caller), name):
            raise Invalid(f"no template {name!r}", "TemplateMissing", 404)
        return {"name": name, "deleted": True}

    # --- gorush ----------------------------------------------------------------------------------------

    async def gorush_push(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        notifications = body.get("notifications")
        if not isinstance(notifications, list) or not 1 <= len(notifications) <= MAX_BATCH:
            raise Invalid(f"notifications: a list of 1 to {MAX_BATCH}")
        now = int(time.time() * 1000)
        message_ids = new_batch_ids(len(notifications))
        messages = [gorush_message(caller, n, i, now, message_ids[i]) for i, n in enumerate(notifications)]
        accepted, logs = [], []
        for m, result in zip(messages, await ctx.accepter.accept_many([(m, None) for m in messages]), strict=True):
            if isinstance(result, Unavailable):  # one the store refused is logged, the others go
                logs += [
                    gorush_log(m, channel, token, f"StoreUnavailable: {result}"[:300])
                    for channel, token in m.target.tokens
                ]
            else:
                accepted.append(m)
        if any(m.sync for m in accepted):
            logs += await wait_for([m for m in accepted if m.sync])
        return {"counts": sum(len(m.target.tokens) for m in accepted), "logs": logs, "success": "ok"}

    def gorush_log(m: PushMessage, channel: str, token: str, error: str) -> dict[str, Any]:
        """A failed token as gorush logs it (logx.LogPushEntry)."""
        return {"type": "failed-push", "platform": GORUSH_NAMES.get(channel, channel.lower()), "token": token,
                "message": m.content.body or "", "error": error}  # fmt: skip

    def gorush_message(caller: auth.Caller, n: object, i: int, now: int, message_id: str) -> PushMessage:
        if not isinstance(n, dict):
            raise Invalid(f"notifications[{i}]: a JSON object")
        platform = n.get("platform")
        if not isinstance(platform, int) or platform not in GORUSH_PLATFORMS:
            raise Invalid(f"notifications[{i}].platform: {', '.join(f'{k} {v}' for k, v in GORUSH_PLATFORMS.items())}")
        tokens = n.get("tokens")
        if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_IDS or not all(valid_token(t) for t in tokens):
            raise Invalid(f"notifications[{i}].tokens: 1 to {MAX_IDS} tokens")
        channel = GORUSH_PLATFORMS[platform]
        data = n.get("data", {})
        if not isinstance(data, dict):
            raise Invalid(f"notifications[{i}].data: an object")
        alert: dict[str, Any] = n["alert"] if isinstance(n.get("alert"), dict) else {}
        title = n.get("title") or alert.get("title")
        body = n.get("message") or alert.get("body")
        ttl = n.get("time_to_live")
        if ttl is None:
            expiration = n.get("expiration")
            if expiration is None:
                ttl = 86400
            elif isinstance(expiration, int) and not isinstance(expiration, bool):
                ttl = max(expiration - now // 1000, 0)
            else:
                raise Invalid(f"notifications[{i}].expiration: epoch seconds")
        raw_content: dict[str, Any] = {
            "title": title,
            "body": body,
            "data": {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()},
        }
        if isinstance(n.get("badge"), int):
            raw_content["badge"] = n["badge"]
        sound = n.get("sound")
        if isinstance(sound, dict):  # gorush's critical-alert form: {name, volume, critical}
            sound = sound.get("name")
        if isinstance(sound, str):
            raw_content["sound"] = sound
        if n.get("content_available") is True and not (title or body or data):
            raw_content["data"] = {"contentAvailable": "1"}  # a silent push: data alone
        if isinstance(n.get("category"), str):
            raw_content["category"] = n["category"]
        try:
            content = parse_content({k: v for k, v in raw_content.items() if v not in (None, {})})
            options = parse_options(
                {
                    "ttlSeconds": ttl,
                    "urgent": n.get("priority", "high") != "normal",
                    "collapseKey": n.get("collapse_id") or n.get("collapse_key") or None,
                },
                now,
            )
        except Invalid as e:
            raise Invalid(f"notifications[{i}]: {e}", e.code, e.status) from None
        message = PushMessage(
            message_id=message_id,
            app_id=caller.app_id,
            workspace_id=caller.workspace_id,
            target=Target("token", tokens=tuple((channel, t) for t in dict.fromkeys(tokens))),
            content=content,
            created_ms=now,
            sync=bool(n.get("sync", False)),
            **options,
        )
        check_size(message)
        return message

    async def wait_for(messages: list[PushMessage]) -> list[dict[str, Any]]:
        """gorush's sync mode: wait until every token of the messages has an outcome; the failed ones."""
        deadline = time.monotonic() + SYNC_WAIT_SECONDS
        logs: list[dict[str, Any]] = []
        for m in messages:
            while time.monotonic() < deadline:
                st = await ctx.state.status(m.message_id)
                done = sum(n for k, n in st.counts.items() if not k.startswith("Receipt.")) if st else 0
                if done >= len(m.target.tokens):
                    break
                await asyncio.sleep(0.05)
            logs += [gorush_log(m, f.channel, f.token, f.reason) for f in await ctx.state.failed(m.message_id)]
        return logs

    async def gorush_stat(request: Request, caller: auth.Caller, body: dict[str, Any]) -> Any:
        server_only(caller)
        totals = await ctx.state.totals(app_key(caller))

        def pair(channel: str) -> dict[str, int]:
            sent = totals.get(f"{channel}.Sent", 0)
            error = sum(
                n
                for k, n in totals.items()
                if k.startswith(f"{channel}.") and k not in NOT_ERRORS and k != f"{channel}.Sent"
            )
            return {"push_success": sent, "push_error": error}

        pairs = {GORUSH_NAMES.get(c, c.lower()): pair(c) for c in (*GORUSH_PLATFORMS.values(), "Link")}
        success = sum(p["push_success"] for p in pairs.values())
        failure = sum(p["push_error"] for p in pairs.values())
        # gorush's shape (router/server.go appStatusHandler): its queue figures are ours of the vendor sends.
        return {"version": __version__, "busy_workers": 0, "success_tasks": success, "failure_tasks": failure,
                "submitted_tasks": success + failure, "total_count": success + failure, **pairs}  # fmt: skip

    # --- wiring ----------------------------------------------------------------------------------------

    def route(method: str, path: str, handler: Handler, **kw: Any) -> None:
        async def endpoint(request: Request) -> Any:
            return await run(request, handler, **kw)

        app.add_api_route(path, endpoint, methods=[method], include_in_schema=True, name=handler.__name__)

    route("PUT", "/v1/push/devices/{device_id}", register, devices_may="device_id")
    route("GET", "/v1/push/devices/{device_id}", get_device, devices_may="device_id")
    route("DELETE", "/v1/push/devices/{device_id}", unregister, devices_may="device_id")
    route("POST", "/v1/push/devices/{device_id}/tags", tags, devices_may="device_id")
    route("PUT", "/v1/push/devices/{device_id}/alias", alias)
    route("POST", "/v1/push/bind", bind)
    route("POST", "/v1/push/unbind", unbind)
    route("GET", "/v1/push/users/{user_id}/devices", user_devices)
    route("POST", "/v1/push/messages", send)
    route("POST", "/v1/push/messages/batch", batch)
    route("GET", "/v1/push/messages/{message_id}", status)
    route("DELETE", "/v1/push/messages/{message_id}", cancel)
    route("POST", "/v1/push/receipts", receipt, devices_may="")
    app.add_api_route(
        receipts.RECEIPT_PATH + "/{namespace}/{name}/{token}", vendor_receipts, methods=["POST"], name="vendor_receipts"
    )
    route("GET", "/v1/push/stats", stats)
    route("PUT", "/v1/push/templates/{name}", put_template)
    route("GET", "/v1/push/templates/{name}", get_template)
    route("GET", "/v1/push/templates", list_templates)
    route("DELETE", "/v1/push/templates/{name}", delete_template)
    route("POST", "/api/push", gorush_push, basic=True)
    route("GET", "/api/stat/app", gorush_stat, basic=True)
