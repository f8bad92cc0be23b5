"""Diff packages on the operator's side: which earlier releases a task's diffs are built from, the child
process that builds one (against a local folder store), and what status and the DiffPackages condition say."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mpaas.api.delivery import DeliveryTaskSpec, Package
from mpaas.delivery import diffs
from mpaas_operator import conditions, diff_builds
from mpaas_operator.reconcile.delivery_task import desired

pytestmark = pytest.mark.unit
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def body(
    name: str,
    version: str,
    *,
    sha: str | None = None,
    verified: bool = True,
    created: str = "2026-05-01T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    raw_spec = {
        "appId": "APP",
        "workspaceId": "prod",
        "platform": "Android",
        "resourceType": "Hotfix",
        "package": {
            "uri": f"s3://local/{name}.bin",
            "version": version,
            "sha256": sha or hashlib.sha256(name.encode()).hexdigest(),
            "sizeBytes": 10,
        },
        **spec,
    }
    status = {"conditions": [{"type": "PackageVerified", "status": "True" if verified else "False"}]}
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": raw_spec,
        "status": status,
    }


def parsed(b: dict[str, Any]) -> DeliveryTaskSpec:
    return DeliveryTaskSpec.model_validate(b["spec"])


def test_diffs_come_from_the_newest_earlier_verified_releases_of_the_same_app_and_type() -> None:
    me = body("v5", "5.0.0", diffs={"fromReleases": 3})
    others = [
        me,
        body("v4", "4.0.0"),
        body("v4-again", "4.0", sha=hashlib.sha256(b"v4").hexdigest(), created="2026-05-02T00:00:00Z"),  # same bytes
        body("v3", "3.0.0"),
        body("v3-bad", "3.5.0", verified=False),  # never offered: no diff from it
        body("v2", "2.0.0", rollback=True),  # withdrawn
        body("v1", "1.0.0"),
        body("v6", "6.0.0"),  # newer
        body("other-type", "4.5.0", resourceType="AppUpgrade"),
        body("other-platform", "4.5.0", platform="IOS"),
        body("other-ws", "4.5.0", workspaceId="test"),
        body("same-bytes", "4.9.0", sha=me["spec"]["package"]["sha256"]),
    ]
    shelves = diff_builds.candidates([(b, parsed(b)) for b in others])
    got = diff_builds.sources(me, parsed(me), shelves)
    # v4 and v4-again are one package: one diff, named after the task created last.
    assert [(s.task, s.package.version) for s in got] == [
        ("ns/v4-again", "4.0"),
        ("ns/v3", "3.0.0"),
        ("ns/v1", "1.0.0"),
    ]
    one = body("v5", "5.0.0", diffs={"fromReleases": 1})
    assert [s.task for s in diff_builds.sources(one, parsed(one), shelves)] == ["ns/v4-again"]
    none = body("v5", "5.0.0")
    assert diff_builds.sources(none, parsed(none), shelves) == []


def view(wanted: list[diff_builds.Source], **kw: Any) -> diff_builds.View:
    return diff_builds.View(wanted, kw.get("built", {}), kw.get("failed", {}), kw.get("building"))


def source(name: str, version: str) -> diff_builds.Source:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return diff_builds.Source(
        f"ns/{name}", Package(uri=f"s3://local/{name}", version=version, sha256=sha, size_bytes=1)
    )


def built_entry(s: diff_builds.Source) -> dict[str, Any]:
    return {
        "fromVersion": s.package.version,
        "fromSha256": s.package.sha256,
        "fromTask": s.task,
        "format": "hdiffpatch",
        "uri": f"s3://local/delivery/diffs/x/{s.package.sha256}.hdiff",
        "sha256": "f" * 64,
        "sizeBytes": 5,
    }


def test_status_lists_the_diffs_built_and_the_condition_says_what_is_missing_and_why() -> None:
    a, b = source("v4", "4.0.0"), source("v3", "3.0.0")
    me = body("v5", "5.0.0", diffs={"fromReleases": 2})
    s = parsed(me)

    d = desired(s, me, None, T0, diffs=view([a, b], building=a.package.sha256))
    cond = conditions.get(d.conds, diff_builds.CONDITION)
    assert cond is not None and (cond["status"], cond["reason"]) == ("Unknown", "Building")
    assert "building from 4.0.0, 3.0.0" in cond["message"] and d.fields["diffPackages"] == []

    d = desired(
        s,
        me,
        None,
        T0,
        diffs=view([a, b], built={a.package.sha256: built_entry(a)}, failed={b.package.sha256: "too big"}),
    )
    cond = conditions.get(d.conds, diff_builds.CONDITION)
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "BuildFailed")
    assert "1 of 2 built" in cond["message"] and "from 3.0.0 (ns/v3): too big" in cond["message"]
    assert d.fields["diffPackages"] == [built_entry(a)]

    # Listed in status before (by this operator or another replica): kept without a rebuild.
    me["status"]["diffPackages"] = [built_entry(a), built_entry(b), built_entry(source("v1", "1.0.0"))]
    d = desired(s, me, None, T0, diffs=view([a, b]))
    cond = conditions.get(d.conds, diff_builds.CONDITION)
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "Built")
    assert d.fields["diffPackages"] == [built_entry(a), built_entry(b)]  # v1 is no longer wanted

    # A reconcile (no view) leaves them as they are; unset spec.diffs empties them.
    assert "diffPackages" not in desired(s, me, None, T0).fields
    plain = body("v5", "5.0.0")
    plain["status"] = me["status"] | {"conditions": [*me["status"]["conditions"], cond]}
    d = desired(parsed(plain), plain, None, T0)
    assert d.fields["diffPackages"] == []
    gone = conditions.get(d.conds, diff_builds.CONDITION)
    assert gone is not None and gone["reason"] == "NotRequested"


def test_without_an_earlier_release_there_is_nothing_to_build() -> None:
    me = body("v5", "5.0.0", diffs={"fromReleases": 2})
    cond = conditions.get(desired(parsed(me), me, None, T0, diffs=view([])).conds, diff_builds.CONDITION)
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "NoEarlierRelease")


async def test_the_builder_process_stores_the_diff_and_a_second_build_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "objects"
    (store / "p").mkdir(parents=True)
    old = os.urandom(300_000)
    new = old[:1000] + b"changed" + old[1000:]
    (store / "p" / "old.bin").write_bytes(old)
    (store / "p" / "new.bin").write_bytes(new)
    monkeypatch.setenv("MPAAS_OBJECTS_URL", f"file://{store}")

    def pkg(name: str, version: str, data: bytes) -> Package:
        return Package(
            uri=f"s3://local/p/{name}.bin",
            version=version,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
        )

    src = diff_builds.Source("ns/old", pkg("old", "1.0", old))
    target = pkg("new", "2.0", new)
    limits = diff_builds.Limits(max_bytes=1 << 20, seconds=120)
    entry = await diff_builds.build(src, target, "Hotfix", "Android", limits)
    key = diffs.key_of(target.sha256, src.package.sha256, diffs.HDIFFPATCH)
    assert entry["uri"] == f"s3://local/{key}" and entry["format"] == "hdiffpatch" and entry["fromTask"] == "ns/old"
    patch = (store / key).read_bytes()
    assert hashlib.sha256(patch).hexdigest() == entry["sha256"] and len(patch) == entry["sizeBytes"] < 1000
    assert diffs.apply_binary(old, patch) == new
    assert await diff_builds.build(src, target, "Hotfix", "Android", limits) == entry

    # Wrong bytes in the store, a package over the limit: the reason, not a diff.
    (store / "p" / "old.bin").write_bytes(b"tampered")
    other = pkg("new", "2.1", new + b"!")
    (store / "p" / "new.bin").write_bytes(new + b"!")
    with pytest.raises(diff_builds.Failed, match="has 8 bytes, the task says 300000"):
        await diff_builds.build(src, other, "Hotfix", "Android", limits)
    with pytest.raises(diff_builds.Failed, match="more than the 1000 a diff is built from"):
        await diff_builds.build(src, other, "Hotfix", "Android", diff_builds.Limits(max_bytes=1000))
    (store / "p" / "old.bin").write_bytes(old)
    with pytest.raises(diff_builds.Failed, match=r"needs about [0-9]+ MiB, more than the 64 MiB a build may take"):
        await diff_builds.build(src, other, "Hotfix", "Android", diff_builds.Limits(max_memory=64 << 20))
