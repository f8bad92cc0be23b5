"""LiveConfig and the folder source: validation, last-good config, atomic swaps, live edits."""

import asyncio
import copy
from pathlib import Path

import pytest
import yaml

from mpaas.config import LiveConfig, Resources
from mpaas.config.sources import DirectorySource
from mpaas.gateway.stages.route import EMPTY, KIND, RouteTable, compiler

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
GATEWAY = yaml.safe_load((ROOT / "examples" / "demo" / "gateway.yaml").read_text())


def obj(rv: str, **spec_changes: object) -> dict:
    o = copy.deepcopy(GATEWAY)
    o["metadata"].update(namespace="default", resourceVersion=rv)  # as the API server returns it
    o["spec"].update(spec_changes)
    return o


def live() -> LiveConfig[RouteTable]:
    return LiveConfig("test", [KIND], compiler(None, None), EMPTY)


def test_valid_snapshot_compiles_and_swaps() -> None:
    lc = live()
    lc.on_snapshot(KIND, {("default", "demo-gateway"): obj("1")})
    assert lc.ready.is_set() and lc.version == 1
    assert set(lc.current.apis) == {"com.demo.user.profile", "com.demo.echo", "com.demo.time"}


def test_invalid_edit_keeps_last_good_version_and_reports_why() -> None:
    lc = live()
    lc.on_snapshot(KIND, {("default", "demo-gateway"): obj("1")})
    good = lc.current
    bad = obj("2", apis=[{"operationType": "x", "upstream": "missing"}])
    lc.on_snapshot(KIND, {("default", "demo-gateway"): bad})
    assert lc.current.apis == good.apis
    assert "no upstream named 'missing'" in next(iter(lc.errors.values()))
    lc.on_snapshot(KIND, {("default", "demo-gateway"): obj("3")})
    assert not lc.errors


def test_compile_failure_keeps_the_previous_config() -> None:
    calls = {"n": 0}

    def flaky(resources: Resources) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return calls["n"]

    lc: LiveConfig[int] = LiveConfig("test", [KIND], flaky, 0)
    lc.on_snapshot(KIND, {("default", "g"): obj("1")})
    lc.on_snapshot(KIND, {("default", "g"): obj("2")})
    assert lc.current == 1
    lc.on_snapshot(KIND, {("default", "g"): obj("3")})
    assert lc.current == 3


def test_two_gateways_without_a_name_is_an_error_not_a_guess() -> None:
    lc = live()
    other = obj("1")
    other["metadata"]["name"] = "second"
    lc.on_snapshot(KIND, {("default", "demo-gateway"): obj("1"), ("default", "second"): other})
    assert lc.current is EMPTY  # compile refused; nothing was guessed
    named: LiveConfig[RouteTable] = LiveConfig("test", [KIND], compiler("default", "second"), EMPTY)
    named.on_snapshot(KIND, {("default", "demo-gateway"): obj("1"), ("default", "second"): other})
    assert named.current.gateway == "default/second"


async def test_directory_source_picks_up_edits(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(GATEWAY))
    (tmp_path / "notes.txt").write_text("ignored")
    lc = live()
    lc.start_directory(str(tmp_path), interval=0.05)
    await asyncio.wait_for(lc.ready.wait(), 5)
    assert "com.demo.echo" in lc.current.apis
    edited = copy.deepcopy(GATEWAY)
    edited["spec"]["apis"].append({"operationType": "com.demo.new", "upstream": "demo-backend", "path": "/new"})
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(edited))
    for _ in range(100):
        if "com.demo.new" in lc.current.apis:
            break
        await asyncio.sleep(0.05)
    assert "com.demo.new" in lc.current.apis
    (tmp_path / "gw.yaml").write_text("kind: [broken")
    await asyncio.sleep(0.3)
    assert "com.demo.new" in lc.current.apis  # unreadable YAML: nothing changes
    await lc.stop()


def test_directory_source_reads_multi_document_files(tmp_path: Path) -> None:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples" / "demo").glob("*.yaml"))]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs))
    kinds = {"MpaasGateway", "DeliveryTask", "PushChannel", "SyncTopic"}
    snap = DirectorySource(tmp_path, kinds).read()
    assert {k: len(v) for k, v in snap.items()} == dict.fromkeys(kinds, 1)
