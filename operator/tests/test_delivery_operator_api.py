"""The operator's side of DeliveryTask against a real API server and a real S3 server: the package check, the
stages (across an operator killed mid-stage), pause and rollback.

Stages last at least 60 s, so the tests move a stage's start back in status (as a long wait would) instead of
waiting: the operator keeps its clock in status and nowhere else, which is what these tests check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from conftest import (
    Process,
    apply_yaml,
    closed_url,
    condition,
    create_peering,
    eventually,
    free_port,
    kget,
    kubectl,
    need_env,
)
from mpaas.stores import S3ObjectStore

pytestmark = pytest.mark.api
KIND = "deliverytask"


@dataclass
class Packages:
    """Where a test's packages go: one bucket for these tests (a SeaweedFS collection each, whose volumes are few),
    a prefix per test."""

    store: S3ObjectStore
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}packages/{name}.apk"

    def uri(self, name: str) -> str:
        return f"s3://{self.store.bucket}/{self.key(name)}"

    async def put(self, name: str, data: bytes) -> None:
        await self.store.put(self.key(name), data)


@pytest_asyncio.fixture
async def packages() -> AsyncIterator[Packages]:
    store = S3ObjectStore(
        need_env("MPAAS_TEST_S3_ENDPOINT"),
        "mpaas-delivery-operator",
        access_key=os.environ["MPAAS_TEST_S3_ACCESS_KEY"],
        secret_key=os.environ["MPAAS_TEST_S3_SECRET_KEY"],
    )
    await store.ensure_bucket()
    where = Packages(store, f"{uuid.uuid4().hex[:10]}/")
    yield where
    for k in await store.list(where.prefix):
        await store.delete(k)


@pytest.fixture
def own_peering(crds: None) -> Iterator[str]:
    """A peering of these tests' own, so no other operator run against this API server pauses theirs."""
    name = f"mpaas-dtask-{uuid.uuid4().hex[:8]}"
    create_peering(name)
    yield name
    kubectl("delete", "clusterkopfpeering", name, check=False)


@pytest.fixture
def start(own_peering: str, packages: Packages, spawn: Callable[..., Process]) -> Callable[..., Process]:
    """Starts an operator whose object store is the packages' bucket."""

    def run(priority: int | None = None) -> Process:
        return spawn(
            "operator",
            env={
                **({"MPAAS_OPERATOR_PRIORITY": str(priority)} if priority is not None else {}),
                "MPAAS_OPERATOR_PEERING": own_peering,
                "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
                "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
                "MPAAS_OBJECTS_URL": f"s3://{packages.store.bucket}?endpoint={os.environ['MPAAS_TEST_S3_ENDPOINT']}",
                "MPAAS_OBJECTS_ACCESS_KEY": os.environ["MPAAS_TEST_S3_ACCESS_KEY"],
                "MPAAS_OBJECTS_SECRET_KEY": os.environ["MPAAS_TEST_S3_SECRET_KEY"],
            },
            name="operator",
        )

    return run


def task(name: str, packages: Packages, data: bytes, stages: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": "AppUpgrade",
            "package": {
                "uri": packages.uri(name),
                "version": "3.2.0",
                "sha256": hashlib.sha256(data).hexdigest(),
                "sizeBytes": len(data),
            },
            "stages": stages,
            **spec,
        },
    }


def get(namespace: str, name: str) -> dict[str, Any]:
    return kget(namespace, KIND, name) or {}


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def backdate(namespace: str, name: str, seconds: float) -> str:
    """Move the current stage's start `seconds` into the past, as if that much time had gone by."""
    at = stamp(datetime.now(UTC) - timedelta(seconds=seconds))
    patch = json.dumps({"status": {"stageStartedAt": at}})
    kubectl("patch", "-n", namespace, KIND, name, "--subresource=status", "--type=merge", "-p", patch)
    return at


def set_spec(namespace: str, name: str, **fields: Any) -> None:
    kubectl("patch", "-n", namespace, KIND, name, "--type=merge", "-p", json.dumps({"spec": fields}))


async def wait_for(
    namespace: str, name: str, check: Callable[[dict[str, Any]], Any], what: str, within: float = 30
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get(namespace, name)
        return obj if check(obj) else None

    return await eventually(probe, timeout=within, what=f"{name}: {what}")  # type: ignore[no-any-return]


def at_stage(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda o: (o.get("status") or {}).get("currentStage") == n


def events(namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = (kget(namespace, "events", "--field-selector", f"involvedObject.name={name}") or {}).get("items") or []
    return [e for e in items if e.get("reason") == reason]


async def test_a_missing_package_is_reported_then_verified_once_uploaded(
    namespace: str, packages: Packages, start: Callable[..., Process]
) -> None:
    data = os.urandom((9 << 20) + 123)  # two ranges of verify's 8 MiB
    operator = start()
    r = apply_yaml(namespace, task("shop", packages, data, [{"percent": 5, "durationSeconds": 600}, {"percent": 100}]))
    assert r.returncode == 0, r.stderr

    obj = await wait_for(
        namespace, "shop", lambda o: condition(o, "PackageVerified").get("reason") == "PackageMissing", "PackageMissing"
    )
    pv, ready = condition(obj, "PackageVerified"), condition(obj)
    assert pv["status"] == "False" and "does not exist" in pv["message"] and "checked again in" in pv["message"]
    assert (ready["status"], ready["reason"]) == ("False", "PackageNotVerified")
    assert obj["status"]["currentPercent"] == 0 and "currentStage" not in obj["status"]
    missing = await eventually(lambda: events(namespace, "shop", "PackageMissing"), timeout=10, what="its Event")
    assert [e["type"] for e in missing] == ["Warning"]  # posted right after the status: allow it to land

    await packages.put("shop", data)
    uploaded = datetime.now(UTC)
    obj = await wait_for(namespace, "shop", lambda o: condition(o).get("reason") == "Serving", "Serving", within=40)
    pv, ready = condition(obj, "PackageVerified"), condition(obj)
    assert (pv["status"], pv["reason"]) == ("True", "Verified")
    assert ready["status"] == "True" and "stage 1 of 2 (5% of the targeted devices) until" in ready["message"]
    st = obj["status"]
    assert st["currentStage"] == 0 and st["currentPercent"] == 5
    # The clock starts when the package is verified, not when the task was applied.
    assert parse(st["stageStartedAt"]) >= uploaded - timedelta(seconds=1)
    assert [e["type"] for e in events(namespace, "shop", "Verified")] == ["Normal"]
    assert len(events(namespace, "shop", "StageStarted")) == 1
    assert condition(obj, "Reconciling")["status"] == "False" and condition(obj, "Stalled")["status"] == "False"
    assert not obj["metadata"].get("finalizers")
    assert "Traceback" not in operator.output()

    # A wrong size is told apart from a missing package.
    bad = task("short", packages, data, [{"percent": 100}])
    bad["spec"]["package"]["sizeBytes"] = len(data) + 1
    await packages.put("short", data)
    apply_yaml(namespace, bad)
    obj = await wait_for(
        namespace, "short", lambda o: condition(o, "PackageVerified").get("reason") == "SizeMismatch", "SizeMismatch"
    )
    assert condition(obj)["reason"] == "PackageNotVerified"


async def test_stages_advance_one_at_a_time_across_an_operator_killed_mid_stage(
    namespace: str, packages: Packages, start: Callable[..., Process]
) -> None:
    data = b"release 3.2.0"
    await packages.put("gray", data)
    stages = [
        {"percent": 10, "durationSeconds": 60},
        {"percent": 20, "durationSeconds": 60},
        {"percent": 50, "durationSeconds": 60},
        {"percent": 100},
    ]
    operator = start()
    apply_yaml(namespace, task("gray", packages, data, stages))
    history: list[tuple[int, str]] = []  # (stage, stageStartedAt) as the operator wrote them

    def note(o: dict[str, Any]) -> None:
        st = o.get("status") or {}
        entry = (st.get("currentStage"), st.get("stageStartedAt"))
        if entry[0] is not None and entry not in history and entry[1] not in written_by_test:
            history.append(entry)  # type: ignore[arg-type]

    written_by_test: set[str] = set()
    obj = await wait_for(namespace, "gray", at_stage(0), "stage 0")
    note(obj)
    assert obj["status"]["currentPercent"] == 10

    written_by_test.add(backdate(namespace, "gray", 58))
    obj = await wait_for(namespace, "gray", at_stage(1), "stage 1", within=20)
    note(obj)
    assert obj["status"]["currentPercent"] == 20

    # Killed mid-stage; while it is down, far more time than stages 1 and 2 together goes by.
    operator.proc.kill()
    operator.proc.wait(10)
    written_by_test.add(backdate(namespace, "gray", 1000))
    restarted = datetime.now(UTC)
    start()
    obj = await wait_for(namespace, "gray", at_stage(2), "stage 2", within=40)
    note(obj)
    assert obj["status"]["currentPercent"] == 50
    assert parse(obj["status"]["stageStartedAt"]) >= restarted - timedelta(seconds=1)  # the new one's own time

    # Stage 2 has its whole minute: several passes later the release is still there, not at stage 3, and
    # nothing was written meanwhile (a pass writes only what changed).
    version = get(namespace, "gray")["metadata"]["resourceVersion"]
    for _ in range(8):
        note(get(namespace, "gray"))
        await asyncio.sleep(1)
    obj = get(namespace, "gray")
    assert obj["status"]["currentStage"] == 2 and obj["metadata"]["resourceVersion"] == version
    stages_seen = [s for s, _ in history]
    assert stages_seen == [0, 1, 2], history  # none repeated, none skipped
    started = [e["message"] for e in events(namespace, "gray", "StageStarted")]
    assert sorted(m.split(" (")[0] for m in started) == ["stage 1 of 4", "stage 2 of 4", "stage 3 of 4"], started
    assert all(e.get("count", 1) == 1 for e in events(namespace, "gray", "StageStarted"))


async def test_pause_holds_the_stage_and_its_clock_and_rollback_serves_zero(
    namespace: str, packages: Packages, start: Callable[..., Process]
) -> None:
    data = b"hotfix 7"
    await packages.put("fix", data)
    start()
    apply_yaml(namespace, task("fix", packages, data, [{"percent": 10, "durationSeconds": 60}, {"percent": 100}]))
    await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "Serving", "Serving")

    backdate(namespace, "fix", 20)  # 40 s left
    set_spec(namespace, "fix", paused=True)
    obj = await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "Paused", "Paused")
    ready, st = condition(obj), obj["status"]
    assert ready["status"] == "True" and "paused at stage 1 of 2" in ready["message"]
    assert st["pausedAt"] and st["currentPercent"] == 10 and st["currentStage"] == 0
    left = seconds_left(ready["message"])
    assert 30 <= left <= 40, ready["message"]
    await asyncio.sleep(6)
    obj = get(namespace, "fix")
    assert condition(obj)["message"] == ready["message"]  # the clock stands still

    # Resumed: the stage goes on with the time it had left.
    set_spec(namespace, "fix", paused=False)
    obj = await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "Serving", "Serving again")
    st = obj["status"]
    assert "pausedAt" not in st and st["pausedSeconds"] >= 6 and st["currentStage"] == 0
    ends = parse(st["stageStartedAt"]) + timedelta(seconds=60 + st["pausedSeconds"])
    assert abs((ends - datetime.now(UTC)).total_seconds() - left) <= 3, (st, left)
    assert "until " + stamp(ends) in condition(obj)["message"]

    # Held past its end, it stays.
    set_spec(namespace, "fix", paused=True)
    await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "Paused", "Paused again")
    backdate(namespace, "fix", 1000)
    await asyncio.sleep(7)
    obj = get(namespace, "fix")
    assert obj["status"]["currentStage"] == 0 and condition(obj)["reason"] == "Paused"

    set_spec(namespace, "fix", rollback=True)
    obj = await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "RolledBack", "RolledBack")
    assert condition(obj)["status"] == "False" and obj["status"]["currentPercent"] == 0
    assert condition(obj, "Stalled")["status"] == "False" and obj["status"]["currentStage"] == 0
    assert [e["type"] for e in events(namespace, "fix", "RolledBack")] == ["Normal"]


def seconds_left(message: str) -> int:
    return int(message.split("; ")[1].split(" s ")[0])


async def test_only_the_active_replica_checks_packages_and_advances_stages(
    namespace: str, packages: Packages, start: Callable[..., Process], own_peering: str
) -> None:
    high = start(priority=20)
    low = start(priority=10)

    def joined() -> bool:
        peers = (kget("", "clusterkopfpeering", own_peering) or {}).get("status") or {}
        return len(peers) == 2

    await eventually(joined, timeout=30, what="both replicas in the peering")
    data = b"standby"
    apply_yaml(namespace, task("standby", packages, data, [{"percent": 10, "durationSeconds": 60}, {"percent": 100}]))
    await wait_for(
        namespace, "standby", lambda o: condition(o, "PackageVerified").get("reason") == "PackageMissing", "missing"
    )
    await asyncio.sleep(12)  # past the first retry
    assert "checking package" in high.output()
    assert "DeliveryTask" not in low.output()  # the standby read no package and wrote nothing

    await packages.put("standby", data)
    high.stop()  # a graceful stop leaves the peering at once
    obj = await wait_for(namespace, "standby", lambda o: condition(o).get("reason") == "Serving", "Serving", within=40)
    assert obj["status"]["currentStage"] == 0
    assert "checking package" in low.output()


async def test_an_unreachable_store_is_reported(
    namespace: str, own_peering: str, spawn: Callable[..., Process], packages: Packages
) -> None:
    spawn(
        "operator",
        env={
            "MPAAS_OPERATOR_PEERING": own_peering,
            "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
            "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
            "MPAAS_OBJECTS_URL": f"s3://{packages.store.bucket}?endpoint={closed_url()}",
            "MPAAS_OBJECTS_ACCESS_KEY": "k",
            "MPAAS_OBJECTS_SECRET_KEY": "s",
        },
        name="operator",
    )
    apply_yaml(namespace, task("down", packages, b"x", [{"percent": 100}]))
    obj = await wait_for(
        namespace, "down", lambda o: condition(o, "PackageVerified").get("reason") == "StoreUnavailable", "unavailable"
    )
    assert "could not be read" in condition(obj, "PackageVerified")["message"]
    assert condition(obj)["reason"] == "PackageNotVerified" and obj["status"]["currentPercent"] == 0


GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps"},
    "spec": {
        "apps": [{"appId": "SHOP", "workspaceId": "prod"}],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
        "apis": [],
    },
}


async def test_reports_drive_the_counts_in_status_and_a_stage_that_fails_pauses_itself(
    namespace: str, packages: Packages, own_peering: str, spawn: Callable[..., Process]
) -> None:
    import httpx
    import redis.asyncio as aioredis

    from conftest import wait_ready

    redis_url = need_env("MPAAS_TEST_REDIS_URL")
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    # The operator and delivery share the object store (delivery links packages in it) and the Redis of counts.
    shared = {
        "MPAAS_REDIS_URL": redis_url,
        "MPAAS_REDIS_PREFIX": prefix,
        "MPAAS_OBJECTS_URL": f"s3://{packages.store.bucket}?endpoint={os.environ['MPAAS_TEST_S3_ENDPOINT']}",
        "MPAAS_OBJECTS_ACCESS_KEY": os.environ["MPAAS_TEST_S3_ACCESS_KEY"],
        "MPAAS_OBJECTS_SECRET_KEY": os.environ["MPAAS_TEST_S3_SECRET_KEY"],
    }
    spawn(
        "operator",
        env={
            "MPAAS_OPERATOR_PEERING": own_peering,
            "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
            "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
            **shared,
        },
        name="operator",
    )
    data = b"release with a bad install"
    await packages.put("fix", data)
    stages = [{"percent": 100}]
    spec = task("fix", packages, data, stages, autoPause={"maxFailurePercent": 20, "minInstalls": 5})
    assert apply_yaml(namespace, GATEWAY, spec).returncode == 0
    await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "Serving", "Serving")

    port = free_port()
    delivery = spawn(
        "delivery",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_CONFIG_SOURCE": "kube",
            "MPAAS_NAMESPACE": namespace,
            **shared,
        },
        name="delivery",
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, delivery)
    check = {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "deviceId": "d-1", "appVersion": "3.0"}
    base = {"appId": "SHOP", "workspaceId": "prod", "task": f"{namespace}/fix", "version": "3.2.0"}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def offered() -> bool:
            r = await client.post("/v1/delivery/check", json=check)
            return bool(r.json()["items"][0]["update"])

        await eventually(offered, timeout=20, what="the release offered")

        async def report(device: str, event: str) -> None:
            r = await client.post("/v1/delivery/report", json=base | {"deviceId": device, "event": event})
            assert r.json()["resultCode"] == 1000, r.text

        await report("d-1", "Download")
        for device in ("d-1", "d-2", "d-3", "d-4", "d-1"):  # d-1 sent twice: one device
            await report(device, "Install")

        def counted(o: dict[str, Any]) -> bool:
            st = o.get("status") or {}
            return st.get("installs") == 4 and st.get("hits", 0) >= 1

        obj = await wait_for(namespace, "fix", counted, "4 installs in status", within=40)  # read every 15 s
        st = obj["status"]
        assert (st["downloads"], st["failures"]) == (1, 0)
        (entry,) = st["stages"]
        assert entry["index"] == 0 and entry["percent"] == 100 and entry["installs"] == 4 and entry["hits"] >= 1
        auto = condition(obj, "AutoPaused")
        assert (auto["status"], auto["reason"]) == ("False", "WithinLimit"), auto

        # 2 of 6 installs fail (33 % > 20 %): the release holds itself, and says why.
        await report("d-5", "InstallFailed")
        await report("d-6", "InstallFailed")
        obj = await wait_for(
            namespace, "fix", lambda o: condition(o).get("reason") == "AutoPaused", "AutoPaused", within=40
        )
        auto, ready = condition(obj, "AutoPaused"), condition(obj)
        assert auto["status"] == "True" and auto["reason"] == "FailureRate"
        assert "2 of 6 installs failed (33.3%), above autoPause.maxFailurePercent 20%" in auto["message"]
        assert ready["status"] == "True" and auto["message"] in ready["message"]
        st = obj["status"]
        assert st["autoPause"]["pausedGeneration"] == obj["metadata"]["generation"] and st["pausedAt"]
        assert st["currentPercent"] == 100 and "generation" not in (obj["spec"].get("autoPause") or {})
        assert not obj["spec"].get("paused")  # a status-only pause: the spec is the owner's
        warnings = events(namespace, "fix", "AutoPaused")
        assert [e["type"] for e in warnings] == ["Warning"] and "2 of 6 installs failed" in warnings[0]["message"]
        assert await offered()  # held at its stage, still served there

        # The owner looks, and resumes by changing the spec: judged from here on.
        set_spec(namespace, "fix", autoPause={"maxFailurePercent": 20, "minInstalls": 6})
        obj = await wait_for(namespace, "fix", lambda o: condition(o).get("reason") == "Serving", "resumed")
        assert condition(obj, "AutoPaused")["status"] == "False"
        assert (obj["status"]["autoPause"]["installs"], obj["status"]["autoPause"]["failures"]) == (4, 2)
        assert "pausedAt" not in obj["status"]

    r = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            for k in keys:
                await r.delete(k)
    finally:
        await r.aclose()


async def test_diff_packages_are_built_from_earlier_releases_listed_and_kept_across_a_restart(
    namespace: str, packages: Packages, start: Callable[..., Process]
) -> None:
    from mpaas.delivery import diffs

    v1 = os.urandom(3 << 20)
    v2 = v1[: 1 << 20] + b"a new function" + v1[(1 << 20) + 100 :]
    v3 = v2[: 2 << 20] + os.urandom(4096) + v2[2 << 20 :]
    for name, data in (("v1", v1), ("v2", v2), ("v3", v3)):
        await packages.put(name, data)
    operator = start()
    app = f"DIFF{uuid.uuid4().hex[:8]}"  # releases of one app are found in every namespace: this test's own app
    for name, data, version in (("v1", v1, "3.0.0"), ("v2", v2, "3.1.0")):
        body = task(name, packages, data, [{"percent": 100}], appId=app)
        body["spec"]["package"]["version"] = version
        assert apply_yaml(namespace, body).returncode == 0
    body = task("v3", packages, v3, [{"percent": 100}], diffs={"fromReleases": 2}, appId=app)
    body["spec"]["package"]["version"] = "3.2.0"
    assert apply_yaml(namespace, body).returncode == 0

    obj = await wait_for(
        namespace, "v3", lambda o: condition(o, "DiffPackages").get("reason") == "Built", "diffs built", within=60
    )
    assert condition(obj, "DiffPackages")["message"] == "2 of 2 built: from 3.1.0, 3.0.0"
    entries = obj["status"]["diffPackages"]
    assert [(e["fromVersion"], e["fromTask"], e["format"]) for e in entries] == [
        ("3.1.0", f"{namespace}/v2", "hdiffpatch"),
        ("3.0.0", f"{namespace}/v1", "hdiffpatch"),
    ]
    for entry, old in zip(entries, (v2, v1), strict=True):
        key = entry["uri"].removeprefix(f"s3://{packages.store.bucket}/")
        assert key == diffs.key_of(hashlib.sha256(v3).hexdigest(), hashlib.sha256(old).hexdigest(), "hdiffpatch")
        patch = await packages.store.get(key)
        assert hashlib.sha256(patch).hexdigest() == entry["sha256"] and len(patch) == entry["sizeBytes"]
        assert len(patch) < len(v3) // 20
        assert diffs.apply_binary(old, patch) == v3
    assert "diff from 3.1.0 built" in operator.output()

    # Another operator (after a restart) lists them as they are: nothing is built again.
    operator.proc.kill()
    operator.proc.wait()
    second = start()
    apply_yaml(namespace, {**body, "spec": {**body["spec"], "description": "touched"}})
    await wait_for(namespace, "v3", lambda o: o["status"].get("observedGeneration") == 2, "the new spec seen")
    await asyncio.sleep(2 * 5.0)  # two passes of the releases loop
    assert get(namespace, "v3")["status"]["diffPackages"] == entries
    assert f"{namespace}/v3: building the diff" not in second.output()

    # A release rolled back is no longer a source; a lower fromReleases drops the entries it no longer wants.
    set_spec(namespace, "v3", diffs={"fromReleases": 1})
    obj = await wait_for(namespace, "v3", lambda o: len(o["status"].get("diffPackages") or []) == 1, "one diff left")
    assert obj["status"]["diffPackages"] == entries[:1]
    set_spec(namespace, "v2", rollback=True)
    obj = await wait_for(
        namespace,
        "v3",
        lambda o: [e["fromVersion"] for e in o["status"].get("diffPackages") or []] == ["3.0.0"],
        "the diff from v1 instead",
        within=60,
    )
    assert "Traceback" not in operator.output() + second.output()


async def test_link_channel_figures_come_from_what_its_pods_report(
    namespace: str, own_peering: str, spawn: Callable[..., Process]
) -> None:
    import redis.asyncio as aioredis

    redis_url = need_env("MPAAS_TEST_REDIS_URL")
    spawn(
        "operator",
        env={
            "MPAAS_OPERATOR_PEERING": own_peering,
            "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
            "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
            "MPAAS_OPERATOR_REDIS_URL": redis_url,
        },
        name="operator",
    )
    channel = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "PushChannel",
        "metadata": {"name": "chat"},
        "spec": {"appId": "SHOP", "type": "Link"},
    }
    assert apply_yaml(namespace, channel).returncode == 0
    redis = aioredis.from_url(redis_url)
    prefix = f"link:pods:{namespace}/chat:"  # as the link pods publish it (mpaas.link.pods)

    async def report(pod: str, connections: int, sent: int, at: float) -> None:
        record = {"address": f"ws://{pod}/v1/link", "connections": connections, "capacity": 1000,
                  "draining": False, "sent": sent, "at": at}  # fmt: skip
        await redis.set(prefix + pod, json.dumps(record), ex=60)
        await redis.sadd(prefix + "names", pod)

    async def channel_with(check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = kget(namespace, "pushchannel", "chat") or {}
            return obj if check(obj.get("status") or {}) else None

        return await eventually(probe, timeout=40, what=f"chat: {what}")  # type: ignore[no-any-return]

    try:
        now = datetime.now(UTC).timestamp()
        await report("link-chat-a", 300, 1000, now)
        await report("link-chat-b", 200, 5000, now)
        obj = await channel_with(lambda st: st.get("connections") == 500, "connections")
        assert obj["status"]["linkPods"] == 2
        # 10 s later the pods have sent 3 000 more between them: 300 a second.
        await report("link-chat-a", 310, 2000, now + 10)
        await report("link-chat-b", 190, 7000, now + 10)
        obj = await channel_with(lambda st: st.get("deliveredPerSecond") == 300, "deliveries per second")
        assert obj["status"]["connections"] == 500
    finally:
        await redis.delete(prefix + "link-chat-a", prefix + "link-chat-b", prefix + "names")
        await redis.aclose()
