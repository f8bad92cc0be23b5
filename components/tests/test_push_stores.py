"""Push's stores against real Redis and their in-process twins: the device registry (users, tags, aliases,
tokens) and the push state (idempotency, outcomes, stats, schedule, claims, templates, what waits for a user)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from conftest import need_env
from mpaas.push.messages import Content, PushMessage, Target, new_batch_ids, new_message_id
from mpaas.push.registry import Device, MemoryRegistry, RedisRegistry, Registry, UnknownDevice
from mpaas.push.state import MAX_TEMPLATES, Failed, MemoryPushState, PushState, RedisPushState

contract = pytest.mark.contract


@pytest_asyncio.fixture(params=["redis", "memory"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    r: Registry
    if request.param == "redis":
        r = RedisRegistry(need_env("MPAAS_TEST_REDIS_URL"), prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:
        r = MemoryRegistry()
    yield r
    await r.close()


@pytest_asyncio.fixture(params=["redis", "memory"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[PushState]:
    s: PushState
    if request.param == "redis":
        s = RedisPushState(need_env("MPAAS_TEST_REDIS_URL"), prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:
        s = MemoryPushState()
    yield s
    await s.close()


APP = "SHOP/prod"


def device(i: str, **kw: object) -> Device:
    base: dict[str, object] = {"platform": "android", "brand": "huawei", "tokens": {"Huawei": f"tok-{i}"}}
    return Device(i, **(base | kw))  # type: ignore[arg-type]


@contract
async def test_register_replaces_the_device_and_keeps_its_user_and_alias(registry: Registry) -> None:
    d = await registry.register(APP, device("d1", tags=("vip", "beta"), app_version="2.1.0"))
    assert d.tags == ("vip", "beta") and d.updated_ms > 0 and d.tokens == {"Huawei": "tok-d1"}
    await registry.bind(APP, "u1", "d1")
    await registry.set_alias(APP, "d1", "alice-phone")
    d = await registry.register(APP, device("d1", tags=("beta", "new"), tokens={"FCM": "f1"}))
    assert (d.tags, d.tokens, d.user_id, d.alias) == (("beta", "new"), {"FCM": "f1"}, "u1", "alice-phone")
    assert sorted(await _all(registry, tag="vip")) == [] and await _all(registry, tag="new") == ["d1"]
    assert await registry.count(APP) == 1 and await registry.get(APP, "nope") is None
    assert await registry.get("OTHER/prod", "d1") is None  # apps are apart


@contract
async def test_a_user_has_several_devices_and_a_rebound_device_moves(registry: Registry) -> None:
    for i in ("a", "b", "c"):
        await registry.register(APP, device(i))
    assert await registry.bind(APP, "u1", "a") is None
    assert await registry.bind(APP, "u1", "b") is None
    assert await registry.bind(APP, "u1", "b") is None  # again: no move
    assert await registry.user_devices(APP, "u1") == ["a", "b"]
    assert await registry.bind(APP, "u2", "b") == "u1"  # moved
    assert await registry.user_devices(APP, "u1") == ["a"] and await registry.user_devices(APP, "u2") == ["b"]
    assert not await registry.unbind(APP, "u1", "b")  # not u1's any more
    assert await registry.unbind(APP, "u2", "b") and await registry.user_devices(APP, "u2") == []
    with pytest.raises(UnknownDevice):
        await registry.bind(APP, "u1", "ghost")


@contract
async def test_an_alias_names_one_device(registry: Registry) -> None:
    await registry.register(APP, device("a"))
    await registry.register(APP, device("b"))
    assert await registry.set_alias(APP, "a", "x") is None
    assert await registry.set_alias(APP, "b", "x") == "a"  # taken from a
    assert await registry.alias_device(APP, "x") == "b"
    a = await registry.get(APP, "a")
    assert a is not None and a.alias is None
    await registry.set_alias(APP, "b", "y")  # renamed: x is free
    assert await registry.alias_device(APP, "x") is None and await registry.alias_device(APP, "y") == "b"
    await registry.set_alias(APP, "b", None)
    assert await registry.alias_device(APP, "y") is None
    await registry.set_alias(APP, "a", "z")
    assert await registry.alias_devices(APP, ["z", "y", "z"]) == ["a", None, "a"]  # many at once
    assert await registry.alias_devices(APP, []) == []
    await registry.bind(APP, "u1", "a")
    assert await registry.bound_users(APP, ["u1", "nobody"]) == [True, False]


@contract
async def test_tags_change_and_index_and_unregister_forgets_everything(registry: Registry) -> None:
    await registry.register(APP, device("a", tags=("t1",)))
    assert await registry.change_tags(APP, "a", ["t2", "t3", "t2"], ["t1"]) == ["t2", "t3"]
    assert await _all(registry, tag="t1") == [] and await _all(registry, tag="t3") == ["a"]
    with pytest.raises(ValueError, match="at most"):
        await registry.change_tags(APP, "a", [f"x{i}" for i in range(120)], [])
    assert await registry.change_tags(APP, "a", [], []) == ["t2", "t3"]  # the refused change left nothing
    with pytest.raises(UnknownDevice):
        await registry.change_tags(APP, "ghost", ["t"], [])
    await registry.bind(APP, "u", "a")
    await registry.set_alias(APP, "a", "al")
    assert await registry.unregister(APP, "a") and not await registry.unregister(APP, "a")
    assert await _all(registry, tag="t2") == [] and await registry.user_devices(APP, "u") == []
    assert await registry.alias_device(APP, "al") is None and await registry.count(APP) == 0


@contract
async def test_a_dead_token_is_removed_only_while_it_is_the_current_one(registry: Registry) -> None:
    await registry.register(APP, device("a", tokens={"Huawei": "old", "FCM": "f"}))
    assert not await registry.remove_token(APP, "a", "Huawei", "other")
    assert await registry.remove_token(APP, "a", "Huawei", "old")
    d = await registry.get(APP, "a")
    assert d is not None and d.tokens == {"FCM": "f"}
    assert await registry.remove_token(APP, "a", "FCM", "f")
    d = await registry.get(APP, "a")
    assert d is not None and d.tokens == {}


@contract
async def test_scanning_pages_through_every_device_once(registry: Registry) -> None:
    ids = [f"d{i:04d}" for i in range(1234)]
    for i in ids:
        await registry.register(APP, device(i, tags=("even",) if int(i[1:]) % 2 == 0 else ()))
    assert sorted(set(await _all(registry))) == ids
    assert sorted(set(await _all(registry, tag="even"))) == ids[::2]


async def _all(registry: Registry, tag: str | None = None) -> list[str]:
    cursor, out = "", []
    while True:
        cursor, page = await registry.scan(APP, cursor, 100, tag=tag)
        out += page
        if not cursor:
            return out


def message(**kw: object) -> PushMessage:
    base: dict[str, object] = {
        "message_id": new_message_id(),
        "app_id": "SHOP",
        "workspace_id": "prod",
        "target": Target("device", ("d1",)),
        "content": Content(title="hi", data={"k": "v"}),
        "created_ms": int(time.time() * 1000),
    }
    return PushMessage(**(base | kw))  # type: ignore[arg-type]


@contract
async def test_idempotency_keys_bind_one_message(state: PushState) -> None:
    assert await state.claim_idempotency(APP, "k1", "m1", 60) is None
    assert await state.claim_idempotency(APP, "k1", "m2", 60) == "m1"
    assert await state.claim_idempotency("OTHER/prod", "k1", "m3", 60) is None
    await state.release_idempotency(APP, "k1", "m2")  # not its key: kept
    assert await state.claim_idempotency(APP, "k1", "m4", 60) == "m1"
    await state.release_idempotency(APP, "k1", "m1")
    assert await state.claim_idempotency(APP, "k1", "m5", 60) is None


@contract
async def test_status_counts_failed_and_stats(state: PushState) -> None:
    m = message()
    await state.save(m, "Accepted")
    assert await state.set_state(m.message_id, "Sending", only_from=("Accepted",))
    assert not await state.set_state(m.message_id, "Canceled", only_from=("Scheduled",))
    await state.count(m, {"APNs.Sent": 2, "Link.Sent": 1, "APNs.InvalidToken": 0}, targets=3)
    await state.count(m, {"APNs.Sent": 1})
    await state.add_failed(m.message_id, [Failed("d1", "APNs", "t", "InvalidToken: BadDeviceToken")])
    st = await state.status(m.message_id)
    assert st is not None and st.state == "Sending" and st.targets == 3
    assert st.counts == {"APNs.Sent": 3, "Link.Sent": 1} and st.message == m
    assert [f.reason for f in await state.failed(m.message_id)] == ["InvalidToken: BadDeviceToken"]
    minute = int(time.time() // 60)
    rows = await state.stats(APP, minute - 1, minute)
    assert sum(r.get("APNs.Sent", 0) for r in rows.values()) == 3
    assert (await state.totals(APP))["Link.Sent"] == 1
    assert await state.status("f" * 28) is None


@contract
async def test_a_batch_is_one_record_with_a_state_per_message(state: PushState) -> None:
    ids = new_batch_ids(3)
    batch = [message(message_id=i, content=Content(title=f"n{n}")) for n, i in enumerate(ids)]
    await state.save_many([(batch[0], "Accepted"), (batch[1], "Scheduled")])
    assert await state.set_state(ids[0], "Sending", only_from=("Accepted",))
    assert not await state.set_state(ids[1], "Sending", only_from=("Accepted",))
    assert not await state.set_state(ids[2], "Sending")  # not saved: no state to move
    assert await state.status(ids[2]) is None
    await state.count(batch[0], {"Link.Sent": 1}, targets=1)
    first, second = await state.status(ids[0]), await state.status(ids[1])
    assert first is not None and (first.message, first.state, first.counts) == (batch[0], "Sending", {"Link.Sent": 1})
    assert second is not None and (second.message, second.state, second.counts) == (batch[1], "Scheduled", {})
    await state.save(batch[2], "Sending")  # one saved later joins its batch's record
    third = await state.status(ids[2])
    assert third is not None and third.message == batch[2] and third.state == "Sending"
    assert (await state.status(ids[0])).state == "Sending"  # type: ignore[union-attr]


@contract
async def test_a_large_batch_is_stored_whole_by_its_index(state: PushState) -> None:
    ids = new_batch_ids(600)  # more fields than one HSET of the script takes
    texts = [Content(body=f"line\n{n}", data={"k": "\u00e9\n"}) for n in range(600)]  # newlines, escaped in JSON
    batch = [message(message_id=i, content=c) for i, c in zip(ids, texts, strict=True)]
    kept = [m for n, m in enumerate(batch) if n % 5]  # some not saved (repeats of an idempotency key)
    await state.save_many([(m, "Scheduled" if n % 2 else "Accepted") for n, m in enumerate(kept)])
    for n, m in enumerate(kept):
        st = await state.status(m.message_id)
        assert st is not None and st.message == m and st.state == ("Scheduled" if n % 2 else "Accepted")
    assert [await state.status(m.message_id) for m in batch[::5]] == [None] * 120


@contract
async def test_the_device_a_token_was_sent_to_is_found_by_the_token(state: PushState) -> None:
    m = message()
    await state.remember_tokens(m.message_id, [("d1", "t1"), ("d2", "t2")], 60)
    await state.remember_tokens(m.message_id, [("d3", "t3"), ("", "by-token")], 60)  # a later group, a gorush send
    assert await state.token_devices(m.message_id, ["t2", "t1", "t3", "by-token", "never"]) == [
        "d2", "d1", "d3", "", None
    ]  # fmt: skip
    assert await state.token_devices(new_message_id(), ["t1"]) == [None]  # per message
    assert await state.token_devices(m.message_id, []) == []


@contract
async def test_a_page_is_counted_the_first_time_only(state: PushState) -> None:
    m1, m2 = new_message_id(), new_message_id()
    assert await state.first_page(m1, "") and await state.first_page(m1, "a:123")
    assert not await state.first_page(m1, "a:123") and not await state.first_page(m1, "")
    assert await state.first_page(m2, "a:123")  # per message


@contract
async def test_checkpoints_and_claims(state: PushState) -> None:
    assert await state.checkpoint("m1") == ""
    await state.checkpoint("m1", "a:123")
    assert await state.checkpoint("m1") == "a:123"
    assert await state.claim_devices("m1", ["a", "b"]) == [None, None]
    assert await state.claim_devices("m1", ["a", "c"]) == ["p", None]  # a is in flight
    await state.finish_devices("m1", ["a"], 60)
    assert await state.claim_devices("m1", ["a", "b"]) == ["d", "p"]
    assert await state.claim_devices("m2", ["a"]) == [None]
    await state.renew_devices("m1", ["a", "b", "never-claimed"])  # a stays sent, b stays in flight
    assert await state.claim_devices("m1", ["a", "b", "never-claimed"]) == ["d", "p", None]
    # What a recall replaces at the vendors: the sends the vendor took ("s"), or in flight; not a failed one.
    assert await state.claim_devices("m1", ["e"]) == [None]
    await state.finish_devices("m1", ["e"], 60, sent={"e"})
    assert await state.claim_devices("m1", ["e"]) == ["s"]  # done: not sent again
    assert await state.sent_devices("m1", ["a", "b", "c", "e", "never-claimed", "z"]) == [
        False, True, True, True, True, False
    ]  # fmt: skip
    assert await state.sent_devices("m2", ["a", "b"]) == [True, False]
    assert await state.sent_devices("m3", []) == []


@contract
async def test_the_schedule_hands_out_due_messages_leased(state: PushState) -> None:
    now = int(time.time() * 1000)
    soon, later = message(scheduled_ms=now - 10), message(scheduled_ms=now + 60_000)
    await state.schedule(soon)
    await state.schedule(later)
    assert [m.message_id for m in await state.take_due(now, 10)] == [soon.message_id]
    assert await state.take_due(now, 10) == []  # leased
    again = {m.message_id for m in await state.take_due(now + 61_000, 10)}  # soon's lease ended; later is due
    assert again == {soon.message_id, later.message_id}
    assert await state.unschedule(soon.message_id) and not await state.unschedule(soon.message_id)


@contract
async def test_templates_and_user_waits(state: PushState) -> None:
    await state.put_template(APP, "welcome", {"title": "Hi {{name}}"})
    assert await state.template(APP, "welcome") == {"title": "Hi {{name}}"}
    assert await state.templates(APP) == {"welcome": {"title": "Hi {{name}}"}}
    assert await state.templates_named(APP, ["nope", "welcome"]) == [None, {"title": "Hi {{name}}"}]
    assert await state.templates_named(APP, []) == []
    assert await state.delete_template(APP, "welcome") and await state.template(APP, "welcome") is None
    now = int(time.time() * 1000)
    await state.wait_for_user(APP, "u1", "m-old", now + 200)
    await state.wait_for_user(APP, "u1", "m-new", now + 60_000)
    assert await state.waiting_for_user(APP, "u1", now) == ["m-old", "m-new"]
    await asyncio.sleep(0.3)
    assert await state.waiting_for_user(APP, "u1", int(time.time() * 1000)) == ["m-new"]


@contract
async def test_an_app_holds_at_most_max_templates(state: PushState) -> None:
    app = f"CAP{uuid.uuid4().hex[:6]}/prod"
    for i in range(MAX_TEMPLATES):
        assert await state.put_template(app, f"t{i}", {"title": "x"})
    assert not await state.put_template(app, "one-more", {"title": "x"})
    assert await state.put_template(app, "t0", {"title": "replaced"})  # replacing one still works
    assert await state.template(app, "t0") == {"title": "replaced"} and await state.template(app, "one-more") is None
    assert await state.delete_template(app, "t1") and await state.put_template(app, "one-more", {"title": "x"})
    assert await state.put_template("OTHER/prod", "t0", {"title": "x"})  # per app


@contract
async def test_a_senders_group_is_recorded_whole(state: PushState) -> None:
    m = message()
    await state.save(m, "Sending")
    assert await state.claim_devices(m.message_id, ["a", "b"]) == [None, None]
    failed = [Failed("b", "APNs", "tb", "InvalidToken: Unregistered")]
    counts = {"APNs.Sent": 1, "APNs.InvalidToken": 1}
    await state.finish_sends(m, ["a", "b"], 60, counts, failed, ("shop", "ios"), sent={"a"})
    assert await state.claim_devices(m.message_id, ["a", "b"]) == ["s", "d"]
    st = await state.status(m.message_id)
    assert st is not None and st.counts == {"APNs.Sent": 1, "APNs.InvalidToken": 1}
    assert await state.failed(m.message_id) == failed
