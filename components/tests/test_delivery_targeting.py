"""Who gets which release: DeliveryTasks compiled into release lists and checked against a client's attributes."""

import asyncio
import time
from typing import Any

import pytest

from mpaas.api import DELIVERY_TASK
from mpaas.config import Resource
from mpaas.delivery.targeting import Catalog, Client, Seats, choose, compile_catalog
from mpaas.stores.sets import MemoryMemberSets

pytestmark = pytest.mark.unit

NOW = time.time()
SHA = "a" * 64


def task(name: str, version: str = "2.0.0", created: str = "2026-11-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": "AppUpgrade",
            "package": {"uri": f"s3://pkgs/{name}.apk", "version": version, "sha256": SHA, "sizeBytes": 1000},
            **spec,
        },
        "status": {"conditions": [{"type": "PackageVerified", "status": "True"}]},
    }
    return body


def catalog(*bodies: dict[str, Any]) -> Catalog:
    resources = {}
    for b in bodies:
        key = (b["metadata"]["namespace"], b["metadata"]["name"])
        spec = DELIVERY_TASK.parse_spec(b)
        resources[key] = Resource("DeliveryTask", key[0], key[1], 1, "1", spec, b)
    return compile_catalog({"DeliveryTask": resources})


def client(device: str, **attrs: str) -> Client:
    fields: dict[str, str] = {"app_version": "1.0.0"} | attrs
    return Client("SHOP", "prod", "Android", device, **fields)


def offered(cat: Catalog, c: Client) -> str | None:
    found = cat.candidates(c, "AppUpgrade", NOW)
    return found[0].name if found else None


def inside(cat: Catalog, n: int = 20_000) -> set[str]:
    return {f"d{i}" for i in range(n) if offered(cat, client(f"d{i}"))}


def test_percent_is_sticky_as_stages_grow_and_independent_between_releases() -> None:
    at5 = inside(catalog(task("up", targeting={"percent": 5})))
    at20 = inside(catalog(task("up", targeting={"percent": 20})))
    assert 800 <= len(at5) <= 1200 and 3600 <= len(at20) <= 4400  # about 5 % and 20 % of 20 000
    assert at5 <= at20  # a device inside at 5 % stays inside at 20 %
    other = inside(catalog(task("other", targeting={"percent": 20})))
    assert len(other & at20) < len(at20) / 2  # another release samples other devices (expected overlap: 20 %)


def test_the_operators_reported_stage_percent_is_what_is_served() -> None:
    body = task("up", stages=[{"percent": 10, "durationSeconds": 3600}, {"percent": 100}])
    assert 1600 <= len(inside(catalog(body))) <= 2400
    body["status"] |= {"currentStage": 1, "currentPercent": 100}
    assert len(inside(catalog(body))) == 20_000


def test_whitelist_skips_percent_and_filters_and_can_be_all_there_is() -> None:
    listed = {"percent": 0, "filters": {"cities": ["Hangzhou"]}, "whitelist": {"deviceIds": ["d1"], "userIds": ["u9"]}}
    cat = catalog(task("up", targeting=listed))
    assert offered(cat, client("d1")) == "up"
    assert offered(cat, client("d2", user_id="u9")) == "up"
    assert offered(cat, client("d3", city="Hangzhou")) is None  # percent 0 for the rest
    only = catalog(task("up", targeting={"whitelist": {"deviceIds": ["d1"], "only": True}}))
    assert offered(only, client("d1")) == "up"
    assert inside(only, 2000) == {"d1"}


def test_filters_and_the_rule_must_all_match() -> None:
    t = {
        "filters": {
            "cities": ["Hangzhou", "Shanghai"],
            "networks": ["Wifi"],
            "appVersion": {"min": "1.0", "max": "1.9"},
            "osVersion": {"min": "10"},
        },
        "rule": "BRAND IN (Acme, Zeta) && !(MODEL IN (X1))",
    }
    cat = catalog(task("up", targeting=t))
    good = {"city": "hangzhou", "network": "Wifi", "os_version": "12.1", "brand": "Acme", "model": "X2"}
    assert offered(cat, client("d1", **good)) == "up"  # cities match without regard to case
    for change in (
        {"city": "Beijing"},
        {"network": "4G"},
        {"app_version": "2.0"},
        {"os_version": "9.3"},
        {"os_version": ""},  # absent: outside a bounded range
        {"os_version": "\uff11\uff12"},  # other scripts' digits are no version
        {"brand": "Other"},
        {"model": "X1"},
    ):
        assert offered(cat, client("d1", **(good | change))) is None, change


def test_the_newest_release_that_applies_wins_and_only_when_newer_than_the_installed_one() -> None:
    old = task("v2-0", "2.0.0", "2026-11-01T00:00:00Z")
    new = task("v2-1", "2.1.0", "2026-10-01T00:00:00Z", targeting={"filters": {"brands": ["Acme"]}})
    cat = catalog(old, new)
    assert offered(cat, client("d1", brand="Acme")) == "v2-1"  # newest version, whatever was created last
    assert offered(cat, client("d1", brand="Zeta")) == "v2-0"  # the newest does not apply: the next one does
    assert offered(cat, client("d1", brand="Acme", app_version="2.1.0")) is None  # has it already
    assert offered(cat, client("d1", brand="Acme", app_version="2.0.5")) == "v2-1"
    same = catalog(task("a", "3.0", "2026-11-01T00:00:00Z"), task("b", "3.0", "2026-11-02T00:00:00Z"))
    assert offered(same, client("d1")) == "b"  # a tie: the latest created
    assert offered(cat, Client("SHOP", "prod", "IOS", "d1")) is None  # another platform's shelf
    assert offered(cat, Client("SHOP", "test", "Android", "d1")) is None  # another workspace


def test_only_a_verified_package_is_offered() -> None:
    body = task("up")
    body["status"] = {"conditions": [{"type": "PackageVerified", "status": "False", "reason": "Sha256Mismatch"}]}
    assert offered(catalog(body), client("d1")) is None
    del body["status"]
    assert offered(catalog(body), client("d1")) is None
    c = catalog(body)
    assert c.candidates(client("d1"), "AppUpgrade", NOW, verified=lambda r: True)  # checked by the caller instead


def test_rollback_and_a_closed_window_offer_nothing() -> None:
    assert (
        offered(catalog(task("up", rollback=True, targeting={"whitelist": {"deviceIds": ["d1"]}})), client("d1"))
        is None
    )
    past = {"window": {"start": "2020-01-01T00:00:00Z", "end": "2020-02-01T00:00:00Z"}}
    assert offered(catalog(task("up", targeting=past)), client("d1")) is None
    future = {"window": {"start": "2099-01-01T00:00:00Z", "end": "2099-02-01T00:00:00Z"}}
    assert offered(catalog(task("up", targeting=future)), client("d1")) is None
    open_ = {"window": {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}}
    assert offered(catalog(task("up", targeting=open_)), client("d1")) == "up"


async def test_a_capped_window_admits_exactly_its_users_and_whitelists_take_no_seat() -> None:
    window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z", "maxUsers": 3}
    cat = catalog(task("up", targeting={"window": window, "whitelist": {"deviceIds": ["vip"]}}))
    seats = Seats(MemoryMemberSets())
    got = await asyncio.gather(*(choose(cat, seats, client(f"d{i}"), "AppUpgrade", NOW) for i in range(10)))
    admitted = [i for i, r in enumerate(got) if r is not None]
    assert len(admitted) == 3
    assert await choose(cat, seats, client(f"d{admitted[0]}"), "AppUpgrade", NOW) is not None  # keeps its seat
    assert await choose(cat, seats, client("vip"), "AppUpgrade", NOW) is not None
    assert await seats.taken(cat.releases(client("x"), "AppUpgrade")[0]) == 3


def test_a_task_whose_rule_does_not_compile_is_left_out_and_the_rest_served() -> None:
    bad = task("bad", "9.0")
    bad["spec"]["targeting"] = {"rule": "CITY IN (Hangzhou"}
    good = task("good", "2.0")
    resources = {}
    for b in (bad, good):
        key = (b["metadata"]["namespace"], b["metadata"]["name"])
        spec = DELIVERY_TASK.spec.model_validate(b["spec"])  # as if it slipped past validation
        resources[key] = Resource("DeliveryTask", key[0], key[1], 1, "1", spec, b)
    cat = compile_catalog({"DeliveryTask": resources})
    assert offered(cat, client("d1")) == "good"
    assert ("shop", "bad") in cat.errors and "position" in cat.errors[("shop", "bad")]


class DownSets(MemoryMemberSets):
    """A seat store that cannot be reached."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def add_capped(self, name: str, member: str | bytes, cap: int) -> bool:
        self.calls += 1
        raise ConnectionError("Redis is down")


async def test_with_the_seat_store_down_a_capped_release_is_passed_over_and_the_next_one_served() -> None:
    window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z", "maxUsers": 3}
    capped = task("capped", "3.0", targeting={"window": window})
    cat = catalog(capped, task("plain", "2.0"))
    sets = DownSets()
    seats = Seats(sets)
    found = await choose(cat, seats, client("d1"), "AppUpgrade", NOW)
    assert found is not None and found.name == "plain"  # not a seat past the cap, not an error
    for i in range(20):  # while it is down, checks do not each wait on it
        await choose(cat, seats, client(f"d{i}"), "AppUpgrade", NOW)
    assert sets.calls == 1


def test_a_switch_applies_whatever_installed_version_the_client_reports() -> None:
    flags = task("flags")
    del flags["spec"]["package"]
    flags["spec"] |= {"resourceType": "Switch", "payload": {"on": True}}
    flags["status"] = {}
    cat = catalog(flags)
    for installed in ("", "0", "7", "x"):
        c = client("d1", installed_version=installed)
        assert [r.name for r in cat.candidates(c, "Switch", NOW)] == ["flags"], installed


def test_a_task_with_an_odd_status_is_left_out_and_the_rest_served() -> None:
    odd = task("odd", "9.0")
    odd["status"] = {"conditions": 5}
    cat = catalog(odd, task("good", "2.0"))
    assert offered(cat, client("d1")) == "good"
    assert ("shop", "odd") in cat.errors


async def test_a_release_whose_seats_cannot_be_named_does_not_close_the_others() -> None:
    window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z", "maxUsers": 3}
    odd = task("odd", "3.0", targeting={"window": window})
    odd["metadata"]["uid"] = "{braces}"  # a set name Redis Cluster could not place
    cat = catalog(odd, task("capped", "2.0", targeting={"window": window}))
    seats = Seats(MemoryMemberSets())
    found = await choose(cat, seats, client("d1"), "AppUpgrade", NOW)
    assert found is not None and found.name == "capped"
