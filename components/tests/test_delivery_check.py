"""The update check and the package downloads: a delivery process with its resources in a folder and its packages
in a local object store, asked the way clients ask."""

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import eventually
from mpaas.delivery import codes
from mpaas.delivery.check import Refused, parse
from mpaas.delivery.downloads import byte_range

GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "shop"},
    "spec": {
        "apps": [{"appId": "SHOP", "workspaceId": "prod"}],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}


def task(name: str, kind: str, version: str, data: bytes | None, created: str = "", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created or "2026-11-01T00:00:00Z"},
        "spec": {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "resourceType": kind, **spec},
    }
    if data is not None:
        body["spec"]["package"] = {
            "uri": f"s3://local/packages/{name}.bin",
            "version": version,
            "sha256": hashlib.sha256(data).hexdigest(),
            "sizeBytes": len(data),
        }
    return body


CHECK = {
    "appId": "SHOP",
    "workspaceId": "prod",
    "platform": "android",
    "deviceId": "device-1",
    "appVersion": "1.0.0",
    "city": "Hangzhou",
}


@pytest.mark.component
def test_a_client_gets_its_release_and_downloads_it_with_ranges(
    start_delivery: Callable[..., str], tmp_path: Path
) -> None:
    objects = tmp_path / "objects"
    apk, patch = os.urandom(3_000_000), os.urandom(1000)
    (objects / "packages").mkdir(parents=True)
    (objects / "packages" / "v2.bin").write_bytes(apk)
    (objects / "packages" / "fix-3.bin").write_bytes(patch)
    (objects / "packages" / "bad.bin").write_bytes(b"not what the task says")
    config = tmp_path / "config"
    config.mkdir()
    docs = [
        GATEWAY,
        task("v2", "AppUpgrade", "2.0.0", apk, upgradeMode="Force", description="Faster checkout"),
        # Newer, but its package is not what the task says: never offered.
        task("bad", "AppUpgrade", "9.0.0", apk),
        task("fix-3", "Hotfix", "3", patch, targeting={"filters": {"appVersion": {"min": "1.0", "max": "1.9"}}}),
        task("flags-old", "Switch", "", None, payload={"newCart": False, "theme": "blue"}),
        task(
            "flags",
            "Switch",
            "",
            None,
            "2026-11-02T00:00:00Z",
            payload={"newCart": True},
            targeting={"filters": {"cities": ["Hangzhou"]}},
        ),
    ]
    (config / "all.yaml").write_text(yaml.safe_dump_all(docs))
    url = start_delivery(config, f"file://{objects}")
    with httpx.Client(base_url=url, timeout=10) as client:

        def check(**extra: Any) -> dict[str, Any]:
            r = client.post("/v1/delivery/check", json=CHECK | extra)
            assert r.headers["result-status"] == str(r.json()["resultCode"])
            return r.json()

        asked = [{"type": "AppUpgrade"}, {"type": "Hotfix", "installedVersion": "2"}, {"type": "Switch"}]

        def settled() -> bool:  # the packages are verified in the background after start
            return check(resources=asked)["items"][0]["update"]

        import asyncio

        asyncio.run(eventually(settled, timeout=20, what="the packages verified"))
        items = check(resources=asked)["items"]
        up, fix, switch = items
        assert up["version"] == "2.0.0" and up["upgradeMode"] == "Force" and up["description"] == "Faster checkout"
        assert up["package"]["sha256"] == hashlib.sha256(apk).hexdigest() and up["package"]["sizeBytes"] == len(apk)
        assert fix["version"] == "3" and fix["update"] is True
        assert switch == {
            "type": "Switch",
            "update": True,
            "values": {"newCart": True, "theme": "blue"},
            "tasks": ["shop/flags-old", "shop/flags"],
        }
        assert check(city="Beijing", resources=[{"type": "Switch"}])["items"][0]["values"] == {
            "newCart": False,
            "theme": "blue",
        }
        assert check(appVersion="2.0.0")["items"] == [{"type": "AppUpgrade", "update": False}]
        assert check(resources=[{"type": "Hotfix", "installedVersion": "3"}])["items"][0]["update"] is False

        # The download: whole, resumed from a byte, HEAD, conditional, and its link checked.
        link = up["package"]["url"]
        assert link.startswith(url + "/v1/delivery/packages/packages/v2.bin?")
        whole = client.get(link)
        assert whole.status_code == 200 and whole.content == apk
        etag = whole.headers["etag"]
        assert "immutable" in whole.headers["cache-control"]
        part = client.get(link, headers={"Range": "bytes=1000000-"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes 1000000-{len(apk) - 1}/{len(apk)}"
        assert hashlib.sha256(apk[:1000000] + part.content).hexdigest() == up["package"]["sha256"]
        assert client.get(link, headers={"Range": "bytes=-10"}).content == apk[-10:]
        assert client.get(link, headers={"Range": f"bytes={len(apk)}-"}).status_code == 416
        assert client.get(link, headers={"Range": "bytes=0-1", "If-Range": '"other"'}).status_code == 200
        assert client.get(link, headers={"If-None-Match": etag}).status_code == 304
        head = client.head(link)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(apk)) and not head.content
        tampered = link.replace("v2.bin", "bad.bin")
        assert client.get(tampered).status_code == 403
        expired = link.split("?")[0] + f"?expires={int(time.time()) - 1}&signature=" + "0" * 64
        assert client.get(expired).status_code == 403
        assert client.post(link).status_code == 405

        # Bad checks: each its documented code.
        def code_of(body: Any, **kw: Any) -> tuple[int, int]:
            r = (
                client.post("/v1/delivery/check", content=body, **kw)
                if isinstance(body, bytes)
                else client.post("/v1/delivery/check", json=body)
            )
            return r.status_code, r.json()["resultCode"]

        assert code_of(b"{not json") == (400, codes.MALFORMED_BODY.code)
        assert code_of(CHECK | {"appId": "NOPE"}) == (403, codes.UNKNOWN_APP.code)
        assert code_of(CHECK | {"deviceId": ""}) == (400, codes.INVALID_REQUEST.code)
        assert code_of(b"x" * 20000) == (413, codes.REQUEST_TOO_LARGE.code)
        assert client.get("/v1/delivery/check").json()["resultCode"] == codes.METHOD_NOT_ALLOWED.code
        metrics = client.get("/metrics").text
        assert 'mpaas_delivery_offers_total{app="SHOP",stage="0",type="AppUpgrade",version="2.0.0"}' in metrics


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "memo"),
    [
        ({"platform": "android"}, "appId is required"),
        (CHECK | {"platform": "Symbian"}, "platform must be"),
        (CHECK | {"deviceId": 7}, "deviceId must be a string"),
        (CHECK | {"city": "x" * 201}, "longer than 200"),
        (CHECK | {"resources": []}, "a list of 1 to"),
        (CHECK | {"resources": [{"type": "Nope"}]}, "is not one of"),
        (CHECK | {"resources": [{"type": "Hotfix"}, {"type": "Hotfix"}]}, "asked twice"),
        (CHECK | {"resources": ["Hotfix"]}, "each one an object"),
    ],
)
def test_malformed_checks_say_what_is_wrong(body: dict[str, Any], memo: str) -> None:
    import json

    with pytest.raises(Refused) as e:
        parse(json.dumps(body).encode())
    assert e.value.code.code == codes.INVALID_REQUEST.code and memo in e.value.code.memo


@pytest.mark.unit
def test_byte_ranges() -> None:
    assert byte_range("bytes=0-99", 1000) == (0, 99)
    assert byte_range("bytes=900-", 1000) == (900, 999)
    assert byte_range("bytes=900-5000", 1000) == (900, 999)
    assert byte_range("bytes=-100", 1000) == (900, 999)
    assert byte_range("bytes=-5000", 1000) == (0, 999)
    assert byte_range("bytes=1000-", 1000) is False
    assert byte_range("bytes=5-4", 1000) is False
    assert byte_range("bytes=-0", 1000) is False
    assert byte_range("Bytes=0-0", 1000) == (0, 0)  # RFC 9110 14.1: range units compare without case
    assert byte_range("bytes=0-0", 0) is False and byte_range("bytes=-1", 0) is False  # nothing to give
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=\uff10-1", "bytes=-", "bytes=" + "9" * 16 + "-"):
        assert byte_range(ignored, 1000) is None, ignored


@pytest.mark.unit
async def test_the_same_handlers_answer_over_asgi(tmp_path: Path) -> None:
    """As under HTTP/2 (hypercorn): the check and a ranged download through the ASGI entry, files streamed."""
    from mpaas.config import Resource
    from mpaas.delivery import COMPONENT
    from mpaas.delivery.check import compile_config

    objects = tmp_path / "objects"
    (objects / "packages").mkdir(parents=True)
    data = os.urandom(300_000)
    (objects / "packages" / "v2.bin").write_bytes(data)
    body = task("v2", "AppUpgrade", "2.0.0", data)
    body["status"] = {"conditions": [{"type": "PackageVerified", "status": "True"}]}
    settings = COMPONENT.settings(
        config_source="kube", objects_url=f"file://{objects}", public_url="http://delivery.example"
    )
    served = COMPONENT.build(settings)
    resources: dict[str, Any] = {"DeliveryTask": {}, "MpaasGateway": {}}
    for doc in (GATEWAY, body):
        from mpaas.api import KINDS

        key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
        spec = KINDS[doc["kind"]].parse_spec(doc)
        resources[doc["kind"]][key] = Resource(doc["kind"], key[0], key[1], 1, "1", spec, doc)
    served.live.current = compile_config(resources)
    transport = httpx.ASGITransport(app=served.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://delivery.example") as client:
        r = await client.post("/v1/delivery/check", json=CHECK)
        assert r.status_code == 200 and r.headers["result-status"] == "1000"
        link = r.json()["items"][0]["package"]["url"]
        assert link.startswith("http://delivery.example/v1/delivery/packages/packages/v2.bin?")
        part = await client.get(link, headers={"Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == data[1000:]
        both = await client.get(link, headers=[("Range", "bytes=0-1"), ("Range", "bytes=5-6")])
        assert both.status_code == 200 and both.content == data  # a repeated Range is ignored
        same = await client.get(link, headers={"If-None-Match": both.headers["etag"]})
        assert same.status_code == 304 and "content-length" not in same.headers
        assert (await client.get("/v1/delivery/check")).json()["resultCode"] == codes.METHOD_NOT_ALLOWED.code


@pytest.mark.unit
def test_text_that_is_not_unicode_is_refused() -> None:
    # A lone surrogate ("\ud800" in JSON) is no UTF-8: refused at once, not a failure where it is stored.
    data = json_bytes(CHECK).replace(b'"device-1"', b'"d\\ud800"')
    with pytest.raises(Refused) as e:
        parse(data)
    assert e.value.code.code == codes.INVALID_REQUEST.code and "deviceId" in e.value.code.memo


def json_bytes(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


def _checker(tmp_path: Path, *bodies: dict[str, Any], seats: Any = None) -> Any:
    from types import SimpleNamespace

    from mpaas.api import KINDS
    from mpaas.config import Resource
    from mpaas.delivery.check import Checker, compile_config
    from mpaas.delivery.targeting import Seats
    from mpaas.stores.sets import MemoryMemberSets

    resources: dict[str, Any] = {"DeliveryTask": {}, "MpaasGateway": {}}
    for doc in (GATEWAY, *bodies):
        key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
        doc.setdefault("status", {"conditions": [{"type": "PackageVerified", "status": "True"}]})
        spec = KINDS[doc["kind"]].parse_spec(doc)
        resources[doc["kind"]][key] = Resource(doc["kind"], key[0], key[1], 1, "1", spec, doc)
    live = SimpleNamespace(current=compile_config(resources))

    async def link(package: Any, base: str) -> str:
        return f"{base}/{package.uri.rsplit('/', 1)[-1]}"

    return Checker(live, seats or Seats(MemoryMemberSets()), link)  # type: ignore[arg-type]


@pytest.mark.unit
async def test_the_seat_store_down_answers_each_resource_not_a_500(tmp_path: Path) -> None:
    from mpaas.delivery.targeting import Seats
    from mpaas.stores.sets import MemoryMemberSets

    class Down(MemoryMemberSets):
        async def add_capped(self, name: str, member: str | bytes, cap: int) -> bool:
            raise ConnectionError("Redis is down")

    window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z", "maxUsers": 10}
    checker = _checker(
        tmp_path,
        task("up", "AppUpgrade", "2.0.0", b"x", targeting={"window": window}),
        task("fix", "Hotfix", "3", b"y"),
        task("flags", "Switch", "", None, payload={"on": True}),
        seats=Seats(Down()),
    )
    asked = [{"type": "AppUpgrade"}, {"type": "Hotfix"}, {"type": "Switch"}]
    code, body = await checker.check(json_bytes(CHECK | {"resources": asked}), "http://d")
    assert code.code == codes.SUCCESS.code
    up, fix, flags = body["items"]
    assert up == {"type": "AppUpgrade", "update": False}  # capped: no seat can be taken, so none is offered
    assert fix["update"] is True and flags["values"] == {"on": True}


@pytest.mark.unit
async def test_a_client_on_a_withdrawn_version_is_told_to_roll_back_whatever_its_spelling(tmp_path: Path) -> None:
    checker = _checker(tmp_path, task("fix", "Hotfix", "3.1", b"y", rollback=True))
    for installed in ("3.1", "3.1.0"):
        asked = [{"type": "Hotfix", "installedVersion": installed}]
        _, body = await checker.check(json_bytes(CHECK | {"resources": asked}), "http://d")
        assert body["items"][0].get("rollback") is True, installed


@pytest.mark.unit
async def test_one_resource_that_fails_leaves_the_others_answered(tmp_path: Path) -> None:
    checker = _checker(tmp_path, task("up", "AppUpgrade", "2.0.0", b"x"), task("fix", "Hotfix", "3", b"y"))

    async def broken(package: Any, base: str) -> str:
        if package.uri.endswith("/up.bin"):
            raise RuntimeError("the object store failed to sign")
        return f"{base}/{package.uri.rsplit('/', 1)[-1]}"

    checker.link = broken
    asked = [{"type": "AppUpgrade"}, {"type": "Hotfix"}]
    code, body = await checker.check(json_bytes(CHECK | {"resources": asked}), "http://d")
    assert code.code == codes.SUCCESS.code
    assert body["items"][0] == {"type": "AppUpgrade", "update": False} and body["items"][1]["update"] is True


@pytest.mark.unit
async def test_a_package_served_drop_by_drop_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # Packages are checked one after another: one that never finishes must not hold back all the others.
    import asyncio

    from mpaas.api.delivery import Package
    from mpaas.delivery import packages

    async def drip() -> Any:
        for _ in range(100):
            await asyncio.sleep(0.05)  # each read within httpx's timeout, the whole never done
            yield b"x"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=drip())

    monkeypatch.setattr(packages, "READ_GRACE_SECONDS", 0.3, raising=False)
    package = Package(uri="https://slow.example/p.bin", version="1", sha256="a" * 64, sizeBytes=100)
    started = time.monotonic()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        problem = await packages.verify(package, None, http)
    assert problem is not None and "in time" in problem
    assert time.monotonic() - started < 2


@pytest.mark.unit
async def test_over_asgi_a_client_that_stops_reading_a_file_is_given_up_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under HTTP/2 (hypercorn) a client that stops reading blocks `send` for as long as it likes.
    import asyncio

    from mpaas.delivery import answer
    from mpaas.delivery.answer import Answer, send_asgi
    from mpaas.http1 import FileBody

    monkeypatch.setattr(answer, "ASGI_FILE_CHUNK", 1000)
    monkeypatch.setattr(answer, "ASGI_SEND_SECONDS", 0.2, raising=False)
    path = tmp_path / "p.bin"
    path.write_bytes(os.urandom(5000))
    f = path.open("rb")
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) > 2:
            await asyncio.Event().wait()  # the client's window never opens again

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(send_asgi(Answer(200, {}, file=FileBody(f, 0, 5000)), "GET", send), 5)
    assert time.monotonic() - started < 2 and f.closed


@pytest.mark.component
def test_a_client_that_says_what_it_runs_gets_the_diff_and_the_full_package_as_fallback(
    start_delivery: Callable[..., str], tmp_path: Path
) -> None:
    from mpaas.delivery import diffs

    objects = tmp_path / "objects"
    (objects / "packages").mkdir(parents=True)
    old = os.urandom(2_000_000)
    new = old[:500_000] + b"fixed" + old[500_100:]
    patch = diffs.build_binary(old, new)
    old_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    key = diffs.key_of(new_sha, old_sha, diffs.HDIFFPATCH)
    (objects / key).parent.mkdir(parents=True)
    (objects / key).write_bytes(patch)
    (objects / "packages" / "fix-4.bin").write_bytes(new)
    fix = task("fix-4", "Hotfix", "4.0.0", new)
    fix["status"] = {  # as the operator writes it once the diff is built
        "diffPackages": [
            {
                "fromVersion": "3.0.0",
                "fromSha256": old_sha,
                "fromTask": "shop/fix-3",
                "format": "hdiffpatch",
                "uri": f"s3://local/{key}",
                "sha256": hashlib.sha256(patch).hexdigest(),
                "sizeBytes": len(patch),
            }
        ]
    }
    config = tmp_path / "config"
    config.mkdir()
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, fix]))
    url = start_delivery(config, f"file://{objects}")
    with httpx.Client(base_url=url, timeout=10) as client:

        def ask(**item: str) -> dict[str, Any]:
            r = client.post("/v1/delivery/check", json=CHECK | {"resources": [{"type": "Hotfix", **item}]})
            assert r.status_code == 200, r.text
            return r.json()["items"][0]  # type: ignore[no-any-return]

        import asyncio

        asyncio.run(eventually(lambda: ask()["update"], timeout=20, what="the package verified"))
        offer = ask(installedVersion="3.0.0", installedSha256=old_sha)
        d = offer["diff"]
        assert (d["format"], d["fromVersion"], d["fromSha256"], d["sizeBytes"]) == (
            "hdiffpatch",
            "3.0.0",
            old_sha,
            len(patch),
        )
        got = client.get(d["url"])
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == d["sha256"]
        assert hashlib.sha256(diffs.apply_binary(old, got.content)).hexdigest() == offer["package"]["sha256"] == new_sha
        assert client.get(offer["package"]["url"]).content == new  # the fallback

        assert ask(installedVersion="3.0")["diff"]["fromSha256"] == old_sha  # by version when it names one package
        assert "diff" not in ask(installedVersion="3.0.0", installedSha256="e" * 64)  # other bytes: the full package
        assert "diff" not in ask(installedVersion="2.0.0")
        r = client.post("/v1/delivery/check", json=CHECK | {"resources": [{"type": "Hotfix", "installedSha256": "X"}]})
        assert r.status_code == 400 and "installedSha256" in r.json()["resultMsg"]


@pytest.mark.unit
async def test_offline_packages_are_answered_per_offline_app(tmp_path: Path) -> None:
    checker = _checker(
        tmp_path,
        task("mall-1", "H5Offline", "1.0.0", b"a", offlineAppId="20000123"),
        task("mall-2", "H5Offline", "1.1.0", b"b", offlineAppId="20000123"),
        task("pay-1", "H5Offline", "3.0.0", b"c", offlineAppId="20000456"),
        task("mini-1", "MiniProgram", "1.0.0", b"d", offlineAppId="20000123"),  # another type: its own line
    )
    apps = [
        {"id": "20000123", "installedVersion": "1.0.0"},
        {"id": "20000456", "installedVersion": "3.0.0"},
        {"id": "20000789"},
    ]
    _, body = await checker.check(json_bytes(CHECK | {"resources": [{"type": "H5Offline", "apps": apps}]}), "http://d")
    (item,) = body["items"]
    assert item["type"] == "H5Offline"
    mall, pay, none = item["apps"]
    assert (mall["id"], mall["update"], mall["version"], mall["task"]) == ("20000123", True, "1.1.0", "shop/mall-2")
    assert pay == {"id": "20000456", "update": False} and none == {"id": "20000789", "update": False}
    # Without apps: every offline app released to this client, as if none were installed.
    asked = [{"type": "H5Offline"}, {"type": "MiniProgram"}]
    _, body = await checker.check(json_bytes(CHECK | {"resources": asked}), "http://d")
    h5, mini = body["items"]
    assert [(a["id"], a["version"]) for a in h5["apps"]] == [("20000123", "1.1.0"), ("20000456", "3.0.0")]
    assert [(a["id"], a["task"]) for a in mini["apps"]] == [("20000123", "shop/mini-1")]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("apps", "memo"),
    [
        ("all", "apps is a list"),
        ([{"id": "../x"}], "is not an app id"),
        ([{"id": "a"}, {"id": "a"}], "a asked twice"),
        ([{}], "id is required"),
        ([{"id": "a", "installedSha256": "X"}], "installedSha256 must be"),
        ([{"id": str(i)} for i in range(501)], "at most 500"),
    ],
)
def test_malformed_offline_app_lists_say_what_is_wrong(apps: Any, memo: str) -> None:
    with pytest.raises(Refused) as e:
        parse(json_bytes(CHECK | {"resources": [{"type": "H5Offline", "apps": apps}]}))
    assert e.value.code.code == codes.INVALID_REQUEST.code and memo in e.value.code.memo


@pytest.mark.unit
def test_offline_app_id_is_required_for_offline_types_and_refused_elsewhere() -> None:
    from mpaas.api import KINDS, InvalidResource

    for body in (task("h5", "H5Offline", "1", b"a"), task("up", "AppUpgrade", "1", b"a", offlineAppId="20000123")):
        with pytest.raises(InvalidResource, match="offlineAppId is required for H5Offline and MiniProgram"):
            KINDS["DeliveryTask"].parse_spec(body)
