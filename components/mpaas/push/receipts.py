"""Vendor delivery receipts (docs/push.md, "Receipts"): what Huawei, Honor, Xiaomi, OPPO and vivo post back
when a message reaches a device, read into one shape, and the fields that ask for them on each send.

How each vendor is asked and answers (the sources are vendor documents as copied into public server SDKs):

- Xiaomi: the send carries `extra.callback` (the address), `extra.callback.param` (our message id) and
  `extra.callback.type` (bit flags: 1 delivered, 2 clicked, 16 invalid target, 32 push disabled, 64 filtered,
  128 daily quota; we ask 19 = 1 + 2 + 16). The receipt is a form with one field, `data`: JSON keyed by
  Xiaomi's message id, `{"param", "type", "targets": "regid,regid", "jobkey"}` (Xiaomi's Java server SDK guide,
  "消息回执").
- OPPO: the notification carries `call_back_url` and `call_back_parameter` (our message id, at most 50
  characters). The receipt is a JSON array of `{"messageId", "taskId", "registrationIds": "a,b", "param",
  "eventType"}`, eventType `push_arrive`, `regid_invalid` or `user_daily_limit` (OPPO's "消息回执").
- vivo: the message's `extra` carries `callback` and `callback.param`. The receipt is a JSON object keyed by
  task id, `{"targets": "a,b", "param", "ackTime", "ackType"}`. This shape is taken from an open-source
  receiver, not from a vivo document; every entry is read as delivered.
- Huawei: the address is set in AppGallery Connect; the send's `bi_tag` (our message id) comes back as
  `biTag`. The receipt is `{"statuses": [...]}`, each with `token` and either `status` (V1) or
  `deliveryStatus.result` (V2): 0 delivered; 2 (app uninstalled) and 5 (token of another user) mean the token
  is dead; others were not delivered (6 notifications off, 10 device inactive, 15 replaced, 102 frequency
  control, ...).
- Honor: as Huawei's V1 (`biTag`, `token`, `status`), from an open-source receiver; 0 is delivered, any other
  status is counted as not delivered.

The receipt address carries the channel's `receiptToken` (a secret in its credentials Secret): none of these
vendors signs its receipts in a way every one of them documents.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from ..api.push import ChannelType
from ..background import Background
from ..link.inbox import RECEIPT_LOG
from ..stores import HotStore
from ..stores.seqlog import SequencedLog
from .messages import PushMessage, valid_message_id
from .registry import Registry, valid_token
from .state import Failed, PushState, token_digest

if TYPE_CHECKING:  # config builds on this module (receipt addresses)
    from .config import VendorChannel

log = logging.getLogger("mpaas.push")

RECEIPT_TOKEN = "receiptToken"  # the credentials Secret's entry that the receipt address carries
RECEIPT_PATH = "/v1/push/receipts"
RECEIPT_TYPES = (ChannelType.HUAWEI, ChannelType.HONOR, ChannelType.XIAOMI, ChannelType.OPPO, ChannelType.VIVO)
MAX_RECEIPTS = 5000  # receipts read from one post: a vendor sends at most 1000 (Huawei 100)
# The longest address each vendor takes (Xiaomi's and vivo's callback 128 bytes, OPPO's 200); Huawei's and
# Honor's are typed into their consoles.
MAX_URL = {ChannelType.XIAOMI: 128, ChannelType.VIVO: 128, ChannelType.OPPO: 200}
XIAOMI_CALLBACK_TYPES = "19"  # delivered, clicked, invalid target

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")

DELIVERED, CLICKED, INVALID, UNDELIVERED = "delivered", "clicked", "invalid", "undelivered"
COUNTS = {DELIVERED: "Receipt.Delivered", CLICKED: "Receipt.Clicked", INVALID: "Receipt.InvalidToken",
          UNDELIVERED: "Receipt.Undelivered"}  # fmt: skip


class Malformed(ValueError):
    """A receipt body that is not the vendor's shape."""


@dataclass(frozen=True)
class VendorReceipt:
    message_id: str
    token: str
    event: str  # DELIVERED, CLICKED, INVALID (the token is dead) or UNDELIVERED
    detail: str = ""  # the vendor's own status, for a receipt other than delivered


def valid_receipt_token(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def receipt_address(base: str, namespace: str, name: str, token: str) -> str:
    return f"{base.rstrip('/')}{RECEIPT_PATH}/{namespace}/{name}/{token}"


def callback_fields(channel: ChannelType, address: str, message_id: str) -> dict[str, Any]:
    """The per-send fields asking the vendor for receipts (as `Notification.extra`: each client adds them as
    they are); {} for the vendors that take the address from their console."""
    if channel == ChannelType.XIAOMI:
        return {"extra.callback": address, "extra.callback.param": message_id,
                "extra.callback.type": XIAOMI_CALLBACK_TYPES}  # fmt: skip
    if channel == ChannelType.OPPO:
        return {"call_back_url": address, "call_back_parameter": message_id}
    if channel == ChannelType.VIVO:
        return {"extra": {"callback": address, "callback.param": message_id}}
    return {}


def reply(channel: ChannelType) -> dict[str, Any]:
    """The answer the vendor expects to a receipt it posted."""
    if channel in (ChannelType.HUAWEI, ChannelType.HONOR):
        return {"code": "0", "message": "success"}
    return {"code": 0, "message": "ok"}


def parse(channel: ChannelType, content_type: str, body: bytes) -> list[VendorReceipt]:
    """The receipts of one post; Malformed when it is not the vendor's shape. Receipts for ids that are not
    ours (a message sent by another system through the same vendor app) are left out."""
    try:
        if channel == ChannelType.XIAOMI:
            return _xiaomi(content_type, body)
        doc = orjson.loads(body)
        if channel == ChannelType.OPPO:
            return _oppo(doc)
        if channel == ChannelType.VIVO:
            return _vivo(doc)
        return _huawei(doc, channel)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        if isinstance(e, Malformed):
            raise
        raise Malformed(f"not a {channel.value} receipt: {type(e).__name__}: {e}"[:300]) from None


def _add(out: list[VendorReceipt], param: object, targets: object, event: str, detail: str = "") -> None:
    """The receipts of one entry naming its message (`param`, ours when it is one of our ids) and its tokens
    (comma-separated): split no further than the post's bound, and only tokens a device could hold."""
    if not isinstance(targets, str):
        raise Malformed("targets: a comma-separated string")
    room = MAX_RECEIPTS - len(out)
    tokens = targets.split(",", room + 1)  # the rest, past the bound, stays one string
    if len(out) + len(tokens) > MAX_RECEIPTS and any(tokens[room:]):
        raise Malformed(f"more than {MAX_RECEIPTS} receipts in one post")
    message_id = param if isinstance(param, str) and valid_message_id(param) else None
    if message_id is not None:
        out += [VendorReceipt(message_id, t, event, detail) for t in tokens if t and valid_token(t)]


def _kind(value: object) -> str:
    """A vendor's status or event name for the failed list: its own words, bounded."""
    return str(value)[:64] if isinstance(value, str | int) and not isinstance(value, bool) else "?"


XIAOMI_EVENTS = {1: (DELIVERED, ""), 2: (CLICKED, ""), 16: (INVALID, "invalid target"),
                 32: (UNDELIVERED, "push disabled on the device"), 64: (UNDELIVERED, "filtered out"),
                 128: (UNDELIVERED, "daily quota"), 1024: (UNDELIVERED, "TTL ended")}  # fmt: skip


def _xiaomi(content_type: str, body: bytes) -> list[VendorReceipt]:
    if content_type.split(";")[0].strip().lower() == "application/json":
        doc = orjson.loads(body)  # the same map, posted as JSON
    else:
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10))
        if "data" not in fields:
            raise Malformed("a form with a data field")
        doc = orjson.loads(fields["data"])
    if not isinstance(doc, dict):
        raise Malformed("data: a JSON object keyed by message id")
    out: list[VendorReceipt] = []
    for entry in doc.values():
        kind = entry["type"]
        kind = int(kind) if isinstance(kind, str) and kind.isascii() and kind.isdigit() and len(kind) < 10 else kind
        if not isinstance(kind, int) or isinstance(kind, bool):
            raise Malformed("type: an integer")
        event, detail = XIAOMI_EVENTS.get(kind, (UNDELIVERED, f"type {_kind(kind)}"))
        _add(out, entry.get("param"), entry["targets"], event, detail)
    return out


OPPO_EVENTS = {"push_arrive": (DELIVERED, ""), "regid_invalid": (INVALID, "regid_invalid"),
               "user_daily_limit": (UNDELIVERED, "user_daily_limit")}  # fmt: skip


def _oppo(doc: object) -> list[VendorReceipt]:
    if not isinstance(doc, list):
        raise Malformed("a JSON array of receipts")
    out: list[VendorReceipt] = []
    for entry in doc:
        kind = entry["eventType"]
        event, detail = (
            OPPO_EVENTS.get(kind, (UNDELIVERED, _kind(kind))) if isinstance(kind, str) else (UNDELIVERED, "?")
        )
        _add(out, entry.get("param"), entry["registrationIds"], event, detail)
    return out


def _vivo(doc: object) -> list[VendorReceipt]:
    if not isinstance(doc, dict):
        raise Malformed("a JSON object keyed by task id")
    out: list[VendorReceipt] = []
    for entry in doc.values():
        _add(out, entry.get("param"), entry["targets"], DELIVERED)
    return out


HUAWEI_DEAD = {2: "app uninstalled", 5: "token of another user"}


def _huawei(doc: object, channel: ChannelType) -> list[VendorReceipt]:
    if not isinstance(doc, dict) or not isinstance(doc.get("statuses"), list):
        raise Malformed("an object with statuses")
    if len(doc["statuses"]) > MAX_RECEIPTS:
        raise Malformed(f"more than {MAX_RECEIPTS} receipts in one post")
    out: list[VendorReceipt] = []
    for entry in doc["statuses"]:
        status = entry["status"] if "status" in entry else entry["deliveryStatus"]["result"]
        if not isinstance(status, int) or isinstance(status, bool):
            raise Malformed("status: an integer")
        token = entry["token"]
        if not isinstance(token, str) or "," in token:
            raise Malformed("token: a string")
        if status == 0:
            event, detail = DELIVERED, ""
        elif channel == ChannelType.HUAWEI and status in HUAWEI_DEAD:
            event, detail = INVALID, f"status {status}: {HUAWEI_DEAD[status]}"
        else:
            event, detail = UNDELIVERED, f"status {_kind(status)}"
        _add(out, entry.get("biTag"), token, event, detail)
    return out


RECEIPT_SECONDS = 8 * 86400  # a receipt is counted once per device and event for this long


async def count_once(
    hot: HotStore, state: PushState, message: PushMessage, events: list[tuple[str, str]]
) -> list[bool]:
    """Count each (event, device) of the message once, whoever reports it (the app, or the vendor): a receipt
    sent again is not counted twice. Whether each was counted now."""
    firsts: list[bool] = []
    for i in range(0, len(events), 100):  # bounded concurrency on the store
        firsts += await asyncio.gather(
            *(
                hot.set_if_absent(f"push:rcpt:{message.message_id}:{event}:{who}", b"1", ttl_seconds=RECEIPT_SECONDS)
                for event, who in events[i : i + 100]
            )
        )
    counts: dict[str, int] = defaultdict(int)
    for (event, _), first in zip(events, firsts, strict=True):
        if first:
            counts[COUNTS.get(event, f"Receipt.{event.capitalize()}")] += 1
    if counts:
        await state.count(message, dict(counts))
    return firsts


async def record(
    state: PushState, hot: HotStore, registry: Registry, channel: VendorChannel, found: list[VendorReceipt]
) -> int:
    """Count a vendor's receipts on their messages, each device once per event; a dead token is added to the
    message's failed tokens and pruned from its device. Receipts for messages of another app, or gone, are
    left out. How many were counted."""
    by_message: dict[str, list[VendorReceipt]] = defaultdict(list)
    for r in found:
        by_message[r.message_id].append(r)
    counted = 0
    for message_id, receipts in by_message.items():
        st = await state.status(message_id)
        if st is None or st.message.app_id != channel.app_id:
            continue
        m = st.message
        if channel.workspace_id not in (None, m.workspace_id):
            continue
        devices = await state.token_devices(message_id, [r.token for r in receipts])
        # Only the tokens the message was sent with: a receipt naming another is not the message's (a forged
        # post cannot count devices that were never sent to). A send by token (gorush) counts by the token.
        sent = [(r, d) for r, d in zip(receipts, devices, strict=True) if d is not None]
        whos = [d or "t" + token_digest(r.token) for r, d in sent]
        firsts = await count_once(hot, state, m, [(r.event, who) for (r, _), who in zip(sent, whos, strict=True)])
        failed = []
        for (r, device), first in zip(sent, firsts, strict=True):
            counted += first
            if first and r.event == INVALID:
                failed.append(Failed(device or "", channel.type.value, r.token, f"InvalidToken: receipt, {r.detail}"))
                if device:
                    await registry.remove_token(m.app, device, channel.type.value, r.token)
        await state.add_failed(message_id, failed)
    return counted


LINK_READER = "push"  # push's cursor in the link pods' receipt log
LINK_BATCH = 200  # entries (each a link pod's acks of one flush) read at a time


class LinkReceipts(Background):
    """ "Delivered" from link: the link pods log each device's ack of a push message (mpaas.link.server,
    RECEIPT_LOG); push counts them as the app's own delivered receipts, once per device. Every push process
    may read: counting is idempotent, and the cursor only moves forward."""

    def __init__(
        self, state: PushState, hot: HotStore, log: Callable[[], SequencedLog | None], *, idle_seconds: float = 0.5
    ):
        self.state, self.hot, self.log, self.idle_seconds = state, hot, log, idle_seconds

    def start(self) -> None:
        self._launch(self._run(), "push link receipts")

    async def _run(self) -> None:
        while True:
            try:
                if not await self.take():
                    await asyncio.sleep(self.idle_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("push: link receipts not read: %r", e)
                await asyncio.sleep(1.0)

    async def take(self) -> int:
        """Count what the log holds past push's cursor, then move the cursor; the entries read."""
        receipts = self.log()
        if receipts is None:
            return 0
        batch = await receipts.read(RECEIPT_LOG, reader=LINK_READER, count=LINK_BATCH)
        if not batch.entries:
            return 0
        by_message: dict[str, list[str]] = defaultdict(list)  # message id -> device keys (app/workspace/device)
        for _, value in batch.entries:
            try:
                pairs = orjson.loads(value)
                for device_key, message_id in pairs:
                    if isinstance(device_key, str) and isinstance(message_id, str) and valid_message_id(message_id):
                        by_message[message_id].append(device_key)
            except (ValueError, TypeError):
                log.warning("push: a link receipt entry that does not parse: %r", value[:200])
        for message_id, device_keys in by_message.items():
            st = await self.state.status(message_id)
            if st is None:
                continue  # gone
            app = st.message.app + "/"
            devices = [k.removeprefix(app) for k in device_keys if k.startswith(app)]  # its app's devices only
            await count_once(self.hot, self.state, st.message, [(DELIVERED, d) for d in dict.fromkeys(devices)])
        await receipts.ack(RECEIPT_LOG, LINK_READER, batch.entries[-1][0])
        return len(batch.entries)
