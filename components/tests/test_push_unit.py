"""Push's pure parts, in-process: request parsing and its refusals, the message's JSON round trip, routing,
the server API's authentication (signatures, Basic, device link tokens), fan-out filters, vendor jobs and the
config compiled from MpaasGateway apps, PushChannels and Secrets. No servers, no network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpaas.api.push import ChannelType
from mpaas.apps import compile_apps
from mpaas.config import Resource, Resources, unlisted, validate
from mpaas.crypto.signing import canonical
from mpaas.keyring import SECRET, KeyRing
from mpaas.link.config import AppLink, LinkConfig
from mpaas.link.heartbeat import Bounds
from mpaas.link.tokens import TokenKey
from mpaas.push import auth
from mpaas.push.config import AppKeys, Clients, PushConfig, VendorChannel, compiler
from mpaas.push.fanout import matches, vendor_job
from mpaas.push.messages import (
    MAX_IDS,
    MAX_NOTIFICATION_BYTES,
    MAX_SCHEDULE_SECONDS,
    MAX_TTL_SECONDS,
    TARGET_TYPES,
    Content,
    Invalid,
    PushMessage,
    Target,
    batch_part,
    check_size,
    idempotency_key,
    new_batch_ids,
    new_message_id,
    parse_content,
    parse_options,
    parse_target,
    parse_time_ms,
    valid_message_id,
    version_key,
)
from mpaas.push.registry import Device
from mpaas.push.routing import LINK, NO_CHANNEL, route
from mpaas.push.senders import Job, claim_id, notification
from mpaas.push.vendors.base import VendorClient
from mpaas.stores import MemoryHotStore

pytestmark = pytest.mark.unit

APP, WS = "SHOP", "prod"
KEY = b"s" * 32
OTHER_KEY = b"o" * 32
LINK_KEY = b"k" * 32
ARABIC = str.maketrans("0123456789", "".join(chr(0x660 + i) for i in range(10)))  # Arabic-Indic digits
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
MID = "0" * 12 + "a" * 16


def refused(call: Callable[[], object], code: str = "InvalidRequest", status: int = 400) -> Invalid:
    with pytest.raises(Invalid) as e:
        call()
    assert (e.value.code, e.value.status) == (code, status), (e.value.code, e.value.status, str(e.value))
    return e.value


def message(target: Target | None = None, content: Content | None = None, **kw: Any) -> PushMessage:
    return PushMessage(
        kw.pop("message_id", MID), APP, WS, target or Target("all"), content or Content(title="hi"), **kw
    )


# -- parse_target --------------------------------------------------------------------------------------------


def test_targets_parse_with_ids_kept_once_in_order() -> None:
    t = parse_target({"type": "device", "ids": ["d2", "d1", "d2"]})
    assert t == Target("device", ("d2", "d1"))
    assert parse_target({"type": "all"}) == Target("all")
    assert not parse_target({"type": "all"}).filtered
    t = parse_target(
        {
            "type": "tag",
            "ids": ["vip"],
            "filter": {"platforms": ["ios", "android"], "tags": ["beta"], "minAppVersion": "2.1", "maxAppVersion": "3"},
        }
    )
    assert t == Target("tag", ("vip",), ("ios", "android"), ("beta",), "2.1", "3")
    assert t.filtered
    assert parse_target({"type": "user", "ids": ["u1"], "filter": {"platforms": ["web"]}}).platforms == ("web",)
    assert parse_target({"type": "alias", "ids": ["x" * 128]}).ids == ("x" * 128,)
    assert parse_target({"type": "device", "ids": ["é✓-設備"]}).ids == ("é✓-設備",)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (None, "target"),
        ([], "target"),
        ("all", "target"),
        ({}, "target.type"),
        ({"type": "token", "ids": ["x"]}, "target.type"),
        ({"type": "everyone"}, "target.type"),
        ({"type": ["all"]}, "target.type"),
        ({"type": "device"}, "target.ids"),
        ({"type": "device", "ids": []}, "target.ids"),
        ({"type": "device", "ids": "d1"}, "ids"),
        ({"type": "device", "ids": {"d1": 1}}, "ids"),
        ({"type": "device", "ids": [1]}, "ids"),
        ({"type": "device", "ids": [None]}, "ids"),
        ({"type": "device", "ids": ["has space"]}, "ids"),
        ({"type": "device", "ids": ["{braces}"]}, "ids"),
        ({"type": "device", "ids": ["tab\there"]}, "ids"),
        ({"type": "device", "ids": [""]}, "ids"),
        ({"type": "device", "ids": ["x" * 129]}, "ids"),
        ({"type": "tag", "ids": ["x" * 65]}, "ids"),
        ({"type": "all", "ids": ["a"]}, "target.ids"),
        ({"type": "all", "ids": []}, "target.ids"),
        ({"type": "all", "filter": []}, "filter"),
        ({"type": "all", "filter": None}, "filter"),
        ({"type": "all", "filter": {"os": ["ios"]}}, "target.filter"),
        ({"type": "device", "ids": ["a"], "filter": {"platforms": ["ios"]}}, "target.filter"),
        ({"type": "alias", "ids": ["a"], "filter": {"tags": ["t"]}}, "target.filter"),
        ({"type": "all", "filter": {"platforms": ["windows"]}}, "platforms"),
        ({"type": "all", "filter": {"platforms": "ios"}}, "platforms"),
        ({"type": "all", "filter": {"platforms": ["ios", "android", "harmony", "web", "ios"]}}, "platforms"),
        ({"type": "all", "filter": {"tags": ["a b"]}}, "tags"),
        ({"type": "all", "filter": {"tags": [f"t{i}" for i in range(101)]}}, "tags"),
        ({"type": "all", "filter": {"minAppVersion": "1.2.3.4.5"}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": "v1"}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": "1."}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": ""}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": 2}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": "1234567890"}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": "1.2".translate(ARABIC)}}, "minAppVersion"),
        ({"type": "all", "filter": {"minAppVersion": "1.2".translate(FULLWIDTH)}}, "minAppVersion"),
        ({"type": "all", "filter": {"maxAppVersion": "1.2-beta"}}, "maxAppVersion"),
        ({"type": "all", "filter": {"maxAppVersion": "2\n"}}, "maxAppVersion"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(raw: object, field: str) -> None:
    e = refused(lambda: parse_target(raw))
    assert field in str(e)


def test_target_lists_are_bounded() -> None:
    assert len(parse_target({"type": "device", "ids": [f"d{i}" for i in range(MAX_IDS)]}).ids) == MAX_IDS
    e = refused(lambda: parse_target({"type": "device", "ids": [f"d{i}" for i in range(MAX_IDS + 1)]}))
    assert "ids" in str(e) and str(MAX_IDS) in str(e)
    started = time.monotonic()
    refused(lambda: parse_target({"type": "user", "ids": ["u"] * 1_000_000}))
    refused(lambda: parse_target({"type": "all", "filter": {"tags": ["t"] * 1_000_000}}))
    refused(lambda: parse_target({"type": "all", "filter": {"platforms": ["ios"] * 1_000_000}}))
    assert time.monotonic() - started < 2  # refused by length, not after checking a million items


# -- parse_content -------------------------------------------------------------------------------------------


def test_content_parses() -> None:
    c = parse_content({"title": "t", "body": "b", "data": {"k": "v"}, "badge": 0, "sound": "ding", "category": "news"})
    assert c == Content("t", "b", {"k": "v"}, 0, "ding", "news")
    assert parse_content({"data": {"k": "v"}}) == Content(data={"k": "v"})
    assert parse_content({"body": "b", "title": None}).title is None
    assert parse_content({"title": "x" * 512, "badge": 99999}).badge == 99999
    assert parse_content({"body": "y" * 4096}).body == "y" * 4096


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (None, "notification"),
        ("hello", "notification"),
        ([{"title": "t"}], "notification"),
        ({}, "notification"),
        ({"data": {}}, "notification"),
        ({"title": "t", "icon": "x"}, "notification"),
        ({"title": "t", "data": []}, "data"),
        ({"title": "t", "data": None}, "data"),
        ({"title": "t", "data": "k=v"}, "data"),
        ({"data": {"k": 1}}, "notification.data"),
        ({"data": {"k": None}}, "notification.data"),
        ({"data": {"k": {"nested": "v"}}}, "notification.data"),
        ({"data": {f"k{i}": "v" for i in range(65)}}, "notification.data"),
        ({"title": "t", "badge": True}, "notification.badge"),
        ({"title": "t", "badge": False}, "notification.badge"),
        ({"title": "t", "badge": -1}, "notification.badge"),
        ({"title": "t", "badge": 100000}, "notification.badge"),
        ({"title": "t", "badge": 1.0}, "notification.badge"),
        ({"title": "t", "badge": "3"}, "notification.badge"),
        ({"title": 5}, "title"),
        ({"title": ["t"]}, "title"),
        ({"title": "x" * 513}, "title"),
        ({"body": "x" * 4097}, "body"),
        ({"body": True}, "body"),
        ({"title": "t", "sound": "x" * 257}, "sound"),
        ({"title": "t", "category": "x" * 257}, "category"),
        ({"title": "t", "category": 1}, "category"),
    ],
)
def test_bad_notifications_are_refused_naming_the_field(raw: object, field: str) -> None:
    e = refused(lambda: parse_content(raw))
    assert field in str(e)


def test_huge_data_is_refused_quickly() -> None:
    started = time.monotonic()
    refused(lambda: parse_content({"data": {f"k{i}": "v" for i in range(200_000)}}))
    assert time.monotonic() - started < 2


# -- parse_time_ms, parse_options ----------------------------------------------------------------------------


def test_times_are_epoch_milliseconds_or_rfc3339_with_an_offset() -> None:
    assert parse_time_ms(1, "t") == 1
    assert parse_time_ms(10**15 - 1, "t") == 10**15 - 1
    assert parse_time_ms("2026-12-01T09:00:00Z", "t") == 1796115600000
    assert parse_time_ms("2026-12-01T11:00:00+02:00", "t") == 1796115600000
    assert parse_time_ms("2026-12-01T09:00:00.250Z", "t") == 1796115600250


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        10**15,
        True,
        False,
        1.7e12,
        None,
        [1796115600000],
        {"at": 1796115600000},
        "1796115600000",
        "2026-12-01T09:00:00",  # no offset
        "2026-12-01",
        "tomorrow",
        "",
        "2026-12-01T09:00:00Z" + " " * 30,  # over 40 characters
        "2026-12-01T09:00:00+24:00",
        "123".translate(ARABIC),
        "123".translate(FULLWIDTH),
        "2026-12-01T09:00:00Z".translate(ARABIC),
        "2026-12-01T09:00:00Z".translate(FULLWIDTH),
        "2026-12-01T09:00:00Z"[:9] + "1".translate(FULLWIDTH) + "T09:00:00Z",  # one fullwidth digit
        "1796115600000".translate(ARABIC),
        "1796115600000".translate(FULLWIDTH),
    ],
)
def test_bad_times_are_refused_naming_the_field(value: object) -> None:
    e = refused(lambda: parse_time_ms(value, "scheduledAt"))
    assert "scheduledAt" in str(e)


def test_options_have_defaults() -> None:
    assert parse_options({}, 1000) == {"ttl_seconds": 86400, "urgent": True, "collapse_key": None, "scheduled_ms": None}
    assert parse_options({"ttlSeconds": 0, "urgent": False, "collapseKey": "k~!", "scheduledAt": None}, 1000) == {
        "ttl_seconds": 0,
        "urgent": False,
        "collapse_key": "k~!",
        "scheduled_ms": None,
    }
    assert parse_options({"ttlSeconds": MAX_TTL_SECONDS}, 0)["ttl_seconds"] == MAX_TTL_SECONDS
    assert parse_options({"collapseKey": "x" * 64}, 0)["collapse_key"] == "x" * 64


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"ttlSeconds": True}, "ttlSeconds"),
        ({"ttlSeconds": False}, "ttlSeconds"),
        ({"ttlSeconds": -1}, "ttlSeconds"),
        ({"ttlSeconds": MAX_TTL_SECONDS + 1}, "ttlSeconds"),
        ({"ttlSeconds": "60"}, "ttlSeconds"),
        ({"ttlSeconds": 60.0}, "ttlSeconds"),
        ({"ttlSeconds": None}, "ttlSeconds"),
        ({"ttlSeconds": "٦٠"}, "ttlSeconds"),
        ({"urgent": 1}, "urgent"),
        ({"urgent": "true"}, "urgent"),
        ({"urgent": None}, "urgent"),
        ({"collapseKey": ""}, "collapseKey"),
        ({"collapseKey": "a b"}, "collapseKey"),
        ({"collapseKey": "é"}, "collapseKey"),
        ({"collapseKey": "x" * 65}, "collapseKey"),
        ({"collapseKey": 5}, "collapseKey"),
        ({"collapseKey": "k\n"}, "collapseKey"),
        ({"scheduledAt": True}, "scheduledAt"),
        ({"scheduledAt": "soon"}, "scheduledAt"),
        ({"scheduledAt": "2026-12-01T09:00:00"}, "scheduledAt"),
    ],
)
def test_bad_options_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    e = refused(lambda: parse_options(raw, 1_700_000_000_000))
    assert field in str(e)


def test_schedules_must_be_ahead_and_within_30_days() -> None:
    now = 1_796_000_000_000
    limit = now + MAX_SCHEDULE_SECONDS * 1000
    assert parse_options({"scheduledAt": now + 1}, now)["scheduled_ms"] == now + 1
    assert parse_options({"scheduledAt": limit}, now)["scheduled_ms"] == limit
    assert parse_options({"scheduledAt": "2026-12-01T09:00:00Z"}, now)["scheduled_ms"] == 1796115600000
    for past in (now, now - 1, 1, "2020-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"):
        e = refused(lambda p=past: parse_options({"scheduledAt": p}, now), "ScheduleInPast")
        assert "scheduledAt" in str(e)
    for far in (limit + 1, 10**15 - 1, "2099-01-01T00:00:00Z"):
        e = refused(lambda f=far: parse_options({"scheduledAt": f}, now), "ScheduleTooFar")
        assert "scheduledAt" in str(e)


@pytest.mark.parametrize("table", [ARABIC, FULLWIDTH])
def test_schedules_in_other_scripts_digits_are_refused(table: dict[int, str]) -> None:
    now = 1_796_000_000_000
    for value in (str(now + 60_000), "2026-12-01T09:00:00Z"):
        e = refused(lambda v=value: parse_options({"scheduledAt": v.translate(table)}, now))
        assert "scheduledAt" in str(e)


# -- idempotency keys ----------------------------------------------------------------------------------------


def test_idempotency_keys_from_the_body_or_the_header() -> None:
    assert idempotency_key({}, None) is None
    assert idempotency_key({"idempotencyKey": "k1"}, None) == "k1"
    assert idempotency_key({}, "k2") == "k2"
    assert idempotency_key({"idempotencyKey": "k3"}, "k3") == "k3"
    assert idempotency_key({"idempotencyKey": "~" * 128}, None) == "~" * 128


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        ({"idempotencyKey": "a"}, "b"),
        ({"idempotencyKey": ""}, None),
        ({}, ""),
        ({"idempotencyKey": "a b"}, None),
        ({}, "a b"),
        ({"idempotencyKey": "é"}, None),
        ({"idempotencyKey": "x" * 129}, None),
        ({}, "x" * 129),
        ({"idempotencyKey": 5}, None),
        ({"idempotencyKey": True}, None),
        ({"idempotencyKey": ["k"]}, "k"),
        ({"idempotencyKey": "k\n"}, None),
    ],
)
def test_bad_idempotency_keys_are_refused(raw: dict[str, Any], header: str | None) -> None:
    e = refused(lambda: idempotency_key(raw, header))
    assert "idempotencyKey" in str(e) or "Idempotency-Key" in str(e)


def test_an_explicit_null_idempotency_key_in_the_body_keeps_the_header() -> None:
    assert idempotency_key({"idempotencyKey": None}, "retry-1") == "retry-1"


# -- size, link payload, ids, versions -----------------------------------------------------------------------


def _with_payload_size(size: int, char: str = "x") -> PushMessage:
    base = len(message(content=Content(body="")).link_payload())
    per = len(char.encode())
    assert (size - base) % per == 0
    return message(content=Content(body=char * ((size - base) // per)))


@pytest.mark.parametrize("char", ["x", "é", "設", "😀"])
def test_the_notification_may_be_4096_bytes_as_json_not_one_more(char: str) -> None:
    base = len(message(content=Content(body="")).link_payload())
    per = len(char.encode())
    fits = MAX_NOTIFICATION_BYTES - (MAX_NOTIFICATION_BYTES - base) % per
    m = _with_payload_size(fits, char)
    assert len(m.link_payload()) == fits
    check_size(m)
    over = message(content=Content(body=(m.content.body or "") + char))
    e = refused(lambda: check_size(over), "PayloadTooLarge", 413)
    assert str(len(over.link_payload())) in str(e) and str(MAX_NOTIFICATION_BYTES) in str(e)


def test_the_size_counts_the_data_and_the_collapse_key() -> None:
    check_size(message(content=Content(title="t", data={"k": "v" * 4000})))
    refused(lambda: check_size(message(content=Content(title="t", data={"k": "v" * 4096}))), "PayloadTooLarge", 413)
    m = _with_payload_size(MAX_NOTIFICATION_BYTES)
    refused(
        lambda: check_size(PushMessage(m.message_id, APP, WS, m.target, m.content, collapse_key="c")),
        "PayloadTooLarge",
        413,
    )


def test_the_link_payload_holds_what_is_set_as_utf8_json() -> None:
    m = message(content=Content(title="Grüße 設", data={"k": "ü"}, badge=0, category="news"), collapse_key="ck")
    raw = m.link_payload()
    assert "Grüße 設".encode() in raw  # UTF-8, not \u escapes
    assert json.loads(raw) == {
        "messageId": MID,
        "title": "Grüße 設",
        "badge": 0,
        "category": "news",
        "data": {"k": "ü"},
        "collapseKey": "ck",
    }
    assert json.loads(message(content=Content(body="b")).link_payload()) == {"messageId": MID, "body": "b"}
    sound = json.loads(message(content=Content(sound="s", title="t")).link_payload())
    assert sound == {"messageId": MID, "title": "t", "sound": "s"}


@pytest.mark.parametrize(
    "raw",
    [b'{"title": "\\ud800"}', b'{"body": "ok \\udfff"}', b'{"data": {"\\ud83d": "v"}}', b'{"data": {"k": "\\udc00"}}'],
)
def test_lone_surrogates_are_refused_not_a_crash(raw: bytes) -> None:
    try:
        content = parse_content(json.loads(raw))
    except Invalid:
        return
    m = message(content=content)
    try:
        check_size(m)
    except Invalid:
        return
    PushMessage.from_json(m.to_json())


def test_message_ids_are_28_hex_digits_time_ordered_and_unique() -> None:
    before = int(time.time() * 1000)
    ids = [new_message_id() for _ in range(200)]
    after = int(time.time() * 1000)
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert valid_message_id(i)
        assert before <= int(i[:12], 16) <= after
    assert ids == sorted(ids, key=lambda i: i[:12])


def test_batch_ids_share_their_batch_record() -> None:
    ids = new_batch_ids(500)
    assert len(set(ids)) == 500 and all(valid_message_id(i) and len(i) == 28 for i in ids)
    assert {batch_part(i)[0] for i in ids} == {ids[0][:24]}
    assert [int(batch_part(i)[1], 16) for i in ids] == list(range(500))
    assert new_batch_ids(1)[0][:24] != ids[0][:24]
    assert batch_part(MID) == (MID, "")  # a lone message is its own record


@pytest.mark.parametrize(
    "value",
    [
        "a" * 24 + "-" + "a" * 4,
        "a" * 23 + "-" + "a" * 4,
        "a" * 24 + "_aaa",
        "a" * 24 + "-AAA",
    ],
)
def test_invalid_batch_message_ids(value: str) -> None:
    assert not valid_message_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 27,
        "a" * 29,
        "A" * 28,
        "g" * 28,
        MID + "\n",
        " " + MID[1:],
        "0".translate(FULLWIDTH) + MID[1:],
        "0".translate(ARABIC) + MID[1:],
        MID[:-1] + "-",
    ],
)
def test_invalid_message_ids(value: str) -> None:
    assert not valid_message_id(value)


def test_version_keys_compare_by_number() -> None:
    assert version_key("2.10.1") == (2, 10, 1)
    assert version_key("2.10") > version_key("2.9.9")
    assert version_key("10") > version_key("9.99")


# -- PushMessage JSON round trips ----------------------------------------------------------------------------

texts = st.text(max_size=20)
ids = st.lists(st.text(min_size=1, max_size=12), max_size=5).map(tuple)
versions = st.none() | st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}", fullmatch=True)
targets = st.builds(
    Target,
    type=st.sampled_from(TARGET_TYPES),
    ids=ids,
    platforms=st.lists(st.sampled_from(["ios", "android", "harmony", "web"]), unique=True).map(tuple),
    tags=ids,
    min_app_version=versions,
    max_app_version=versions,
    tokens=st.lists(st.tuples(st.sampled_from([c.value for c in ChannelType]), st.text(min_size=1))).map(tuple),
)
contents = st.builds(
    Content,
    title=st.none() | texts,
    body=st.none() | texts,
    data=st.dictionaries(texts, texts, max_size=5),
    badge=st.none() | st.integers(0, 99999),
    sound=st.none() | texts,
    category=st.none() | texts,
)
messages = st.builds(
    PushMessage,
    message_id=st.from_regex(r"[0-9a-f]{28}|[0-9a-f]{24}-[0-9a-f]{3}", fullmatch=True),
    app_id=st.text(min_size=1, max_size=10),
    workspace_id=st.text(min_size=1, max_size=10),
    target=targets,
    content=contents,
    ttl_seconds=st.integers(0, MAX_TTL_SECONDS),
    urgent=st.booleans(),
    collapse_key=st.none() | texts,
    scheduled_ms=st.none() | st.integers(1, 10**15 - 1),
    created_ms=st.integers(0, 10**15 - 1),
    sync=st.booleans(),
    link_only=st.booleans(),
    recalls=st.none() | st.from_regex(r"[0-9a-f]{28}", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_messages_survive_their_json(m: PushMessage) -> None:
    assert PushMessage.from_json(m.to_json()) == m
    assert m.to_json() == orjson.dumps(m.to_dict())  # the stored JSON and a vendor job's message alike
    assert (b'"recalls"' in m.to_json()) == (m.recalls is not None)  # unset, left out: older readers know the rest
    newer = json.loads(m.to_json()) | {"a_field_of_a_newer_version": 1}
    assert PushMessage.from_json(json.dumps(newer).encode()) == m  # read by an older one: the field left out
    assert json.loads(m.link_payload())["messageId"] == m.message_id
    assert len(m.link_payload()) <= len(m.to_json())  # what lets check_size skip building the payload


@settings(max_examples=100, deadline=None)
@given(messages, st.tuples(texts, texts), st.lists(st.tuples(texts, texts), max_size=5))
def test_vendor_jobs_survive_their_json(m: PushMessage, channel: tuple[str, str], items: list[tuple[str, str]]) -> None:
    job = Job.parse(vendor_job(m, channel, items))
    assert job == Job(replace(m, target=Target(m.target.type)), channel, items)  # a job carries no target


def test_parsed_requests_survive_the_json() -> None:
    target = parse_target({"type": "tag", "ids": ["a", "b"], "filter": {"platforms": ["ios"], "minAppVersion": "1.2"}})
    content = parse_content({"title": "Grüße", "data": {"k": "v"}, "badge": 3})
    m = PushMessage(new_message_id(), APP, WS, target, content, **parse_options({"collapseKey": "c"}, 0), created_ms=5)
    check_size(m)
    assert PushMessage.from_json(m.to_json()) == m
    tokens = PushMessage(MID, APP, WS, Target("token", tokens=(("APNs", "t1"), ("FCM", "t2"))), content)
    assert PushMessage.from_json(tokens.to_json()) == tokens


# -- fuzzing the parsers: a value or Invalid, nothing else ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=25,
)
id_like = (
    st.sampled_from(["a", "b", "a b", "", "x" * 129, "{x}", "設備", "123".translate(ARABIC), "ios", "web"])
    | json_values
)
version_like = (
    st.sampled_from(["1", "2.10.1", "1.", "1.2.3.4.5", "1".translate(ARABIC), "1".translate(FULLWIDTH), ""])
    | json_values
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "platforms": st.lists(st.sampled_from(["ios", "android", "harmony", "web", "x"]) | json_values) | json_values,
        "tags": st.lists(id_like) | json_values,
        "minAppVersion": version_like,
        "maxAppVersion": version_like,
        "other": json_values,
    },
)
target_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*TARGET_TYPES, "ALL", ""]) | json_values,
        "ids": st.lists(id_like, max_size=5) | json_values,
        "filter": filters | json_values,
    },
)
content_like = st.fixed_dictionaries(
    {},
    optional={
        "title": texts | json_values,
        "body": texts | json_values,
        "data": st.dictionaries(st.text(max_size=5), texts | json_values, max_size=4) | json_values,
        "badge": st.integers(-5, 100005) | json_values,
        "sound": texts | json_values,
        "category": texts | json_values,
        "extra": json_values,
    },
)
time_like = (
    st.integers(-(10**16), 10**16)
    | st.from_regex(
        r"[0-9\u0661\uff12]{1,4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?"
        r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?",
        fullmatch=True,
    )
    | json_values
)
options_like = st.fixed_dictionaries(
    {},
    optional={
        "ttlSeconds": st.integers(-5, MAX_TTL_SECONDS + 5) | json_values,
        "urgent": json_values,
        "collapseKey": st.text(max_size=70) | json_values,
        "scheduledAt": time_like,
    },
)
fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def returns_or_invalid(call: Callable[[], object]) -> object:
    try:
        return call()
    except Invalid as e:
        assert e.code in ("InvalidRequest", "ScheduleInPast", "ScheduleTooFar"), e.code
        assert e.status == 400
        assert str(e)
        return None


@fuzz
@given(target_like | json_values)
def test_parse_target_returns_or_refuses(raw: object) -> None:
    t = returns_or_invalid(lambda: parse_target(raw))
    if t is not None:
        assert isinstance(t, Target) and t.type in TARGET_TYPES and t.type != "token"
        assert len(t.ids) <= MAX_IDS and (t.type == "all") == (not t.ids)


@fuzz
@given(content_like | json_values)
def test_parse_content_returns_or_refuses(raw: object) -> None:
    c = returns_or_invalid(lambda: parse_content(raw))
    if isinstance(c, Content):  # and the rest of the way: size and JSON
        m = message(content=c)
        try:
            check_size(m)
        except Invalid as e:
            assert e.code == "PayloadTooLarge"
        assert PushMessage.from_json(m.to_json()) == m


@fuzz
@given(options_like, st.integers(0, 2 * 10**12))
def test_parse_options_returns_or_refuses(raw: dict[str, Any], now_ms: int) -> None:
    returns_or_invalid(lambda: parse_options(raw, now_ms))


@fuzz
@given(time_like)
def test_parse_time_returns_or_refuses(value: object) -> None:
    ms = returns_or_invalid(lambda: parse_time_ms(value, "scheduledAt"))
    assert ms is None or isinstance(ms, int)


@fuzz
@given(
    json_values | st.fixed_dictionaries({}, optional={"idempotencyKey": st.text(max_size=130) | json_values}),
    st.none() | st.text(max_size=130),
)
def test_idempotency_key_returns_or_refuses(raw: object, header: str | None) -> None:
    if isinstance(raw, dict):
        returns_or_invalid(lambda: idempotency_key(cast(dict[str, Any], raw), header))


@fuzz
@given(json_values | st.fixed_dictionaries({"message": json_values, "channel": json_values, "items": json_values}))
def test_records_that_do_not_parse_raise_what_the_consumers_catch(raw: object) -> None:
    data = json.dumps(raw).encode()
    with pytest.raises((ValueError, KeyError, TypeError)):  # what the fan-out catches
        PushMessage.from_json(data)
    with pytest.raises((ValueError, KeyError, TypeError, IndexError)):  # what the senders catch
        Job.parse(data)


# -- routing -------------------------------------------------------------------------------------------------


def _channel(kind: ChannelType, *, working: bool = True, workspace: str | None = None, name: str = "") -> VendorChannel:
    client = cast(VendorClient, object()) if working else None
    return VendorChannel(
        "shop", name or kind.value.lower(), kind, APP, workspace, client, None if working else "broken", None
    )


ALL_VENDORS = {k: _channel(k) for k in ChannelType if k is not ChannelType.LINK}
EVERY_TOKEN = {k.value: f"tok-{k.value}" for k in ChannelType if k is not ChannelType.LINK}


@pytest.mark.parametrize(
    ("device", "online", "vendors", "has_link", "expected"),
    [
        # online on link: link, whatever tokens it has
        (Device("d", "android", "huawei", EVERY_TOKEN), True, ALL_VENDORS, True, LINK),
        (Device("d", "ios", "apple", EVERY_TOKEN), True, ALL_VENDORS, True, LINK),
        # "online" without a Link channel: the vendors
        (Device("d", "android", "huawei", EVERY_TOKEN), True, ALL_VENDORS, False, "Huawei"),
        # the brand's own channel first
        (Device("d", "android", "huawei", EVERY_TOKEN), False, ALL_VENDORS, True, "Huawei"),
        (Device("d", "android", "HUAWEI", EVERY_TOKEN), False, ALL_VENDORS, True, "Huawei"),
        (Device("d", "harmony", "honor", EVERY_TOKEN), False, ALL_VENDORS, True, "Honor"),
        (Device("d", "android", "xiaomi", EVERY_TOKEN), False, ALL_VENDORS, True, "Xiaomi"),
        (Device("d", "android", "redmi", EVERY_TOKEN), False, ALL_VENDORS, True, "Xiaomi"),
        (Device("d", "android", "poco", EVERY_TOKEN), False, ALL_VENDORS, True, "Xiaomi"),
        (Device("d", "android", "oppo", EVERY_TOKEN), False, ALL_VENDORS, True, "OPPO"),
        (Device("d", "android", "oneplus", EVERY_TOKEN), False, ALL_VENDORS, True, "OPPO"),
        (Device("d", "android", "realme", EVERY_TOKEN), False, ALL_VENDORS, True, "OPPO"),
        (Device("d", "android", "vivo", EVERY_TOKEN), False, ALL_VENDORS, True, "Vivo"),
        (Device("d", "android", "iqoo", EVERY_TOKEN), False, ALL_VENDORS, True, "Vivo"),
        (Device("d", "ios", "apple", EVERY_TOKEN), False, ALL_VENDORS, True, "APNs"),
        # iOS without a brand: APNs before FCM
        (Device("d", "ios", "", {"FCM": "f", "APNs": "a"}), False, ALL_VENDORS, True, "APNs"),
        # other brands: the fallback order, APNs, FCM, Huawei, Honor, Xiaomi, OPPO, Vivo
        (Device("d", "android", "samsung", EVERY_TOKEN), False, ALL_VENDORS, True, "APNs"),
        (Device("d", "android", "samsung", {"FCM": "f", "Xiaomi": "x"}), False, ALL_VENDORS, True, "FCM"),
        (Device("d", "android", "", {"Vivo": "v", "OPPO": "o"}), False, ALL_VENDORS, True, "OPPO"),
        (Device("d", "android", "", {"Vivo": "v", "Honor": "h", "Xiaomi": "x"}), False, ALL_VENDORS, True, "Honor"),
        # the brand's channel without its token, or not configured, or without a client: the next one
        (Device("d", "android", "huawei", {"FCM": "f"}), False, ALL_VENDORS, True, "FCM"),
        (
            Device("d", "android", "huawei", {"Huawei": "h", "FCM": "f"}),
            False,
            {ChannelType.FCM: _channel(ChannelType.FCM)},
            True,
            "FCM",
        ),
        (
            Device("d", "android", "huawei", {"Huawei": "h", "FCM": "f"}),
            False,
            {**ALL_VENDORS, ChannelType.HUAWEI: _channel(ChannelType.HUAWEI, working=False)},
            True,
            "FCM",
        ),
        (Device("d", "android", "xiaomi", {"Xiaomi": "", "OPPO": "o"}), False, ALL_VENDORS, True, "OPPO"),
        # nothing usable: the link inbox, or no channel at all
        (Device("d", "android", "huawei"), False, ALL_VENDORS, True, LINK),
        (Device("d", "android", "huawei", {"Huawei": "h"}), False, {}, True, LINK),
        (
            Device("d", "android", "huawei", {"Huawei": "h"}),
            False,
            {ChannelType.HUAWEI: _channel(ChannelType.HUAWEI, working=False)},
            True,
            LINK,
        ),
        (Device("d", "android", "huawei"), False, ALL_VENDORS, False, NO_CHANNEL),
        (Device("d", "ios", "apple", {"APNs": "a"}), True, {}, False, NO_CHANNEL),
        (Device("d", "web", "", {"Link": "x"}), False, ALL_VENDORS, False, NO_CHANNEL),
    ],
)
def test_routing(
    device: Device, online: bool, vendors: Mapping[ChannelType, VendorChannel], has_link: bool, expected: str
) -> None:
    name, channel, token = route(device, online=online, vendors=vendors, has_link=has_link)
    assert name == expected
    if expected in (LINK, NO_CHANNEL):
        assert (channel, token) == (None, "")
    else:
        assert channel is vendors[ChannelType(expected)]
        assert token == device.tokens[expected]


# -- auth: signed calls --------------------------------------------------------------------------------------


def sign(
    key: bytes,
    method: str = "POST",
    path: str = "/v1/push/messages",
    query: str = "",
    body: bytes = b'{"a":1}',
    *,
    app: str = APP,
    ws: str = WS,
    ts: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers as the API reads them (lower-case names), signed over the canonical message."""
    ts = str(int(time.time() * 1000)) if ts is None else ts
    nonce = os.urandom(8).hex() if nonce is None else nonce
    mac = hmac.new(key, canonical(method, path, query, "", app, ws, ts, nonce, body), hashlib.sha256).digest()
    return {"appid": app, "workspaceid": ws, "ts": ts, "nonce": nonce, "sign": base64.b64encode(mac).decode()}


def keyed(*keys: tuple[bytes, float | None], problem: str | None = None, more: tuple[AppKeys, ...] = ()) -> PushConfig:
    apps = {(APP, WS): AppKeys(APP, WS, tuple(keys), problem)}
    apps.update({(a.app_id, a.workspace_id): a for a in more})
    return PushConfig(apps=apps)


async def call(
    config: PushConfig,
    headers: Mapping[str, str],
    *,
    hot: MemoryHotStore | None = None,
    method: str = "POST",
    path: str = "/v1/push/messages",
    query: str = "",
    body: bytes = b'{"a":1}',
) -> auth.Caller:
    store = hot if hot is not None else MemoryHotStore()  # an empty store is falsy (it has a __len__)
    return await auth.signed(config, store, method, path, query, headers, body)


async def refused_call(config: PushConfig, headers: Mapping[str, str], code: str, **kw: Any) -> Invalid:
    with pytest.raises(Invalid) as e:
        await call(config, headers, **kw)
    assert (e.value.code, e.value.status) == (code, 401), (e.value.code, str(e.value))
    return e.value


async def test_a_signed_call_names_its_app() -> None:
    assert await call(keyed((KEY, None)), sign(KEY)) == auth.Caller(APP, WS, None)
    q = "a=1&b=%20"
    assert await call(
        keyed((KEY, None)), sign(KEY, "GET", "/v1/x", q, b""), method="get", path="/v1/x", query=q, body=b""
    )


async def test_sign_headers_make_a_call_the_server_takes() -> None:
    h = auth.sign_headers(KEY, "PUT", "/v1/push/devices/d1", "x=1", APP, WS, b"{}")
    assert set(h) == {"AppId", "WorkspaceId", "Ts", "Nonce", "Sign"}
    assert abs(int(h["Ts"]) - time.time() * 1000) < 5000 and 8 <= len(h["Nonce"]) <= 64
    lower = {k.lower(): v for k, v in h.items()}
    caller = await call(keyed((KEY, None)), lower, method="PUT", path="/v1/push/devices/d1", query="x=1", body=b"{}")
    assert caller == auth.Caller(APP, WS)
    assert auth.sign_headers(KEY, "GET", "/", "", APP, WS, b"")["Nonce"] != h["Nonce"]


@pytest.mark.parametrize("missing", ["appid", "workspaceid"])
async def test_calls_without_app_headers_are_unauthorized(missing: str) -> None:
    h = sign(KEY)
    del h[missing]
    e = await refused_call(keyed((KEY, None)), h, "Unauthorized")
    assert "AppId" in str(e) and "WorkspaceId" in str(e)
    await refused_call(keyed((KEY, None)), {**sign(KEY), missing: ""}, "Unauthorized")
    await refused_call(keyed((KEY, None)), {}, "Unauthorized")


async def test_unknown_apps_and_apps_without_keys() -> None:
    e = await refused_call(keyed((KEY, None)), sign(KEY, app="OTHER"), "UnknownApp")
    assert "OTHER/prod" in str(e)
    await refused_call(keyed((KEY, None)), sign(KEY, ws="dev"), "UnknownApp")
    config = keyed(problem="credentials Secret or key entry not found")
    e = await refused_call(config, sign(KEY), "KeyUnavailable")
    assert "not found" not in str(e)  # why is the config's to log, not a caller's to read before signing
    expired = keyed((KEY, time.time() - 1))  # its overlap over, no current key
    await refused_call(expired, sign(KEY), "KeyUnavailable")


def _ts(delta_ms: int = 0) -> str:
    return str(int(time.time() * 1000) + delta_ms)


@pytest.mark.parametrize(
    "ts",
    [
        lambda: "",
        lambda: "now",
        lambda: _ts(-301_000),
        lambda: _ts(301_000),
        lambda: _ts().translate(ARABIC),
        lambda: _ts().translate(FULLWIDTH),
        lambda: "123".translate(ARABIC),
        lambda: _ts()[:-1] + "²",
        lambda: " " + _ts(),
        lambda: _ts() + " ",
        lambda: "+" + _ts(),
        lambda: _ts()[:4] + "_" + _ts()[4:],
        lambda: "0" * 3 + _ts(),  # 16 digits
        lambda: str(int(time.time())),  # seconds, not milliseconds
        lambda: "-" + _ts(),
        lambda: _ts() + ".0",
    ],
)
async def test_timestamps_outside_the_window_or_not_ascii_digits_are_refused(ts: Callable[[], str]) -> None:
    e = await refused_call(keyed((KEY, None)), sign(KEY, ts=ts()), "TimestampExpired")  # signed over this Ts
    assert "Ts" in str(e)


async def test_timestamps_within_five_minutes_are_taken() -> None:
    for delta in (-295_000, 295_000, 0):
        assert await call(keyed((KEY, None)), sign(KEY, ts=_ts(delta)))


@pytest.mark.parametrize("nonce", ["", "a" * 7, "a" * 65, "é" * 8, "\x01" * 8, "abc\ndefgh", "設備設備設備設備"])
async def test_bad_nonces_are_refused(nonce: str) -> None:
    e = await refused_call(keyed((KEY, None)), sign(KEY, nonce=nonce), "Unauthorized")
    assert "Nonce" in str(e)


@pytest.mark.parametrize("nonce", ["a" * 8, "~" * 64, "with spaces ok"])
async def test_nonces_of_8_to_64_printable_characters_are_taken(nonce: str) -> None:
    assert await call(keyed((KEY, None)), sign(KEY, nonce=nonce))


async def test_a_replayed_nonce_is_refused() -> None:
    hot, config = MemoryHotStore(), keyed((KEY, None))
    h = sign(KEY, nonce="n" * 16)
    await call(config, h, hot=hot)
    e = await refused_call(config, h, "NonceReplayed", hot=hot)
    assert "Nonce" in str(e)
    # signed again, later, with the same nonce: still a replay
    await refused_call(config, sign(KEY, nonce="n" * 16, ts=_ts(1000)), "NonceReplayed", hot=hot)
    # the nonce belongs to the app: another app may use the same one
    other = AppKeys(APP, "dev", ((OTHER_KEY, None),), None)
    two = PushConfig(apps={(APP, WS): AppKeys(APP, WS, ((KEY, None),), None), (APP, "dev"): other})
    assert await call(two, sign(OTHER_KEY, ws="dev", nonce="n" * 16), hot=hot) == auth.Caller(APP, "dev")


async def test_a_refused_call_does_not_spend_its_nonce() -> None:
    hot, config = MemoryHotStore(), keyed((KEY, None))
    await refused_call(config, sign(OTHER_KEY, nonce="m" * 16), "SignatureInvalid", hot=hot)
    await refused_call(config, sign(KEY, nonce="m" * 16, ts=_ts(-400_000)), "TimestampExpired", hot=hot)
    assert await call(config, sign(KEY, nonce="m" * 16), hot=hot)


@pytest.mark.parametrize(
    "tamper",
    [
        {"body": b'{"a":2}'},
        {"body": b'{"a":1} '},
        {"body": b""},
        {"path": "/v1/push/messages/"},
        {"path": "/v1/push/Messages"},
        {"query": "dryRun=1"},
        {"method": "PUT"},
    ],
)
async def test_a_tampered_call_is_refused(tamper: dict[str, Any]) -> None:
    h = sign(KEY)
    e = await refused_call(keyed((KEY, None)), h, "SignatureInvalid", **tamper)
    assert "signature" in str(e)


async def test_tampered_headers_are_refused() -> None:
    config = keyed((KEY, None), more=(AppKeys(APP, "dev", ((KEY, None),), None),))
    h = sign(KEY)
    await refused_call(config, {**h, "workspaceid": "dev"}, "SignatureInvalid")  # same key, another workspace
    await refused_call(config, {**h, "ts": str(int(h["ts"]) + 1)}, "SignatureInvalid")
    await refused_call(config, {**h, "nonce": h["nonce"] + "x"}, "SignatureInvalid")


@pytest.mark.parametrize("bad", ["", "!!!!", "c2ln", "c2lnbg", " " + "A" * 44, "A" * 43 + "="])
async def test_signs_that_are_not_the_base64_hmac_are_refused(bad: str) -> None:
    e = await refused_call(keyed((KEY, None)), {**sign(KEY), "sign": bad}, "SignatureInvalid")
    assert "Sign" in str(e) or "signature" in str(e)


async def test_a_wrong_key_is_refused() -> None:
    await refused_call(keyed((KEY, None)), sign(OTHER_KEY), "SignatureInvalid")
    await refused_call(keyed((KEY, None)), sign(KEY[:-1]), "SignatureInvalid")


async def test_a_rotated_key_works_within_its_overlap_and_not_after() -> None:
    now = time.time()
    within = keyed((KEY, None), (OTHER_KEY, now + 60))
    assert await call(within, sign(OTHER_KEY))
    assert await call(within, sign(KEY))
    after = keyed((KEY, None), (OTHER_KEY, now - 1))
    await refused_call(after, sign(OTHER_KEY), "SignatureInvalid")
    assert await call(after, sign(KEY))


# -- config compiled from resources --------------------------------------------------------------------------


def _secret(name: str, ns: str = "shop", **data: bytes) -> Resource:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return validate(
        SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "data": encoded}
    )


def _gateway(*apps: dict[str, Any], name: str = "gw", ns: str = "shop") -> Resource:
    obj = {"apiVersion": "mpaas.io/v1alpha1", "kind": "MpaasGateway", "metadata": {"name": name, "namespace": ns}}
    return validate("MpaasGateway", {**obj, "spec": {"apps": list(apps)}})


def _push_channel(name: str, spec: dict[str, Any], ns: str = "shop") -> Resource:
    obj = {"apiVersion": "mpaas.io/v1alpha1", "kind": "PushChannel", "metadata": {"name": name, "namespace": ns}}
    return validate("PushChannel", {**obj, "spec": {"appId": APP, **spec}})


def _resources(*items: Resource, unlisted_secrets: tuple[str, ...] = ()) -> Resources:
    out: Resources = {}
    for r in items:
        out.setdefault(r.kind, {})[(r.namespace, r.name)] = r
    for name in unlisted_secrets:
        out.setdefault(unlisted(SECRET), {})[("shop", name)] = Resource(SECRET, "shop", name, 0, "", None, {})
    return out


def _app(ws: str = WS, secret: str | None = "shop-keys", overlap: int = 300, app: str = APP) -> dict[str, Any]:
    out: dict[str, Any] = {"appId": app, "workspaceId": ws, "keyOverlapSeconds": overlap}
    if secret is not None:
        out["credentialsSecretRef"] = {"name": secret}
    return out


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_apps_with_a_server_key_secret_get_their_key() -> None:
    c = compiler(KeyRing(), Clients())(_resources(_gateway(_app()), _secret("shop-keys", serverApiKey=KEY)))
    app = c.app(APP, WS)
    assert app is not None and app.keys == ((KEY, None),) and app.problem is None
    assert c.app(APP, "dev") is None


@pytest.mark.parametrize(
    ("secrets", "secret_name", "problem"),
    [
        ((), "shop-keys", "not found"),  # the Secret is missing
        ((_secret("shop-keys", hmacKey=KEY),), "shop-keys", "not found"),  # without serverApiKey
        ((_secret("shop-keys", serverApiKey=b"short"),), "shop-keys", "32 bytes"),
        ((), None, "credentialsSecretRef"),  # the app names no Secret
    ],
)
def test_apps_without_a_usable_key_get_a_problem_and_no_key(
    secrets: tuple[Resource, ...], secret_name: str | None, problem: str
) -> None:
    c = compiler(KeyRing(), Clients())(_resources(_gateway(_app(secret=secret_name)), *secrets))
    app = c.app(APP, WS)
    assert app is not None and app.keys == () and app.problem is not None and problem in app.problem


def test_a_secret_not_listed_yet_is_not_readable_yet() -> None:
    c = compiler(KeyRing(), Clients())(_resources(_gateway(_app()), unlisted_secrets=("shop-keys",)))
    app = c.app(APP, WS)
    assert app is not None and app.keys == () and "not readable yet" in (app.problem or "")


async def test_compiled_apps_authenticate_with_a_rotated_key_within_the_overlap_and_not_after() -> None:
    clock = Clock()
    ring = KeyRing(clock)
    compile_push = compiler(ring, Clients())
    gateway = _gateway(_app(overlap=300))
    compile_push(_resources(gateway, _secret("shop-keys", serverApiKey=OTHER_KEY)))
    rotated = compile_push(_resources(gateway, _secret("shop-keys", serverApiKey=KEY)))
    app = rotated.app(APP, WS)
    assert app is not None and [k for k, _ in app.keys] == [KEY, OTHER_KEY]
    assert app.keys[1][1] == pytest.approx(clock.now + 300)
    assert await call(rotated, sign(OTHER_KEY)) and await call(rotated, sign(KEY))

    # the same rotation 301 seconds ago: the old key's overlap is over when the call comes
    clock.now = time.time() - 301
    ring2 = KeyRing(clock)
    compile2 = compiler(ring2, Clients())
    compile2(_resources(gateway, _secret("shop-keys", serverApiKey=OTHER_KEY)))
    late = compile2(_resources(gateway, _secret("shop-keys", serverApiKey=KEY)))
    assert len(late.apps[(APP, WS)].keys) == 2  # still listed, past its time
    await refused_call(late, sign(OTHER_KEY), "SignatureInvalid")
    assert await call(late, sign(KEY))
    # and once the keyring's clock passes it too, it is dropped
    clock.now = time.time()
    again = compile2(_resources(gateway, _secret("shop-keys", serverApiKey=KEY)))
    assert [k for k, _ in again.apps[(APP, WS)].keys] == [KEY]


async def test_without_overlap_or_with_the_secret_deleted_the_old_key_stops_at_once() -> None:
    compile_push = compiler(KeyRing(), Clients())
    gateway = _gateway(_app(overlap=0))
    compile_push(_resources(gateway, _secret("shop-keys", serverApiKey=OTHER_KEY)))
    rotated = compile_push(_resources(gateway, _secret("shop-keys", serverApiKey=KEY)))
    await refused_call(rotated, sign(OTHER_KEY), "SignatureInvalid")
    gone = compile_push(_resources(gateway))
    await refused_call(gone, sign(KEY), "KeyUnavailable")
    assert "revoked" in (gone.app("SHOP", "prod").problem or "")  # type: ignore[union-attr]


async def test_a_new_key_that_does_not_load_keeps_the_last_good_one() -> None:
    compile_push = compiler(KeyRing(), Clients())
    gateway = _gateway(_app())
    compile_push(_resources(gateway, _secret("shop-keys", serverApiKey=KEY)))
    broken = compile_push(_resources(gateway, _secret("shop-keys", serverApiKey=b"short")))
    app = broken.app(APP, WS)
    assert app is not None and app.keys == ((KEY, None),) and "32 bytes" in (app.problem or "")
    assert await call(broken, sign(KEY))


def _huawei(name: str = "hw", secret: str = "hw-creds", ws: str | None = None) -> Resource:
    spec: dict[str, Any] = {"type": "Huawei", "credentialsSecretRef": {"name": secret}}
    if ws is not None:
        spec["workspaceId"] = ws
    return _push_channel(name, spec)


def test_vendor_channels_get_a_client_or_a_problem() -> None:
    c = compiler(KeyRing(), Clients())(
        _resources(
            _huawei("hw"),
            _secret("hw-creds", appId=b"10086", appSecret=b"secret"),
            _huawei("hw-half", "half"),
            _secret("half", appId=b"10086"),
            _huawei("hw-none", "absent"),
            _push_channel("oppo", {"type": "OPPO", "credentialsSecretRef": {"name": "oppo"}}),
            _secret("oppo", appKey=b"k"),
        )
    )
    by = {ch.name: ch for ch in c.channels}
    assert by["hw"].client is not None and by["hw"].problem is None and by["hw"].type is ChannelType.HUAWEI
    assert by["hw-half"].client is None and "appSecret" in (by["hw-half"].problem or "")
    assert "appId" not in (by["hw-half"].problem or "")
    assert by["hw-none"].client is None and "appId, appSecret" in (by["hw-none"].problem or "")
    assert by["oppo"].client is None and "masterSecret" in (by["oppo"].problem or "")


def test_a_vendor_secret_not_listed_yet_keeps_the_last_client() -> None:
    clients = Clients()
    compile_push = compiler(KeyRing(), clients)
    first = compile_push(_resources(_huawei(), _secret("hw-creds", appId=b"1", appSecret=b"s")))
    later = compile_push(_resources(_huawei(), unlisted_secrets=("hw-creds",)))
    assert later.channels[0].client is first.channels[0].client is not None
    assert "not readable yet" in (later.channels[0].problem or "")


def test_link_channels_are_not_vendor_channels() -> None:
    c = compiler(KeyRing(), Clients())(
        _resources(
            _push_channel("link", {"type": "Link", "link": {"tokenSecretRef": {"name": "lk", "key": "tokenKey"}}}),
            _secret("lk", tokenKey=LINK_KEY),
        )
    )
    assert c.channels == ()
    assert c.has_link(APP, WS) and c.has_link(APP, "any") and not c.has_link("OTHER", WS)


def test_a_xiaomi_channel_with_its_package_and_secret_gets_a_client() -> None:
    # (at commit e519969 channel_options passed no packageName and no Xiaomi channel could get a client)
    spec = {"type": "Xiaomi", "credentialsSecretRef": {"name": "mi"}, "xiaomi": {"packageName": "com.example.app"}}
    c = compiler(KeyRing(), Clients())(_resources(_push_channel("mi", spec), _secret("mi", appSecret=b"app-secret")))
    assert c.channels[0].problem is None and c.channels[0].client is not None


def test_a_channel_for_the_workspace_wins_over_one_for_every_workspace() -> None:
    every, prod = _channel(ChannelType.FCM, name="every"), _channel(ChannelType.FCM, workspace=WS, name="prod")
    apns = _channel(ChannelType.APNS)
    other_app = VendorChannel("shop", "o", ChannelType.HUAWEI, "OTHER", None, None, None, None)
    for channels in ((every, prod, apns, other_app), (prod, every, apns, other_app)):
        config = PushConfig(channels=channels)
        assert config.vendors(APP, WS) == {ChannelType.FCM: prod, ChannelType.APNS: apns}
        assert config.vendors(APP, "dev") == {ChannelType.FCM: every, ChannelType.APNS: apns}
        assert config.vendors("OTHER", WS) == {ChannelType.HUAWEI: other_app}
        assert config.vendors("NONE", WS) == {}
    assert PushConfig(channels=(every, prod)).channel("shop", "prod") is prod
    assert PushConfig(channels=(every,)).channel("shop", "prod") is None


def test_compiled_workspace_channels_win() -> None:
    c = compiler(KeyRing(), Clients())(
        _resources(
            _huawei("a-every"),
            _huawei("b-prod", ws=WS),
            _secret("hw-creds", appId=b"1", appSecret=b"s"),
        )
    )
    assert c.vendors(APP, WS)[ChannelType.HUAWEI].name == "b-prod"
    assert c.vendors(APP, "dev")[ChannelType.HUAWEI].name == "a-every"


# -- auth: Basic ---------------------------------------------------------------------------------------------


def _basic(user: str, password: bytes | str, scheme: str = "Basic") -> str:
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return f"{scheme} {base64.b64encode(raw).decode()}"


def _two_workspaces() -> tuple[PushConfig, dict[str, tuple[str, str]]]:
    resources = _resources(
        _gateway(_app(), _app("dev", "dev-keys"), _app("prod", "solo-keys", app="SOLO")),
        _secret("shop-keys", serverApiKey=KEY),
        _secret("dev-keys", serverApiKey=OTHER_KEY),
        _secret("solo-keys", serverApiKey=b"a:b" + KEY),
    )
    return compiler(KeyRing(), Clients())(resources), compile_apps(resources).keys


def test_basic_auth_with_app_and_workspace() -> None:
    config, resolve = _two_workspaces()
    assert auth.basic(config, _basic("SHOP/prod", KEY), resolve) == auth.Caller(APP, WS)
    assert auth.basic(config, _basic("SHOP/dev", OTHER_KEY), resolve) == auth.Caller(APP, "dev")
    assert auth.basic(config, _basic("SHOP/prod", KEY, "basic"), resolve) == auth.Caller(APP, WS)


def test_basic_auth_with_the_app_id_alone_when_it_has_one_workspace() -> None:
    config, resolve = _two_workspaces()
    # a password holding ':' (only the first one splits user from password)
    assert auth.basic(config, _basic("SOLO", b"a:b" + KEY), resolve) == auth.Caller("SOLO", "prod")
    e = refused(lambda: auth.basic(config, _basic("SHOP", KEY), resolve), "UnknownApp", 401)  # two workspaces
    assert "appId/workspaceId" in str(e)


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("", "Unauthorized"),
        ("Bearer abc", "Unauthorized"),
        ("Basic !!!", "Unauthorized"),
        ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Unauthorized"),
        (_basic("SHOP/prod", OTHER_KEY), "SignatureInvalid"),
        (_basic("SHOP/prod", KEY + b"x"), "SignatureInvalid"),
        (_basic("SHOP/prod", ""), "SignatureInvalid"),
        (_basic("SHOP/dev", KEY), "SignatureInvalid"),
        (_basic("OTHER/prod", KEY), "UnknownApp"),
        (_basic("", KEY), "UnknownApp"),
        ("Basic " + base64.b64encode(b"SHOP/prod").decode(), "SignatureInvalid"),  # no password
    ],
)
def test_bad_basic_credentials_are_refused(authorization: str, code: str) -> None:
    config, resolve = _two_workspaces()
    refused(lambda: auth.basic(config, authorization, resolve), code, 401)


def test_basic_auth_refuses_an_app_without_a_key() -> None:
    resources = _resources(_gateway(_app(secret=None)))
    config = compiler(KeyRing(), Clients())(resources)
    refused(lambda: auth.basic(config, _basic("SHOP", KEY), compile_apps(resources).keys), "KeyUnavailable", 401)


# -- auth: devices with their link tokens --------------------------------------------------------------------


def _linked(*keys: TokenKey, workspace: str | None = None) -> PushConfig:
    link = AppLink(APP, workspace, ("shop", "link"), Bounds(), tuple(keys))
    return PushConfig(link=LinkConfig({(APP, workspace): link}))


def _bearer(token: bytes) -> str:
    return "Bearer " + token.decode()


def test_a_device_speaks_for_itself_with_its_link_token() -> None:
    key = TokenKey(LINK_KEY)
    config = _linked(key)
    assert auth.device(config, _bearer(key.issue(APP, WS, "d1")), APP, WS, "d1") == auth.Caller(APP, WS, "d1")
    assert auth.device(config, _bearer(key.issue(APP, "dev", "d1")), APP, "dev", "d1") == auth.Caller(APP, "dev", "d1")
    assert auth.device(config, "bearer " + key.issue(APP, WS, "d1").decode(), APP, WS, "d1")


def test_compiled_link_keys_authenticate_devices_and_a_rotated_one_still_does() -> None:
    link = _push_channel("link", {"type": "Link", "link": {"tokenSecretRef": {"name": "lk", "key": "tokenKey"}}})
    compile_push = compiler(KeyRing(), Clients())
    compile_push(_resources(link, _secret("lk", tokenKey=LINK_KEY)))
    rotated = compile_push(_resources(link, _secret("lk", tokenKey=b"n" * 32)))
    old, new = TokenKey(LINK_KEY).issue(APP, WS, "d1"), TokenKey(b"n" * 32).issue(APP, WS, "d1")
    assert auth.device(rotated, _bearer(old), APP, WS, "d1") == auth.device(rotated, _bearer(new), APP, WS, "d1")
    revoked = compile_push(_resources(link, _secret("lk")))
    refused(lambda: auth.device(revoked, _bearer(new), APP, WS, "d1"), "KeyUnavailable", 401)


def _flip_last(token: bytes) -> bytes:
    return token[:-1] + (b"B" if token.endswith(b"A") else b"A")  # always a change


@pytest.mark.parametrize(
    ("token", "device_id"),
    [
        (lambda k: k.issue(APP, WS, "d2"), "d1"),  # another device's token
        (lambda k: k.issue(APP, "dev", "d1"), "d1"),  # another workspace
        (lambda k: k.issue("OTHER", WS, "d1"), "d1"),  # another app
        (lambda k: k.issue(APP, WS, "d1", ttl_seconds=-10), "d1"),  # expired
        (lambda k: TokenKey(b"z" * 32).issue(APP, WS, "d1"), "d1"),  # another key
        (lambda k: _flip_last(k.issue(APP, WS, "d1")), "d1"),  # a forged signature
        (lambda k: b"v1.99999999999.abc", "d1"),
        (lambda k: b"v2" + k.issue(APP, WS, "d1")[2:], "d1"),
        (lambda k: k.issue(APP, WS, "d1").replace(b"v1.", b"v1.\xd9\xa1".decode("utf-8").encode()), "d1"),
    ],
)
def test_device_tokens_for_another_device_or_broken_are_refused(
    token: Callable[[TokenKey], bytes], device_id: str
) -> None:
    key = TokenKey(LINK_KEY)
    e = refused(lambda: auth.device(_linked(key), _bearer(token(key)), APP, WS, device_id), "SignatureInvalid", 401)
    assert "link token" in str(e)


@pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer ", "Basic abc", "Token v1.1.x"])
def test_devices_must_use_bearer(authorization: str) -> None:
    refused(lambda: auth.device(_linked(TokenKey(LINK_KEY)), authorization, APP, WS, "d1"), "Unauthorized", 401)


@pytest.mark.parametrize("device_id", ["", "a b", "{d}", "x" * 129, "d\n"])
def test_device_ids_must_be_valid(device_id: str) -> None:
    key = TokenKey(LINK_KEY)
    e = refused(lambda: auth.device(_linked(key), _bearer(key.issue(APP, WS, device_id)), APP, WS, device_id))
    assert "deviceId" in str(e)


def test_devices_of_an_app_without_a_link_key_cannot_authenticate() -> None:
    token = _bearer(TokenKey(LINK_KEY).issue(APP, WS, "d1"))
    refused(lambda: auth.device(PushConfig(), token, APP, WS, "d1"), "KeyUnavailable", 401)
    refused(lambda: auth.device(_linked(), token, APP, WS, "d1"), "KeyUnavailable", 401)
    refused(
        lambda: auth.device(_linked(TokenKey(LINK_KEY), workspace="dev"), token, APP, WS, "d1"), "KeyUnavailable", 401
    )


# -- fan-out filters, sender helpers -------------------------------------------------------------------------


def _filtered(**kw: Any) -> PushMessage:
    return message(Target("all", **kw))


@pytest.mark.parametrize(
    ("device", "target", "expected"),
    [
        (Device("d", "ios"), {}, True),
        (Device("d", "ios"), {"platforms": ("ios", "web")}, True),
        (Device("d", "android"), {"platforms": ("ios", "web")}, False),
        (Device("d", "ios", tags=("a", "b")), {"tags": ("b", "c")}, True),
        (Device("d", "ios", tags=("a",)), {"tags": ("b", "c")}, False),
        (Device("d", "ios"), {"tags": ("b",)}, False),
        (Device("d", "ios", app_version="2.10.1"), {"min_app_version": "2.9"}, True),
        (Device("d", "ios", app_version="2.10.1"), {"min_app_version": "2.10.1"}, True),
        (Device("d", "ios", app_version="2.10.1"), {"min_app_version": "2.10.2"}, False),
        (Device("d", "ios", app_version="2.10.1"), {"max_app_version": "2.10.1"}, True),
        (Device("d", "ios", app_version="2.10.1"), {"max_app_version": "2.10"}, False),
        (Device("d", "ios", app_version="2.9.9"), {"min_app_version": "2.10"}, False),
        (Device("d", "ios", app_version="3"), {"min_app_version": "2.10", "max_app_version": "3.0.1"}, True),
        (Device("d", "ios", app_version=""), {"min_app_version": "1"}, False),
        (Device("d", "ios", app_version="beta"), {"max_app_version": "9"}, False),
        (Device("d", "ios", app_version="1.0", tags=("t",)), {"platforms": ("ios",), "tags": ("t",)}, True),
        (Device("d", "web", app_version="1.0", tags=("t",)), {"platforms": ("ios",), "tags": ("t",)}, False),
    ],
)
def test_fanout_filters(device: Device, target: dict[str, Any], expected: bool) -> None:
    assert matches(device, _filtered(**target)) is expected


def test_versions_with_trailing_zeros_are_the_same_version() -> None:
    assert matches(Device("d", "ios", app_version="2.10"), _filtered(min_app_version="2.10.0"))
    assert matches(Device("d", "ios", app_version="2.10.0"), _filtered(max_app_version="2.10"))


def test_app_versions_with_underscores_are_not_numbers() -> None:
    assert not matches(Device("d", "ios", app_version="1_0"), _filtered(min_app_version="9"))


def test_notifications_for_the_vendors() -> None:
    now_ms = int(time.time() * 1000)
    m = message(content=Content("t", "b", {"k": "v"}, 2, "s", "c"), ttl_seconds=600, urgent=False, created_ms=now_ms)
    n = notification(m)
    assert (n.message_id, n.title, n.body, dict(n.data), n.badge, n.sound, n.category, n.urgent) == (
        MID,
        "t",
        "b",
        {"k": "v"},
        2,
        "s",
        "c",
        False,
    )
    assert n.collapse_key == MID  # a send made twice shows once
    assert 595 <= n.ttl_seconds <= 600
    assert notification(message(collapse_key="ck", created_ms=now_ms)).collapse_key == "ck"
    assert notification(message(ttl_seconds=0, created_ms=now_ms)).ttl_seconds == 0
    assert notification(message(ttl_seconds=60, created_ms=now_ms - 120_000)).ttl_seconds == 0
    later = notification(message(ttl_seconds=60, created_ms=now_ms, scheduled_ms=now_ms + 3_600_000))
    assert 3655 <= later.ttl_seconds <= 3660  # counted from the schedule


def test_claim_ids() -> None:
    assert claim_id("d1", "token") == "d1"
    by_token = claim_id("", "token")
    assert by_token == "t" + hashlib.sha256(b"token").hexdigest()[:32] and len(by_token) == 33
    assert claim_id("", "token") == by_token != claim_id("", "token2")


def test_vendor_jobs_are_json_the_senders_parse() -> None:
    m = message(Target("device", ("d1", "d2")), collapse_key="c")
    raw = vendor_job(m, ("shop", "hw"), [("d1", "t1"), ("d2", "t2")])
    assert json.loads(raw)["channel"] == ["shop", "hw"]
    assert Job.parse(raw) == Job(replace(m, target=Target("device")), ("shop", "hw"), [("d1", "t1"), ("d2", "t2")])
    for bad in (b"", b"[]", b'{"message": {}}', json.dumps({"message": json.loads(m.to_json())}).encode()):
        with pytest.raises((ValueError, KeyError, TypeError, IndexError)):
            Job.parse(bad)


def test_the_fallback_order_follows_the_channels_priorities() -> None:
    from dataclasses import replace as with_

    from mpaas.push.config import default_priority

    assert [default_priority(k) for k in (ChannelType.APNS, ChannelType.FCM, ChannelType.VIVO)] == [10, 20, 70]
    samsung = Device("d", "android", "samsung", {"FCM": "f", "Xiaomi": "x", "Vivo": "v"})
    by_default = {k: with_(c, priority=default_priority(k)) for k, c in ALL_VENDORS.items()}
    assert route(samsung, online=False, vendors=by_default, has_link=True)[0] == "FCM"
    # The app puts vivo first, then Xiaomi: a device with no token for its brand follows that order.
    chosen = {**by_default, ChannelType.VIVO: with_(by_default[ChannelType.VIVO], priority=1),
              ChannelType.XIAOMI: with_(by_default[ChannelType.XIAOMI], priority=2)}  # fmt: skip
    assert route(samsung, online=False, vendors=chosen, has_link=True)[0] == "Vivo"
    assert route(Device("d", "android", "xiaomi", samsung.tokens), online=False, vendors=chosen, has_link=True)[0] == (
        "Xiaomi"  # its brand's channel still comes first
    )
