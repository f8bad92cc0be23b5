"""Reports and counts: the platform's report route and CodePush's status reports counted per task and stage,
once per device, hits summed and flushed; through the ASGI entry with in-process counters, and through a spawned
delivery process counting in the test environment's Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import Process, eventually, free_port, need_env, wait_ready
from mpaas.delivery import codes
from mpaas.delivery.check import Refused
from mpaas.delivery.reports import Tally, forget, key, parse, read_counts
from mpaas.stores import MemoryCounters, RedisCounters

KEY = "prod-key-7Hc2WqLmZx"
GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "shop"},
    "spec": {
        "apps": [
            {
                "appId": "SHOP",
                "workspaceId": "prod",
                "codePush": {"deployments": [{"name": "Production", "platform": "Android", "key": KEY}]},
            }
        ],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}


def task(name: str, kind: str, version: str, uid: str, stage: int = 0) -> dict[str, Any]:
    data = name.encode()
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": kind,
            "package": {
                "uri": f"https://cdn.example/{name}.bin",
                "version": version,
                "sha256": hashlib.sha256(data).hexdigest(),
                "sizeBytes": len(data),
            },
        },
        "status": {
            "currentStage": stage,
            "currentPercent": 100,
            "conditions": [{"type": "PackageVerified", "status": "True"}],
        },
    }


REPORT = {"appId": "SHOP", "workspaceId": "prod", "deviceId": "d-1", "task": "shop/v2", "event": "Install"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("body", "memo"),
    [
        ({k: v for k, v in REPORT.items() if k != "deviceId"}, "deviceId is required"),
        (REPORT | {"task": "v2"}, "task must be namespace/name"),
        (REPORT | {"task": "shop/v2/x"}, "task must be namespace/name"),
        (REPORT | {"event": "Installed"}, "event must be one of Download, Install, InstallFailed"),
        (REPORT | {"message": "x" * 1001}, "at most 1000 characters"),
        (REPORT | {"version": 3}, "version must be a string"),
        (REPORT | {"deviceId": "d" * 201}, "longer than 200"),
    ],
)
def test_malformed_reports_say_what_is_wrong(body: dict[str, Any], memo: str) -> None:
    with pytest.raises(Refused) as e:
        parse(json.dumps(body).encode())
    assert e.value.code.code == codes.INVALID_REQUEST.code and memo in e.value.code.memo
    with pytest.raises(Refused) as e:
        parse(b"[1]")
    assert e.value.code == codes.MALFORMED_BODY


@pytest.mark.unit
async def test_counts_are_per_device_and_stage_and_hits_are_flushed() -> None:
    counters = MemoryCounters(prefix="delivery:counts:")
    tally = Tally(counters)

    class R:  # the two fields the keys need, and what the metrics read
        uid, stage = "uid-1", 0
        spec = type("S", (), {"app_id": "SHOP", "resource_type": "Hotfix", "package": None})()

    release: Any = R()
    for _ in range(3):
        tally.hit(release)
    for device in ("a", "b", "a"):  # a retried report changes nothing
        await tally.report(release, "Install", device)
    await tally.report(release, "InstallFailed", "c")
    await tally.report(release, "Download", "a")
    assert (await read_counts(counters, "uid-1", [0])).total.hits == 0  # not flushed yet
    await tally.flush()
    release.stage = 1
    tally.hit(release)
    await tally.report(release, "Install", "a")  # the same device in the next stage: once in the total
    await tally.report(release, "Install", "d")
    await tally.flush()

    counts = await read_counts(counters, "uid-1", [0, 1])
    assert counts.stages[0].fields() == {"hits": 3, "downloads": 1, "installs": 2, "failures": 1}
    assert counts.stages[1].fields() == {"hits": 1, "downloads": 0, "installs": 2, "failures": 0}
    assert counts.total.fields() == {"hits": 4, "downloads": 1, "installs": 3, "failures": 1}
    assert (await read_counts(counters, "uid-2", [0])).total.fields() == dict.fromkeys(counts.total.fields(), 0)

    await forget(counters, "uid-1", [0, 1])
    assert (await read_counts(counters, "uid-1", [0, 1])).total.installs == 0
    with pytest.raises(ValueError):
        key("a{b}", 0, "hits")  # a uid cannot move the hash tag
    odd: Any = type("R", (), {"uid": "a{b}", "stage": 0, "spec": release.spec})()
    tally.hit(odd)  # such a task is served, just not counted
    await tally.report(odd, "Install", "a")
    await tally.flush()


@pytest.mark.unit
async def test_hits_wait_for_a_store_that_is_down() -> None:
    class Flaky(MemoryCounters):
        down = True

        async def incr(self, key: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
            if self.down:
                raise ConnectionError("Redis is down")
            return await super().incr(key, amount, ttl_seconds=ttl_seconds)

    counters = Flaky()
    tally = Tally(counters)
    release: Any = type("R", (), {"uid": "u", "stage": 2})()
    tally.hit(release)
    await tally.flush()
    tally.hit(release)
    counters.down = False
    await tally.flush()
    assert await counters.get(key("u", 2, "hits")) == 2


def _served(*tasks: dict[str, Any], counters: Any = None) -> Any:
    from mpaas.api import KINDS
    from mpaas.config import Resource
    from mpaas.delivery import COMPONENT
    from mpaas.delivery.check import compile_config

    settings = COMPONENT.settings(config_source="kube", public_url="http://delivery.example")
    served = COMPONENT.build(settings)
    resources: dict[str, Any] = {"DeliveryTask": {}, "MpaasGateway": {}}
    for doc in (GATEWAY, *tasks):
        doc["metadata"].setdefault("namespace", "shop")
        k = (doc["metadata"]["namespace"], doc["metadata"]["name"])
        resources[doc["kind"]][k] = Resource(doc["kind"], k[0], k[1], 1, "1", KINDS[doc["kind"]].parse_spec(doc), doc)
    served.live.current = compile_config(resources)
    if counters is not None:
        served.app.reports.tally.counters = counters
    return served


@pytest.mark.unit
async def test_reports_and_codepush_reports_count_in_the_tasks_stage() -> None:
    up, fix = task("v2", "AppUpgrade", "2.1.0", "uid-up", stage=1), task("fix", "Hotfix", "7", "uid-fix")
    served = _served(up, fix)
    tally = served.app.reports.tally
    assert served.app.checker.tally is tally and served.app.codepush.tally is tally
    transport = httpx.ASGITransport(app=served.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://delivery.example") as client:

        async def report(**extra: Any) -> tuple[int, int, str]:
            r = await client.post("/v1/delivery/report", json=REPORT | extra)
            body = r.json()
            assert r.headers["result-status"] == str(body["resultCode"])
            return r.status_code, body["resultCode"], body["resultMsg"]

        assert await report() == (200, 1000, "counted")
        assert await report() == (200, 1000, "counted")  # retried: counted once
        assert (await report(deviceId="d-2", event="InstallFailed", message="no space", version="2.0"))[1] == 4001
        assert (await report(deviceId="d-2", event="InstallFailed", message="no space", version="2.1.0"))[1] == 1000
        assert (await report(event="Download"))[1] == 1000
        assert (await report(task="shop/gone"))[:2] == (404, codes.UNKNOWN_TASK.code)
        assert (await report(workspaceId="test"))[:2] == (403, codes.UNKNOWN_APP.code)
        r = await client.post("/v1/delivery/report", content=b"x" * 20000)
        assert (r.status_code, r.json()["resultCode"]) == (413, codes.REQUEST_TOO_LARGE.code)
        r = await client.get("/v1/delivery/report")
        assert (r.status_code, r.json()["resultCode"]) == (405, codes.METHOD_NOT_ALLOWED.code)

        # CodePush: a check that offers counts a hit; deploy and download reports map to the same counts.
        r = await client.get(f"/updateCheck?deploymentKey={KEY}&appVersion=1.0.0&clientUniqueId=cp-1")
        assert r.json()["updateInfo"]["label"] == "fix"
        deploy = {"deploymentKey": KEY, "appVersion": "1.0.0", "label": "fix", "clientUniqueId": "cp-1"}
        anonymous = {k: v for k, v in deploy.items() if k != "clientUniqueId"}
        for body in (
            deploy | {"status": "DeploymentSucceeded"},
            deploy | {"status": "DeploymentSucceeded"},  # sent again by the SDK: counted once
            deploy | {"status": "DeploymentFailed", "clientUniqueId": "cp-2"},
            anonymous | {"status": "DeploymentFailed"},  # no device id: not counted in status
        ):
            assert (await client.post("/reportStatus/deploy", json=body)).status_code == 200
        r = await client.post(
            "/v0.1/public/codepush/report_status/download", json={"deployment_key": KEY, "label": "fix"}
        )
        assert r.status_code == 200
        r = await client.post(
            "/v0.1/public/codepush/report_status/download",
            json={"deployment_key": KEY, "label": "fix", "client_unique_id": "cp-1"},
        )
        assert r.status_code == 200
        check = {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "deviceId": "x", "appVersion": "1.0"}
        r = await client.post("/v1/delivery/check", json=check)
        assert r.json()["items"][0]["task"] == "shop/v2"
        await tally.flush()
        metrics = (await client.get("/metrics")).text

    counts = await read_counts(tally.counters, "uid-up", [0, 1])
    assert counts.stages[0].fields() == {"hits": 0, "downloads": 0, "installs": 0, "failures": 0}
    assert counts.stages[1].fields() == {"hits": 1, "downloads": 1, "installs": 1, "failures": 1}
    fix_counts = await read_counts(tally.counters, "uid-fix", [0])
    assert fix_counts.total.fields() == {"hits": 1, "downloads": 1, "installs": 1, "failures": 1}
    assert 'mpaas_delivery_installs_total{app="SHOP",stage="1",type="AppUpgrade",version="2.1.0"} 2.0' in metrics
    assert 'mpaas_delivery_install_failures_total{app="SHOP",stage="0",type="Hotfix",version="7"}' in metrics
    assert 'mpaas_delivery_reported_downloads_total{app="SHOP",stage="1",type="AppUpgrade",version="2.1.0"}' in metrics


@pytest.mark.unit
async def test_a_store_that_is_down_asks_for_the_report_again() -> None:
    class Down(MemoryCounters):
        async def pfadd(self, key: str, members: Any, *, ttl_seconds: float | None = None) -> bool:
            raise ConnectionError("Redis is down")

    served = _served(task("fix", "Hotfix", "7", "uid-fix"), counters=Down(prefix="delivery:counts:"))
    transport = httpx.ASGITransport(app=served.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://delivery.example") as client:
        r = await client.post("/v1/delivery/report", json=REPORT | {"task": "shop/fix"})
        assert (r.status_code, r.json()["resultCode"]) == (503, codes.STORE_UNAVAILABLE.code)
        deploy = {"deploymentKey": KEY, "appVersion": "1.0.0", "label": "fix", "clientUniqueId": "cp-1"}
        r = await client.post("/reportStatus/deploy", json=deploy | {"status": "DeploymentSucceeded"})
        assert r.status_code == 503 and "again later" in r.text


@pytest.mark.component
def test_a_delivery_process_counts_in_redis(spawn: Callable[..., Process], tmp_path: Path) -> None:
    redis_url = need_env("MPAAS_TEST_REDIS_URL")
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    uid = str(uuid.uuid4())
    config = tmp_path / "config"
    config.mkdir()
    doc = task("v2", "AppUpgrade", "2.1.0", uid)
    del doc["status"]  # from a folder, delivery checks the package itself: an https one it cannot read here
    doc["spec"]["package"]["uri"] = "s3://local/packages/v2.bin"
    objects = tmp_path / "objects"
    (objects / "packages").mkdir(parents=True)
    (objects / "packages" / "v2.bin").write_bytes(b"v2")
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, doc]))
    port = free_port()
    proc = spawn(
        "delivery",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_CONFIG_SOURCE": "dir",
            "MPAAS_CONFIG_DIR": str(config),
            "MPAAS_OBJECTS_URL": f"file://{objects}",
            "MPAAS_REDIS_URL": redis_url,
            "MPAAS_REDIS_PREFIX": prefix,
        },
        name="delivery",
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    check = {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "deviceId": "d-1", "appVersion": "1.0"}

    async def run() -> None:
        counters = RedisCounters(redis_url, prefix=prefix + "counts:")
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:

                async def offered() -> bool:
                    r = await client.post("/v1/delivery/check", json=check)
                    return bool(r.json()["items"][0]["update"])

                await eventually(offered, timeout=20, what="the package verified")
                for device, event in [
                    ("d-1", "Download"),
                    ("d-1", "Install"),
                    ("d-1", "Install"),
                    ("d-2", "InstallFailed"),
                ]:
                    r = await client.post("/v1/delivery/report", json=REPORT | {"deviceId": device, "event": event})
                    assert r.json()["resultCode"] == 1000, r.text

            async def counted() -> Any:
                c = await read_counts(counters, uid, [0])
                return c if c.total.hits >= 1 else None

            got = await eventually(counted, timeout=10, what="hits flushed to Redis")
            assert got.total.fields() == {"hits": got.total.hits, "downloads": 1, "installs": 1, "failures": 1}
            await forget(counters, uid, [0])
        finally:
            await counters.close()

    asyncio.run(run())
    assert "Traceback" not in proc.output()
