"""Android crash symbolication against a real obfuscated build: a small Java app (tests/symbolication/) is
compiled, obfuscated with ProGuard (its mapping.txt, as R8 writes the same format) and run both ways; the
obfuscated crash, retraced with the mapping, must be the plain build's crash, frame for frame."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mpaas.analytics.crashes import group
from mpaas.analytics.realtime import MemoryAggregates, apply_records
from mpaas.analytics.symbols import Mapping, MappingError, Symbolicator
from mpaas.stores import LocalObjectStore
from testenv_paths import proguard_classpath

pytestmark = pytest.mark.component
SRC = Path(__file__).resolve().parent / "symbolication" / "src"
MAIN = "com.shop.cart.CartView"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """{"mapping", "obfuscated", "plain"}: the mapping and the two builds' crashes (stderr, as the JVM prints)."""
    work = tmp_path_factory.mktemp("build")
    sources = sorted(str(p) for p in SRC.rglob("*.java"))
    subprocess.run(["javac", "-d", str(work / "classes"), *sources], check=True)
    subprocess.run(["jar", "cf", str(work / "app.jar"), "-C", str(work / "classes"), "."], check=True)
    (work / "app.pro").write_text(
        f"""-injars {work / "app.jar"}
-outjars {work / "app-obf.jar"}
-libraryjars <java.home>/jmods/java.base.jmod(!**.jar;!module-info.class)
-printmapping {work / "mapping.txt"}
-keep public class {MAIN} {{ public static void main(java.lang.String[]); }}
-keepattributes SourceFile,LineNumberTable
-renamesourcefileattribute SourceFile
-dontoptimize
"""
    )
    done = subprocess.run(
        ["java", "-cp", proguard_classpath(), "proguard.ProGuard", f"@{work / 'app.pro'}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    def crash(jar: str) -> str:
        ran = subprocess.run(["java", "-cp", str(work / jar), MAIN], capture_output=True, text=True)
        assert ran.returncode != 0 and "Exception" in ran.stderr, ran.stderr
        return ran.stderr.strip()

    out = {"mapping": (work / "mapping.txt").read_text(), "obfuscated": crash("app-obf.jar"), "plain": crash("app.jar")}
    assert "com.shop.pay.PriceCalculator" not in out["obfuscated"]  # it really is obfuscated
    shutil.rmtree(work / "classes")
    return out


def test_a_retraced_crash_is_the_plain_builds(build: dict[str, str]) -> None:
    assert Mapping.parse(build["mapping"]).retrace(build["obfuscated"]) == build["plain"]


def test_what_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(MappingError, match="line 1"):
        Mapping.parse("this is not a mapping\n")


async def test_crashes_of_a_version_with_a_mapping_are_grouped_by_original_names(
    build: dict[str, str], tmp_path: Path
) -> None:
    symbols = Symbolicator(LocalObjectStore(tmp_path / "objects"))
    assert await symbols.store("SHOP/prod", "2.0", build["mapping"].encode()) == 2
    with pytest.raises(MappingError):
        await symbols.store("SHOP/prod", "../../etc", build["mapping"].encode())
    store = MemoryAggregates()

    def crash(version: str, n: int) -> bytes:
        return json.dumps(
            {
                "id": f"{version}-{n}",
                "app": "SHOP",
                "workspace": "prod",
                "event": "crash",
                "device": f"d{n}",
                "ts": 1_796_000_000_000,
                "platform": "Android",
                "version": version,
                "props": {"stack": build["obfuscated"]},
            }
        ).encode()

    assert await apply_records(store, b"\n".join([crash("2.0", 1), crash("2.0", 2), crash("1.0", 3)]), symbols) == 3
    (retraced,) = await store.crashes("SHOP/prod", "2.0", 10)
    assert retraced["sample"] == build["plain"] and retraced["count"] == 2
    assert retraced["fingerprint"] == group(build["plain"]).fingerprint
    (as_sent,) = await store.crashes("SHOP/prod", "1.0", 10)  # no mapping for 1.0: grouped as sent
    assert as_sent["sample"] == build["obfuscated"]


async def test_mappings_are_uploaded_through_the_query_api(build: dict[str, str], tmp_path: Path) -> None:
    import httpx

    from mpaas.analytics.query import create_query_app
    from mpaas.apps import AppDirectory

    class Live:
        current = AppDirectory({"SHOP/prod": ("SHOP", "prod")})

    symbols = Symbolicator(LocalObjectStore(tmp_path / "objects"))
    with_store = create_query_app(Live(), MemoryAggregates(), symbols)  # type: ignore[arg-type]
    without = create_query_app(Live(), MemoryAggregates())  # type: ignore[arg-type]
    url = "/v1/apps/SHOP/prod/versions/2.0/mapping"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=with_store), base_url="http://x") as client:
        r = await client.put(url, content=build["mapping"])
        assert (r.status_code, r.json()["classes"]) == (200, 2)
        assert (await client.put(url, content=b"not a mapping")).status_code == 400
        assert (await client.put("/v1/apps/NOPE/prod/versions/2.0/mapping", content=b"x")).status_code == 404
    assert await symbols.retrace("SHOP/prod", "2.0", build["obfuscated"]) == build["plain"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=without), base_url="http://x") as client:
        assert (await client.put(url, content=build["mapping"])).status_code == 503
