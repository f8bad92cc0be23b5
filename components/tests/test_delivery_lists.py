"""Whitelists held in the object store: 100 000 ids read into a set, changes picked up, a list that stops
parsing or disappears keeps its last good version; and a delivery process serving a whitelist-only release by
one."""

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mpaas.api import DELIVERY_TASK
from mpaas.config import Resource
from mpaas.delivery.lists import IdLists, ListError, parse
from mpaas.delivery.targeting import Client, compile_catalog
from mpaas.stores import LocalObjectStore

GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "shop"},
    "spec": {
        "apps": [{"appId": "SHOP", "workspaceId": "prod"}],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}
IDS = "\n".join(f"device-{n}" for n in range(0, 1_000_000, 10)).encode()  # 100 000 ids


def task(data: bytes, whitelist: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": "beta", "namespace": "shop", "uid": "u-beta", "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": "AppUpgrade",
            "package": {
                "uri": "s3://local/p/beta.apk",
                "version": "3.0",
                "sha256": hashlib.sha256(data).hexdigest(),
                "sizeBytes": len(data),
            },
            "targeting": {"whitelist": whitelist},
        },
        "status": {"conditions": [{"type": "PackageVerified", "status": "True"}]},
    }


@pytest.mark.unit
def test_a_list_is_one_id_per_line() -> None:
    assert parse(b"# beta testers\n a-1 \n\nb-2\r\na-1\n") == {"a-1", "b-2"}
    for bad, says in ((b"\xff\xfe", "not UTF-8"), (b"ok\n" + b"x" * 201, "line 2"), (b"a\x00b", "printable")):
        with pytest.raises(ListError, match=says):
            parse(bad)


@pytest.mark.unit
async def test_a_100k_list_counts_and_keeps_its_last_good_version(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    await store.ensure_bucket()
    await store.put("lists/beta.txt", IDS)
    lists = IdLists(store)
    body = task(b"apk", {"deviceIdsObject": "lists/beta.txt", "only": True})
    spec = DELIVERY_TASK.parse_spec(body)
    catalog = compile_catalog(
        {"DeliveryTask": {("shop", "beta"): Resource("DeliveryTask", "shop", "beta", 1, "1", spec, body)}}, lists
    )

    def offered(device: str) -> bool:
        return bool(
            catalog.candidates(Client("SHOP", "prod", "Android", device, app_version="1.0"), "AppUpgrade", time.time())
        )

    assert not offered("device-10")  # not read yet: nobody is listed
    await lists.refresh("lists/beta.txt")
    assert len(lists.get("lists/beta.txt")) == 100_000
    started = time.perf_counter()
    assert offered("device-10") and offered("device-999990") and not offered("device-11")
    assert time.perf_counter() - started < 0.05
    await store.put("lists/beta.txt", b"device-11\n")  # changed: read again
    await lists.refresh("lists/beta.txt")
    assert offered("device-11") and not offered("device-10")
    await store.put("lists/beta.txt", b"\xff not utf-8")  # broken: the last good version stays
    await lists.refresh("lists/beta.txt")
    assert offered("device-11")
    await store.delete("lists/beta.txt")  # gone: likewise
    await lists.refresh("lists/beta.txt")
    assert offered("device-11")
    lists.want(set())  # no task names it any more: dropped
    assert not lists.get("lists/beta.txt")


@pytest.mark.component
def test_a_delivery_process_serves_a_release_to_a_100k_list(start_delivery: Callable[..., str], tmp_path: Path) -> None:
    objects, config = tmp_path / "objects", tmp_path / "config"
    (objects / "p").mkdir(parents=True)
    (objects / "lists").mkdir()
    apk = b"PK\x03\x04 an apk"
    (objects / "p" / "beta.apk").write_bytes(apk)
    (objects / "lists" / "beta.txt").write_bytes(IDS)
    config.mkdir()
    body = task(apk, {"deviceIdsObject": "lists/beta.txt", "only": True})
    del body["status"]  # resources from a folder: the process checks the package itself
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, body]))
    url = start_delivery(config, f"file://{objects}")
    check = {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "appVersion": "1.0"}
    with httpx.Client(base_url=url, timeout=10) as client:

        def offered(device: str) -> bool:
            return bool(
                client.post("/v1/delivery/check", json=check | {"deviceId": device}).json()["items"][0]["update"]
            )

        deadline = time.monotonic() + 30
        while not offered("device-500000") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert offered("device-500000") and offered("device-0")
        assert not offered("device-500001")
