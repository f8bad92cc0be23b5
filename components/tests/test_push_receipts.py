"""Vendor delivery receipts without servers: each vendor's body read into receipts, malformed ones refused,
the per-send fields that ask for them, and the receipt address a channel's resources make."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpaas.api.push import ChannelType
from mpaas.config import Resource, Resources, validate
from mpaas.keyring import SECRET, KeyRing
from mpaas.push.config import Clients, compiler
from mpaas.push.receipts import (
    CLICKED,
    DELIVERED,
    INVALID,
    MAX_RECEIPTS,
    RECEIPT_TYPES,
    UNDELIVERED,
    Malformed,
    VendorReceipt,
    callback_fields,
    parse,
    reply,
)

pytestmark = pytest.mark.unit

MID = "019a2c87f7fc" + "9659709f7e9708f7"
FORM = "application/x-www-form-urlencoded"


def xiaomi_form(doc: dict[str, Any]) -> bytes:
    return urlencode({"data": json.dumps(doc)}).encode()


def test_xiaomi_receipts_name_the_message_by_param_and_the_devices_by_targets() -> None:
    body = xiaomi_form(
        {
            "slm001": {"param": MID, "type": 1, "targets": "r1,r2", "jobkey": ""},
            "slm002": {"param": MID, "type": "16", "targets": "r3"},
            "slm003": {"param": MID, "type": 2, "targets": "r1"},
            "slm004": {"param": MID, "type": 128, "targets": "r4"},
            "slm005": {"param": "not-ours", "type": 1, "targets": "r5"},
        }
    )
    assert parse(ChannelType.XIAOMI, FORM, body) == [
        VendorReceipt(MID, "r1", DELIVERED),
        VendorReceipt(MID, "r2", DELIVERED),
        VendorReceipt(MID, "r3", INVALID, "invalid target"),
        VendorReceipt(MID, "r1", CLICKED),
        VendorReceipt(MID, "r4", UNDELIVERED, "daily quota"),
    ]
    as_json = json.dumps({"slm001": {"param": MID, "type": 1, "targets": "r1"}}).encode()
    assert parse(ChannelType.XIAOMI, "application/json", as_json) == [VendorReceipt(MID, "r1", DELIVERED)]


def test_oppo_vivo_huawei_and_honor_receipts() -> None:
    oppo = [
        {"messageId": "m", "taskId": "m", "registrationIds": "o1,o2", "param": MID, "eventType": "push_arrive"},
        {"messageId": "m", "taskId": "m", "registrationIds": "o3", "param": MID, "eventType": "regid_invalid"},
        {"messageId": "m", "taskId": "m", "registrationIds": "o4", "param": MID, "eventType": "user_daily_limit"},
    ]
    assert parse(ChannelType.OPPO, "application/json", json.dumps(oppo).encode()) == [
        VendorReceipt(MID, "o1", DELIVERED),
        VendorReceipt(MID, "o2", DELIVERED),
        VendorReceipt(MID, "o3", INVALID, "regid_invalid"),
        VendorReceipt(MID, "o4", UNDELIVERED, "user_daily_limit"),
    ]
    vivo = {"123": {"targets": "v1,v2", "ackTime": 1, "param": MID, "ackType": "0"}}
    assert parse(ChannelType.VIVO, "application/json", json.dumps(vivo).encode()) == [
        VendorReceipt(MID, "v1", DELIVERED),
        VendorReceipt(MID, "v2", DELIVERED),
    ]
    statuses = [
        {"biTag": MID, "appid": "1", "token": "h1", "status": 0, "timestamp": 1, "requestId": "r"},
        {"biTag": MID, "token": "h2", "status": 2},
        {"biTag": MID, "token": "h3", "deliveryStatus": {"result": 6, "timestamp": 1}},  # V2
        {"biTag": "", "token": "h4", "status": 0},  # a message sent without our id
    ]
    body = json.dumps({"statuses": statuses}).encode()
    assert parse(ChannelType.HUAWEI, "application/json", body) == [
        VendorReceipt(MID, "h1", DELIVERED),
        VendorReceipt(MID, "h2", INVALID, "status 2: app uninstalled"),
        VendorReceipt(MID, "h3", UNDELIVERED, "status 6"),
    ]
    # Honor's status codes besides 0 are not documented where they could be read: not delivered, never dead.
    assert [r.event for r in parse(ChannelType.HONOR, "application/json", body)] == [
        DELIVERED,
        UNDELIVERED,
        UNDELIVERED,
    ]
    assert reply(ChannelType.HUAWEI) == {"code": "0", "message": "success"}


@pytest.mark.parametrize(
    ("channel", "content_type", "body"),
    [
        (ChannelType.XIAOMI, FORM, b"nodata=1"),
        (ChannelType.XIAOMI, FORM, urlencode({"data": "{"}).encode()),
        (ChannelType.XIAOMI, FORM, xiaomi_form({"m": {"param": MID, "type": True, "targets": "r"}})),
        (ChannelType.XIAOMI, FORM, xiaomi_form({"m": {"param": MID, "type": 1, "targets": ["r"]}})),
        (ChannelType.XIAOMI, FORM, xiaomi_form({"m": {"param": MID, "type": "\u0661", "targets": "r"}})),  # Arabic 1
        (ChannelType.XIAOMI, FORM, b"data=%ff"),
        (ChannelType.OPPO, "application/json", b'{"eventType": "push_arrive"}'),
        (ChannelType.OPPO, "application/json", b'[{"param": "x"}]'),
        (ChannelType.VIVO, "application/json", b"[]"),
        (ChannelType.HUAWEI, "application/json", b'{"statuses": {}}'),
        (ChannelType.HUAWEI, "application/json", b'{"statuses": [{"token": "t", "status": "0"}]}'),
        (ChannelType.HUAWEI, "application/json", b'{"statuses": [{"token": 5, "status": 0}]}'),
        (ChannelType.HONOR, "application/json", b'{"statuses": [{"token": "t"}]}'),
        (ChannelType.HONOR, "application/json", b"NaN"),
    ],
)
def test_malformed_receipts_are_refused(channel: ChannelType, content_type: str, body: bytes) -> None:
    with pytest.raises(Malformed):
        parse(channel, content_type, body)


def test_a_post_of_too_many_receipts_is_refused() -> None:
    targets = ",".join(f"r{i}" for i in range(MAX_RECEIPTS + 1))
    with pytest.raises(Malformed, match="more than"):
        parse(ChannelType.XIAOMI, FORM, xiaomi_form({"m": {"param": MID, "type": 1, "targets": targets}}))
    statuses = [{"biTag": MID, "token": f"t{i}", "status": 0} for i in range(MAX_RECEIPTS + 1)]
    with pytest.raises(Malformed, match="more than"):
        parse(ChannelType.HUAWEI, "application/json", json.dumps({"statuses": statuses}).encode())


def test_deep_or_huge_bodies_are_refused_quickly() -> None:
    import time

    deep = b'{"statuses": [{"token": "t", "status": 0, "biTag": ' + b"[" * 1000 + b"]" * 1000 + b"}]}"
    assert parse(ChannelType.HUAWEI, "application/json", deep) == []  # not one of our ids: left out
    deep_param = b'{"m": {"targets": "r", "type": 1, "param": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    assert parse(ChannelType.XIAOMI, "application/json", deep_param) == []
    huge = [{"param": MID, "eventType": "push_arrive", "registrationIds": "a," * 500_000}]
    started = time.monotonic()
    with pytest.raises(Malformed, match="more than"):  # split no further than the bound
        parse(ChannelType.OPPO, "application/json", json.dumps(huge).encode())
    assert time.monotonic() - started < 0.5
    spaced = {"m": {"param": MID, "type": 1, "targets": "ok-token,bad token,\u00e9"}}
    assert [r.token for r in parse(ChannelType.XIAOMI, FORM, xiaomi_form(spaced))] == ["ok-token"]


async def test_receipts_count_only_the_tokens_the_message_was_sent_with() -> None:
    from mpaas.push.config import VendorChannel
    from mpaas.push.messages import Content, PushMessage, Target
    from mpaas.push.receipts import record
    from mpaas.push.registry import MemoryRegistry
    from mpaas.push.state import MemoryPushState
    from mpaas.stores import MemoryHotStore

    state, hot, registry = MemoryPushState(), MemoryHotStore(), MemoryRegistry()
    m = PushMessage(MID, "SHOP", "prod", Target("all"), Content(title="t"))
    await state.save(m, "Done")
    await state.remember_tokens(MID, [("d1", "t1"), ("", "by-token")], 60)
    channel = VendorChannel("shop", "mi", ChannelType.XIAOMI, "SHOP", None, None, None, None)
    forged = [VendorReceipt(MID, f"forged-{i}", DELIVERED) for i in range(50)]
    counted = await record(state, hot, registry, channel, [VendorReceipt(MID, "t1", DELIVERED), *forged])
    counted += await record(state, hot, registry, channel, [VendorReceipt(MID, "by-token", DELIVERED)])
    counted += await record(state, hot, registry, channel, [VendorReceipt(MID, "forged-1", INVALID, "x")])
    st = await state.status(MID)
    assert counted == 2 and st is not None and st.counts == {"Receipt.Delivered": 2}
    assert await state.failed(MID) == []  # a forged dead token is not listed
    other_app = VendorChannel("shop", "mi", ChannelType.XIAOMI, "OTHER", None, None, None, None)
    assert await record(state, hot, registry, other_app, [VendorReceipt(MID, "t1", CLICKED)]) == 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(RECEIPT_TYPES), st.sampled_from(["application/json", FORM, ""]), st.binary(max_size=200))
def test_any_body_is_read_or_refused_as_malformed(channel: ChannelType, content_type: str, body: bytes) -> None:
    try:
        found = parse(channel, content_type, body)
    except Malformed:
        return
    assert all(isinstance(r, VendorReceipt) for r in found)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(RECEIPT_TYPES), JSON)
def test_any_json_is_read_or_refused_as_malformed(channel: ChannelType, doc: Any) -> None:
    for content_type, body in (("application/json", json.dumps(doc).encode()), (FORM, xiaomi_form(doc))):
        try:
            parse(channel, content_type, body)
        except Malformed:
            pass


def test_the_fields_that_ask_each_vendor_for_receipts() -> None:
    url = "https://push.example.com/v1/push/receipts/shop/mi/" + "t" * 22
    assert callback_fields(ChannelType.XIAOMI, url, MID) == {
        "extra.callback": url,
        "extra.callback.param": MID,
        "extra.callback.type": "19",
    }
    assert callback_fields(ChannelType.OPPO, url, MID) == {"call_back_url": url, "call_back_parameter": MID}
    assert callback_fields(ChannelType.VIVO, url, MID) == {"extra": {"callback": url, "callback.param": MID}}
    assert callback_fields(ChannelType.HUAWEI, url, MID) == {}  # its console holds the address


def _resources(spec: dict[str, Any], **secret: bytes) -> Resources:
    channel = validate(
        "PushChannel",
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "PushChannel",
            "metadata": {"name": "mi", "namespace": "shop"},
            "spec": {"appId": "SHOP", "credentialsSecretRef": {"name": "mi"}, **spec},
        },
    )
    encoded = {k: base64.b64encode(v).decode() for k, v in secret.items()}
    s: Resource = validate(
        SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mi", "namespace": "shop"}, "data": encoded}
    )
    return {"PushChannel": {("shop", "mi"): channel}, SECRET: {("shop", "mi"): s}}


XIAOMI = {"type": "Xiaomi", "xiaomi": {"packageName": "com.example.app"}}


@pytest.mark.parametrize(
    ("spec", "secret", "address"),
    [
        ({**XIAOMI, "receiptUrl": "https://push.example.com/"}, {"receiptToken": b"tok-" + b"x" * 18},
         "https://push.example.com/v1/push/receipts/shop/mi/tok-" + "x" * 18),
        (XIAOMI, {"receiptToken": b"t" * 22}, None),  # no receiptUrl: receipts off
        ({**XIAOMI, "receiptUrl": "https://push.example.com"}, {}, None),  # no token
        ({**XIAOMI, "receiptUrl": "https://push.example.com"}, {"receiptToken": b"short"}, None),
        ({**XIAOMI, "receiptUrl": "https://push.example.com"}, {"receiptToken": b"t" * 21 + b"/"}, None),
        ({**XIAOMI, "receiptUrl": "https://push." + "e" * 50 + ".com"}, {"receiptToken": b"t" * 40}, None),  # > 128
    ],
)  # fmt: skip
def test_a_channel_takes_receipts_at_an_address_its_vendor_accepts(
    spec: dict[str, Any], secret: dict[str, bytes], address: str | None
) -> None:
    config = compiler(KeyRing(), Clients())(_resources(spec, appSecret=b"app-secret", **secret))
    (channel,) = config.channels
    assert channel.receipt_url == address and channel.client is not None
    assert (channel.receipt_token is None) == (address is None)


def test_a_receipt_messages_id_is_read_from_its_json_payload() -> None:
    from mpaas.link.server import receipt_id

    assert receipt_id(b'{"messageId":"' + MID.encode() + b'","title":"t"}') == MID
    for payload in (b"", b"not json", b"[1]", b'{"title": "t"}', b'{"messageId": 5}', b'{"messageId": ""}',
                    b'{"messageId": "' + b"x" * 65 + b'"}'):  # fmt: skip
        assert receipt_id(payload) is None


async def test_link_acks_count_as_delivered_once_per_device_and_move_the_cursor() -> None:
    from mpaas.link import receipt_log
    from mpaas.link.inbox import RECEIPT_LOG
    from mpaas.push.messages import Content, PushMessage, Target
    from mpaas.push.receipts import LINK_READER, LinkReceipts
    from mpaas.push.state import MemoryPushState
    from mpaas.stores import MemoryHotStore

    state, hot, log = MemoryPushState(), MemoryHotStore(), receipt_log(None, "link:")
    m = PushMessage(MID, "SHOP", "prod", Target("all"), Content(title="t"))
    await state.save(m, "Done")
    reader = LinkReceipts(state, hot, lambda: log)
    assert await reader.take() == 0
    pairs = [["SHOP/prod/d1", MID], ["SHOP/prod/d2", MID], ["SHOP/prod/d1", MID], ["OTHER/prod/d3", MID]]
    await log.append(RECEIPT_LOG, json.dumps(pairs).encode())
    await log.append(RECEIPT_LOG, json.dumps([["SHOP/prod/d2", MID], ["SHOP/prod/d4", "f" * 28]]).encode())
    await log.append(RECEIPT_LOG, b"not json")  # skipped, not stuck on
    assert await reader.take() == 3
    st = await state.status(MID)
    assert st is not None and st.counts == {"Receipt.Delivered": 2}  # d1 and d2; another app's device is not
    assert await reader.take() == 0  # the cursor moved past them
    assert await log.cursor(RECEIPT_LOG, LINK_READER) == (await log.read(RECEIPT_LOG, after=0)).last_seq
    assert (await LinkReceipts(state, hot, lambda: None).take()) == 0  # no link: nothing to read
