"""The package cache in front of the object store: one fetch for concurrent misses, packages checked on the way
in, least recently used dropped past the bound without disturbing a reader."""

import asyncio
import hashlib
import os
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import need_env
from mpaas import cli
from mpaas.api.delivery import Package
from mpaas.delivery.cache import CacheError, PackageCache
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


def package(key: str, data: bytes) -> Package:
    return Package(
        uri=f"s3://local/{key}", version="1.0", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )


async def store_with(tmp_path: Path, **files: bytes) -> tuple[LocalObjectStore, list[str]]:
    store = LocalObjectStore(tmp_path / "objects")
    await store.ensure_bucket()
    for name, data in files.items():
        await store.put(f"p/{name}", data)
    gets: list[str] = []
    real = store.get

    async def counting(key: str, **kw: Any) -> bytes:
        gets.append(key)
        await asyncio.sleep(0.01)
        return await real(key, **kw)

    store.get = counting  # type: ignore[method-assign]
    return store, gets


@pytest.mark.unit
async def test_concurrent_misses_fetch_once(tmp_path: Path) -> None:
    data = os.urandom(20 << 20)  # three ranges of 8 MiB
    store, gets = await store_with(tmp_path, big=data)
    cache = PackageCache(store, tmp_path / "cache", 64 << 20)
    files = await asyncio.gather(*(cache.open(package("p/big", data)) for _ in range(8)))
    try:
        assert all(f.read() == data for f in files)
    finally:
        for f in files:
            f.close()
    assert len(gets) == 3  # one fetch, in three ranges, for eight downloads
    again = await cache.open(package("p/big", data))
    again.close()
    assert len(gets) == 3


@pytest.mark.unit
async def test_a_package_that_is_not_what_its_task_says_is_refused_and_not_kept(tmp_path: Path) -> None:
    store, _ = await store_with(tmp_path, good=b"good bytes")
    cache = PackageCache(store, tmp_path / "cache", 1 << 20)
    wrong = Package(uri="s3://local/p/good", version="1.0", sha256="0" * 64, size_bytes=10)
    with pytest.raises(CacheError, match="sha256"):
        await cache.open(wrong)
    with pytest.raises(CacheError, match="not in the platform's object store"):
        await cache.open(Package(uri="s3://other/p/good", version="1.0", sha256="0" * 64, size_bytes=10))
    with pytest.raises(CacheError, match="larger than the cache"):
        await cache.open(Package(uri="s3://local/p/good", version="1.0", sha256="0" * 64, size_bytes=2 << 20))
    assert not [p for p in (tmp_path / "cache").iterdir()]  # nothing half-fetched, nothing wrong kept


@pytest.mark.unit
async def test_least_recently_used_goes_and_a_reader_reads_on(tmp_path: Path) -> None:
    a, b, c = os.urandom(400_000), os.urandom(400_000), os.urandom(400_000)
    store, _ = await store_with(tmp_path, a=a, b=b, c=c)
    cache = PackageCache(store, tmp_path / "cache", 1_000_000)  # two of them fit
    reader = await cache.open(package("p/a", a))
    (await cache.open(package("p/b", b))).close()
    (await cache.open(package("p/c", c))).close()  # a is the least recently used: dropped
    names = {p.name for p in (tmp_path / "cache").iterdir()}
    assert hashlib.sha256(a).hexdigest() not in names and len(names) == 2
    assert reader.read() == a  # its descriptor still holds the file
    reader.close()
    # A restart keeps what was whole.
    again = PackageCache(store, tmp_path / "cache", 1_000_000)
    assert again._bytes == 800_000


@pytest.mark.component
def test_an_s3_package_is_served_through_the_cache_or_from_s3(
    start_delivery: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SeaweedFS as the object store: a published APK offered with a link to this service, which fetches it
    once into its cache and serves it with ranges; with downloads redirected, the link is S3's own."""
    bucket = f"dl-{uuid.uuid4().hex[:8]}"
    s3 = f"s3://{bucket}?endpoint={need_env('MPAAS_TEST_S3_ENDPOINT')}"
    keys = {"MPAAS_OBJECTS_ACCESS_KEY": need_env("MPAAS_TEST_S3_ACCESS_KEY"),
            "MPAAS_OBJECTS_SECRET_KEY": need_env("MPAAS_TEST_S3_SECRET_KEY")}  # fmt: skip
    apk = tmp_path / "shop.apk"
    with zipfile.ZipFile(apk, "w") as z:
        z.writestr("AndroidManifest.xml", b"manifest")
        z.writestr("classes.dex", os.urandom(2_000_000))
    data = apk.read_bytes()
    os.environ.update(keys)
    try:
        code = cli.main(["delivery", "publish", str(apk), "--app", "SHOP", "--workspace", "prod", "--platform",
                         "Android", "--type", "AppUpgrade", "--version", "2.0", "--namespace", "shop",
                         "--objects-url", s3])  # fmt: skip
    finally:
        for k in keys:
            os.environ.pop(k)
    out, err = capsys.readouterr()
    assert code == 0, err
    task = yaml.safe_load(out)
    assert task["spec"]["package"]["uri"].startswith(f"s3://{bucket}/packages/SHOP/prod/AppUpgrade/")
    config = tmp_path / "config"
    config.mkdir()
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, task]))
    check = {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "deviceId": "d1", "appVersion": "1.0"}

    def start(**env: str) -> str:
        url = start_delivery(config, s3, env={**keys, **env})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            item = httpx.post(url + "/v1/delivery/check", json=check, timeout=10).json()["items"][0]
            if item["update"]:
                return str(item["package"]["url"])
            time.sleep(0.3)
        raise AssertionError("the package was never offered")

    link = start(MPAAS_CACHE_DIR=str(tmp_path / "cache"), MPAAS_DOWNLOAD_SIGNING_KEY="ab" * 32)
    assert "/v1/delivery/cached/" in link
    with httpx.Client(timeout=30) as client:
        whole = client.get(link)
        assert whole.status_code == 200 and whole.content == data
        part = client.get(link, headers={"Range": "bytes=100-"})
        assert part.status_code == 206 and part.content == data[100:]
        assert len(list((tmp_path / "cache").iterdir())) == 1  # fetched once, kept
        assert client.get(link.replace("signature=", "signature=0")).status_code == 403
        other = link.split("/v1/delivery/cached/")[0] + "/v1/delivery/cached/" + "0" * 64 + "?" + link.split("?")[1]
        assert client.get(other).status_code == 403  # the signature names the package
    direct = start(MPAAS_DOWNLOADS="redirect")
    assert direct.startswith(need_env("MPAAS_TEST_S3_ENDPOINT"))
    assert httpx.get(direct, timeout=30).content == data
