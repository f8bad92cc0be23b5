"""DeliveryTask stages, package conditions and Ready, as pure functions of spec, status and time."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mpaas.api import InvalidResource
from mpaas.api.delivery import DeliveryTaskSpec, Package
from mpaas.kube import ApiError
from mpaas.stores import LocalObjectStore
from mpaas_operator import conditions
from mpaas_operator.package_check import UNREADABLE, Result, Stopped, check, classify
from mpaas_operator.reconcile.delivery_task import desired, parse, sync, unchanged
from mpaas_operator.reconcile.stages import Progress, ends_at, percent, remaining_seconds, step
from mpaas_operator.releases import RETRY_MAX_SECONDS, Peering, retry_delay

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SHA = "0" * 64


def spec(**over: Any) -> DeliveryTaskSpec:
    raw: dict[str, Any] = {
        "appId": "APP",
        "workspaceId": "prod",
        "platform": "Android",
        "resourceType": "AppUpgrade",
        "package": {"uri": "s3://packages/app.apk", "version": "2.0.0", "sha256": SHA, "sizeBytes": 10},
        "stages": [
            {"percent": 5, "durationSeconds": 600},
            {"percent": 20, "durationSeconds": 3600},
            {"percent": 100},
        ],
        **over,
    }
    return DeliveryTaskSpec.model_validate(raw)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_nothing_starts_before_the_package_is_verified() -> None:
    p = step(spec(), Progress(), verified=False, now=T0)
    assert p == Progress() and percent(spec(), p) == 0 and ends_at(spec(), p) is None


def test_the_first_stage_starts_when_verified_and_each_ends_after_its_duration() -> None:
    s = spec()
    p = step(s, Progress(), verified=True, now=T0)
    assert (p.stage, p.started_at, percent(s, p)) == (0, T0, 5)
    assert ends_at(s, p) == at(600)
    assert step(s, p, verified=True, now=at(599)) == p
    p1 = step(s, p, verified=True, now=at(600))
    assert (p1.stage, p1.started_at, percent(s, p1)) == (1, at(600), 20)
    p2 = step(s, p1, verified=True, now=at(600 + 3600))
    assert (p2.stage, percent(s, p2), ends_at(s, p2)) == (2, 100, None)  # the last stage never ends
    assert step(s, p2, verified=True, now=at(10**8)) == p2


def test_a_long_outage_advances_one_stage_which_gets_its_whole_duration() -> None:
    s = spec()
    p = step(s, Progress(), verified=True, now=T0)
    late = at(600 + 3600 + 86400)  # past the ends of stages 0 and 1
    p1 = step(s, p, verified=True, now=late)
    assert (p1.stage, p1.started_at) == (1, late)
    assert step(s, p1, verified=True, now=late) == p1  # no second step at the same time
    assert ends_at(s, p1) == late + timedelta(seconds=3600)


def test_a_pause_stops_the_clock_and_the_stage_resumes_with_the_time_it_had_left() -> None:
    s, paused = spec(), spec(paused=True)
    p = step(s, Progress(), verified=True, now=T0)
    held = step(paused, p, verified=True, now=at(100))
    assert held.paused_at == at(100) and ends_at(paused, held) is None and percent(paused, held) == 5
    assert remaining_seconds(paused, held, at(5000)) == 500  # frozen while held
    assert step(paused, held, verified=True, now=at(5000)) == held  # held: no advance past the end
    resumed = step(s, held, verified=True, now=at(5000))
    assert (resumed.stage, resumed.paused_at, resumed.paused_seconds) == (0, None, 4900)
    assert ends_at(s, resumed) == at(5500) and remaining_seconds(s, resumed, at(5000)) == 500
    assert step(s, resumed, verified=True, now=at(5499)).stage == 0
    after = step(s, resumed, verified=True, now=at(5500))
    assert (after.stage, after.paused_seconds) == (1, 0)  # a new stage starts with no held time


def test_rollback_serves_zero_and_holds_the_clock() -> None:
    s, back = spec(), spec(rollback=True)
    p = step(s, Progress(), verified=True, now=T0)
    rolled = step(back, p, verified=True, now=at(60))
    assert percent(back, rolled) == 0 and rolled.paused_at == at(60) and rolled.stage == 0
    assert step(back, rolled, verified=True, now=at(10_000)).stage == 0


def test_held_from_the_start_when_paused_before_verification() -> None:
    s = spec(paused=True)
    p = step(s, Progress(), verified=True, now=T0)
    assert (p.stage, p.started_at, p.paused_at) == (0, T0, T0)


def test_without_stages_targeting_percent_is_served_and_nothing_ends() -> None:
    s = spec(stages=[], targeting={"percent": 30})
    p = step(s, Progress(), verified=True, now=T0)
    assert (p.stage, percent(s, p), ends_at(s, p)) == (0, 30, None)


def test_removed_stages_leave_the_release_at_the_last_one() -> None:
    s = spec(stages=[{"percent": 10, "durationSeconds": 60}, {"percent": 50}])
    p = step(s, Progress(4, T0), verified=True, now=at(10))
    assert (p.stage, p.started_at, percent(s, p)) == (1, T0, 50)


def test_status_round_trip_and_what_an_older_status_means() -> None:
    p = Progress(1, T0, at(30), 12)
    fields = p.fields()
    assert fields == {
        "currentStage": 1,
        "stageStartedAt": "2026-05-01T12:00:00Z",
        "pausedAt": "2026-05-01T12:00:30Z",
        "pausedSeconds": 12,
    }
    assert Progress.from_status(fields) == p
    assert Progress(0, T0).fields()["pausedSeconds"] is None  # removed from status, not written as 0
    # Written by a version that did not run the clock: not started.
    assert Progress.from_status({"currentStage": 0, "currentPercent": 10}) == Progress()
    assert Progress.from_status({"currentStage": 1, "stageStartedAt": "yesterday"}) == Progress()


def body(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": "t", "namespace": "n", "uid": "u", "generation": generation, "resourceVersion": "7"},
        "status": status or {},
    }


def ready(d: Any) -> dict[str, Any]:
    return conditions.get(d.conds, "Ready") or {}


def test_ready_and_package_conditions() -> None:
    s = spec()
    first = desired(s, body(), None, T0)
    assert conditions.get(first.conds, "PackageVerified")["status"] == "Unknown"  # type: ignore[index]
    assert (ready(first)["status"], ready(first)["reason"]) == ("False", "PackageNotVerified")
    assert conditions.get(first.conds, "Reconciling")["status"] == "True"  # type: ignore[index]
    assert first.fields["currentPercent"] == 0 and first.fields["currentStage"] is None

    missing = desired(s, body(), Result("PackageMissing", "s3://packages/app.apk does not exist"), T0)
    assert ready(missing)["reason"] == "PackageNotVerified" and "does not exist" in ready(missing)["message"]
    assert conditions.get(missing.conds, "Reconciling")["status"] == "False"  # type: ignore[index]

    ok = desired(s, body(), Result("Verified", "fine"), T0)
    assert (ready(ok)["status"], ready(ok)["reason"]) == ("True", "Serving")
    assert "stage 1 of 3 (5% of the targeted devices) until 2026-05-01T12:10:00Z" in ready(ok)["message"]
    assert ok.fields == {
        "currentStage": 0,
        "stageStartedAt": "2026-05-01T12:00:00Z",
        "pausedAt": None,
        "pausedSeconds": None,
        "currentPercent": 5,
        "stages": [{"index": 0, "percent": 5, "startedAt": "2026-05-01T12:00:00Z"}],
    }
    written = body({"observedGeneration": 1, **ok.fields, "conditions": conditions.merge([], ok.conds, 1)})
    # Once verified, a later failed result cannot take it back (the package is immutable), and nothing changed.
    again = desired(s, written, Result("StoreUnavailable", "down"), at(1))
    assert unchanged(written, again)
    assert not unchanged({**written, "metadata": {**written["metadata"], "generation": 2}}, again)

    paused = desired(spec(paused=True), written, None, at(100))
    assert (ready(paused)["status"], ready(paused)["reason"]) == ("True", "Paused")
    assert "500 s of the stage left when resumed" in ready(paused)["message"]
    back = desired(spec(rollback=True), written, None, at(100))
    assert (ready(back)["status"], ready(back)["reason"], back.fields["currentPercent"]) == ("False", "RolledBack", 0)
    switch = spec(resourceType="Switch", package=None, payload={"newCart": True})
    sw = desired(switch, body(), None, T0)
    assert conditions.get(sw.conds, "PackageVerified")["reason"] == "NoPackage"  # type: ignore[index]
    assert ready(sw)["reason"] == "Serving" and sw.fields["currentPercent"] == 5  # served at once


def test_retries_back_off_to_a_bound() -> None:
    delays = [retry_delay(n) for n in range(1, 12)]
    assert delays[:3] == [10, 20, 40] and max(delays) == RETRY_MAX_SECONDS
    assert delays == sorted(delays)


def test_this_replica_leads_only_as_kopf_would_let_it() -> None:
    peering = Peering(None, name="p", identity="me", priority=10, namespaces=[], standalone=False)  # type: ignore[arg-type]
    now = T0
    seen = (now - timedelta(seconds=1)).isoformat()
    stale = (now - timedelta(seconds=30)).isoformat()
    me = {"priority": 10, "lifetime": 5, "lastseen": seen}
    assert peering.leads({"me": me}, now)
    assert not peering.leads({}, now)  # not joined yet
    assert not peering.leads({"me": {**me, "lastseen": stale}}, now)  # our own entry expired
    assert peering.leads({"me": me, "low": {**me, "priority": 5}}, now)
    assert not peering.leads({"me": me, "high": {**me, "priority": 20}}, now)
    assert not peering.leads({"me": me, "twin": me}, now)  # kopf pauses both on equal priorities
    assert peering.leads({"me": me, "dead": {**me, "priority": 20, "lastseen": stale}}, now)


def package(data: bytes, key: str = "p/app.apk", **over: Any) -> Package:
    return Package.model_validate(
        {
            "uri": f"s3://local/{key}",
            "version": "1.0",
            "sha256": hashlib.sha256(data).hexdigest(),
            "sizeBytes": len(data),
            **over,
        }
    )


async def test_check_results_are_classified(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    data = b"x" * 1000
    await store.put("p/app.apk", data)
    stop = threading.Event()
    assert (await check(package(data), store, stop)).reason == "Verified"
    assert (await check(package(data, "p/other.apk"), store, stop)).reason == "PackageMissing"
    assert (await check(package(data, sizeBytes=999), store, stop)).reason == "SizeMismatch"
    assert (await check(package(data, sha256="a" * 64), store, stop)).reason == "Sha256Mismatch"
    assert (await check(package(data), None, stop)).reason == "NoObjectStore"
    assert (await check(package(data, uri="s3://elsewhere/p/app.apk"), store, stop)).reason == "WrongBucket"
    stop.set()
    with pytest.raises(Stopped):
        await check(package(data), store, stop)


async def test_a_signed_package_is_checked_with_its_apps_delivery_key(tmp_path: Path) -> None:
    import functools

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from mpaas.delivery.packages import verify
    from mpaas.delivery.publish import sign

    store = LocalObjectStore(tmp_path)
    data = b"y" * 1000
    await store.put("p/app.apk", data)
    stop = threading.Event()
    sha = hashlib.sha256(data).hexdigest()

    def pem(private: Any) -> tuple[bytes, str]:
        private_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return private_pem, public_pem.decode()

    for key in (
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ):
        private_pem, public_pem = pem(key)
        signed = package(data, signature=sign(sha, private_pem))  # as `mpaas delivery publish` signs it
        with_key = functools.partial(verify, public_key=public_pem)
        assert (await check(signed, store, stop, run=with_key)).reason == "Verified"
        other = pem(ec.generate_private_key(ec.SECP256R1()))[1]
        refused = await check(signed, store, stop, run=functools.partial(verify, public_key=other))
        assert refused.reason == "SignatureInvalid" and "does not verify" in refused.message
        assert (await check(package(data), store, stop, run=with_key)).reason == "SignatureMissing"
        broken = functools.partial(verify, public_key="-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
        assert (await check(signed, store, stop, run=broken)).reason == "InvalidPublicKey"
    assert (await check(package(data, signature="not checked"), store, stop)).reason == "Verified"  # no key


async def test_a_failing_store_is_unavailable_and_the_loop_never_waits_on_a_check() -> None:
    release = threading.Event()

    async def slow(pkg: Package, objects: Any) -> str | None:
        release.wait(5)  # blocks its own thread, not the operator's loop
        raise ConnectionError("connection refused")

    pending = asyncio.ensure_future(check(package(b"x"), None, threading.Event(), run=slow))
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 5 and not pending.done()
    release.set()
    result = await pending
    assert result.reason == "StoreUnavailable" and "connection refused" in result.message


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("s3://b/does not exist/k does not exist", "PackageMissing"),
        ("https://h/p answered HTTP 404", "PackageMissing"),
        ("https://h/p answered HTTP 503", "StoreUnavailable"),
        ("https://h/p is longer than the task's 10 bytes", "SizeMismatch"),
        ("s3://b/k ended at 5 of 10 bytes", "SizeMismatch"),
        ("invalid object key 'a//b'", "InvalidUri"),
        ("something new", UNREADABLE),
    ],
)
def test_classify(problem: str, reason: str) -> None:
    uri = problem.split(" ")[0] if problem.startswith(("s3://", "https://")) else "s3://b/k"
    if problem.startswith("s3://b/does"):
        uri = "s3://b/does not exist/k"
    assert classify(uri, problem) == reason


class FakeKube:
    """Status patches and Events, in memory; the first status patch meets a newer resource (409)."""

    def __init__(self, current: dict[str, Any]):
        self.current, self.patches, self.events, self.conflicts = current, [], [], 1

    async def merge_patch(self, rt: Any, namespace: str, name: str, patch: dict[str, Any], **_: Any) -> dict[str, Any]:
        if rt.plural == "events":
            return {}
        if self.conflicts:
            self.conflicts -= 1
            raise ApiError(409, {"message": "the object has been modified"}, "PATCH", name)
        assert patch["metadata"]["resourceVersion"] == self.current["metadata"]["resourceVersion"]
        self.patches.append(patch)
        return {}

    async def get(self, rt: Any, namespace: str, name: str) -> dict[str, Any]:
        return self.current

    async def create(self, rt: Any, obj: dict[str, Any]) -> dict[str, Any]:
        self.events.append(obj)
        return obj


async def test_a_conflict_recomputes_from_the_resource_as_it_is_now() -> None:
    s = spec()
    stale = {**body(), "spec": s.model_dump(by_alias=True, exclude_none=True)}
    # Meanwhile another writer verified the package and started stage 0.
    started = desired(s, stale, Result("Verified", "fine"), T0)
    fresh = {
        **stale,
        "metadata": {**stale["metadata"], "resourceVersion": "8"},
        "status": {"observedGeneration": 1, **started.fields, "conditions": conditions.merge([], started.conds, 1)},
    }
    kube = FakeKube(fresh)
    end = await sync(kube, stale, spec=s, now=lambda: at(600))  # type: ignore[arg-type]
    assert end == at(600 + 3600)
    [patch] = kube.patches
    assert patch["status"]["currentStage"] == 1 and patch["status"]["stageStartedAt"] == "2026-05-01T12:10:00Z"
    assert [e["reason"] for e in kube.events] == ["StageStarted"]  # not a second "Verified"


def test_a_package_uri_the_platform_cannot_read_is_an_invalid_spec() -> None:
    raw = body()
    raw["spec"] = spec().model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["package"]["uri"] = "s3://bucket-without-key"
    with pytest.raises(
        InvalidResource, match=r"spec\.package\.uri: s3://bucket-without-key: an s3:// URI names a bucket and a key"
    ):
        parse(raw)
