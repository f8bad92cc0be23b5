"""dSYM uploads that must be refused with a clear 400, Apple crash reports read without any dSYM, and the
bounds of what symbolication keeps (a real dSYM is built and read in test_analytics_dsym.py)."""

import io
import json
import stat
import struct
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from mpaas.analytics import dsyms, query
from mpaas.analytics.dsyms import SymCacheCache, is_report, wanted
from mpaas.analytics.query import create_query_app
from mpaas.analytics.realtime import MemoryAggregates, apply_records
from mpaas.analytics.symbols import Symbolicator
from mpaas.apps import AppDirectory
from mpaas.stores import LocalObjectStore

pytestmark = pytest.mark.unit

URL = "/v1/apps/SHOP/prod/dsyms"
DWARF = "ShopApp.app.dSYM/Contents/Resources/DWARF/ShopApp"
REPORT = """Incident Identifier: 6B5E2A2B-0C4D-4C8A-9E36-3C1A7E5B9F01
Code Type:           ARM-64 (Native)

Thread 0 Crashed:
0   libsystem_kernel.dylib        	0x00000001bd5a9bbc __pthread_kill + 8
1   ShopApp                       	0x0000000104a1b2c4 0x104a14000 + 29380
2   ShopApp                       	0x0000000104a1b2f0 main + 44

Binary Images:
0x104a14000 - 0x104a1ffff +ShopApp arm64  <4c4c44e2-5555-3144-a1b2-0123456789ab> /var/containers/ShopApp.app/ShopApp
0x1bd5a1000 - 0x1bd5d8fff libsystem_kernel.dylib arm64e  <d36ce7d2a5a33b0d9b8b3ad1de21f5e3> /usr/lib/system/kernel.dylib
0x1c0000000 - 0x1c0001fff com.shop.Widget (1.0 - 1) <AABBCCDD-0000-1111-2222-333344445555> /Apps/Widget
"""


class CountingStore(LocalObjectStore):
    stats = 0

    async def stat(self, key: str):  # type: ignore[no-untyped-def]
        self.stats += 1
        return await super().stat(key)


def admin(tmp_path: Path) -> httpx.AsyncClient:
    class Live:
        current = AppDirectory({"SHOP/prod": ("SHOP", "prod")})

    app = create_query_app(Live(), MemoryAggregates(), Symbolicator(LocalObjectStore(tmp_path / "objects")))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")


def zipped(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, data)
    return out.getvalue()


def macho_without_dwarf() -> bytes:
    """A 64-bit arm64 Mach-O header with its UUID only: a binary's shape, nothing to symbolicate with."""
    command = struct.pack("<II16s", 0x1B, 24, uuid.UUID(int=1).bytes)  # LC_UUID
    return struct.pack("<IiiIIIII", 0xFEEDFACF, 0x0100000C, 0, 2, 1, len(command), 0, 0) + command


def corrupted() -> bytes:
    """A zip whose deflated data is damaged (its names and headers intact)."""
    data = bytearray(zipped({DWARF: bytes(range(256)) * 400}))
    start = 30 + len(DWARF)  # the local header, then the data
    data[start + 2 : start + 40] = bytes(0xFF ^ b for b in data[start + 2 : start + 40])
    return bytes(data)


async def put(tmp_path: Path, body: bytes, url: str = URL) -> tuple[int, str]:
    async with admin(tmp_path) as client:
        r = await client.put(url, content=body)
    return r.status_code, r.json().get("detail", "") if r.status_code != 200 else r.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"this is not a dSYM", "neither a zipped .dSYM bundle nor a Mach-O file"),
        (b"PK\x03\x04 but no zip after it", "not a readable zip"),
        (corrupted(), "not a readable zip"),
        (zipped({"ShopApp.app/Info.plist": b"<plist/>"}), "no .dSYM bundle in the zip"),
        (zipped({"../../etc/" + DWARF: b"x"}), "absolute, parent or drive paths are refused"),
        (zipped({"/" + DWARF: b"x"}), "absolute, parent or drive paths are refused"),
        (zipped({"C:/" + DWARF: b"x"}), "absolute, parent or drive paths are refused"),
        (zipped({DWARF: b"/etc/passwd"}, links=(DWARF,)), "symbolic links are refused"),
        (macho_without_dwarf(), "no DWARF debug information: upload the .dSYM"),
        (zipped({DWARF: macho_without_dwarf()}), "no DWARF debug information"),
        (b"\xcf\xfa\xed\xfe" + bytes(12), "not a readable Mach-O file"),
        (zipped({DWARF: b"\xca\xfe\xba\xbe\x00\x00\x00\x05" + bytes(8)}), "ShopApp: not a readable Mach-O"),
    ],
)
async def test_what_is_not_a_dsym_gets_a_clear_400(tmp_path: Path, body: bytes, message: str) -> None:
    status, detail = await put(tmp_path, body)
    assert status == 400 and message in detail, detail


async def test_a_zip_bomb_stops_at_the_inflated_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dsyms, "MAX_UNZIPPED_BYTES", 1 << 20)
    bomb = zipped({DWARF: bytes(8 << 20)})
    assert len(bomb) < 64 << 10  # what is sent is small
    status, detail = await put(tmp_path, bomb)
    assert status == 400 and "inflate to more than 1048576 bytes" in detail, detail


async def test_a_zip_of_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dsyms, "MAX_ZIP_ENTRIES", 5)
    status, detail = await put(tmp_path, zipped({f"ShopApp.app.dSYM/f{i}": b"" for i in range(6)}))
    assert status == 400 and "at most 5 entries" in detail, detail


async def test_upload_bounds_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "MAX_UPLOAD_BYTES", 1000)
    assert (await put(tmp_path, bytes(1001)))[0] == 413
    assert (await put(tmp_path, b"x", "/v1/apps/NOPE/prod/dsyms"))[0] == 404
    status, detail = await put(tmp_path, macho_without_dwarf(), URL + "?version=../../x")
    assert status == 400 and "letters, digits" in detail
    status, detail = await put(tmp_path, macho_without_dwarf(), URL + "?name=.hidden")
    assert status == 400 and "an image's file name" in detail


def test_a_report_is_read_for_its_images_and_frames() -> None:
    ids, names, arch = wanted(REPORT)
    # The app's frame at an offset; "main + 44" is a symbol already, still inside the app's image by address.
    assert ids == ["4c4c44e2-5555-3144-a1b2-0123456789ab"] and names == [] and arch == "arm64"
    images = dsyms._images(REPORT)
    assert [(i.name, i.arch) for i in images] == [
        ("ShopApp", "arm64"),
        ("libsystem_kernel.dylib", "arm64e"),
        ("com.shop.Widget", ""),
    ]
    assert images[2].debug_id == "aabbccdd-0000-1111-2222-333344445555"
    without = REPORT.split("Binary Images:")[0]
    assert wanted(without) == ([], ["ShopApp"], "arm64")  # "main + 44" names no image
    assert is_report(REPORT)
    assert not is_report("java.lang.IllegalStateException: x\n\tat com.shop.a.a(SourceFile:7)")


async def test_a_report_whose_debug_ids_have_no_dsym_is_left_as_sent(tmp_path: Path) -> None:
    objects = CountingStore(tmp_path / "objects")
    symbols = Symbolicator(objects, recheck_seconds=3600)
    assert await symbols.retrace("SHOP/prod", "2.0", REPORT) is None
    looked = objects.stats
    assert looked == 1  # the one image a frame is in
    assert await symbols.retrace("SHOP/prod", "2.0", REPORT) is None
    assert objects.stats == looked  # noted as absent: not looked for again before the recheck

    store = MemoryAggregates()
    event = {
        "id": "c1",
        "app": "SHOP",
        "workspace": "prod",
        "event": "crash",
        "device": "d1",
        "ts": 1_796_000_000_000,
        "platform": "iOS",
        "version": "2.0",
        "props": {"stack": REPORT},
    }
    assert await apply_records(store, json.dumps(event).encode(), symbols) == 1
    (crash,) = await store.crashes("SHOP/prod", "2.0", 10)
    assert crash["sample"] == REPORT


async def test_absent_symcaches_are_looked_for_again_and_their_notes_bounded(tmp_path: Path) -> None:
    objects = CountingStore(tmp_path / "objects")
    symbols = Symbolicator(objects, recheck_seconds=0)
    await symbols.retrace("SHOP/prod", "2.0", REPORT)
    await symbols.retrace("SHOP/prod", "2.0", REPORT)
    assert objects.stats == 2  # the recheck is due at once

    apple = dsyms.AppleSymbols(objects, recheck_seconds=3600, max_notes=3)
    for n in range(5):
        assert await apple.symcache("SHOP/prod", str(uuid.UUID(int=n))) is None
    assert len(apple._missing) == 3


def test_the_symcache_cache_is_bounded_by_count_and_bytes() -> None:
    cache = SymCacheCache(size=2, max_bytes=100)
    a, b, c = object(), object(), object()
    cache.put(("app", "a"), a, 10)  # type: ignore[arg-type]
    cache.put(("app", "b"), b, 10)  # type: ignore[arg-type]
    assert cache.get(("app", "a")) is a  # used: b is now the oldest
    cache.put(("app", "c"), c, 10)  # type: ignore[arg-type]
    assert len(cache) == 2 and cache.get(("app", "b")) is None and cache.get(("app", "a")) is a
    cache.put(("app", "d"), object(), 95)  # type: ignore[arg-type]
    assert len(cache) == 1 and cache.get(("app", "d")) is not None  # over the bytes: the others went


async def test_a_damaged_symcache_leaves_the_report_as_sent(tmp_path: Path) -> None:
    objects = CountingStore(tmp_path / "objects")
    debug_id = "4c4c44e2-5555-3144-a1b2-0123456789ab"
    await objects.put(dsyms.AppleSymbols.key("SHOP/prod", debug_id), b"not a symcache")
    symbols = Symbolicator(objects, recheck_seconds=3600)
    assert await symbols.retrace("SHOP/prod", "2.0", REPORT) is None
    assert await symbols.retrace("SHOP/prod", "2.0", REPORT) is None
    assert objects.stats == 1  # noted: not read again on every crash


def test_long_lines_are_not_read_as_frames() -> None:
    huge = "1   ShopApp " + " " * 500_000 + "0x1 0x1 + 1"
    assert not is_report(huge) and wanted(huge) == ([], [], "")


def test_a_hostile_report_is_read_in_linear_time() -> None:
    """A crash's stack is any device's text (at most 64 KiB of properties): reading it as a report must cost
    milliseconds, whatever its lines are made of."""
    frame = "1   ShopApp   0x0000000104a1b2c4 0x104a14000 + 29380"
    shapes = [
        "0x1 - 0x2 " + " " * 1000,  # an image line without its <uuid>
        "0x1 - 0x2 (" + "(" * 1000,
        "1 a" + " " * 1000,  # a frame line without its address
        "1 a" + " 0x1" * 250,
    ]
    for shape in shapes:
        report = "\n".join([frame] + [shape] * (64_000 // len(shape)))
        started = time.perf_counter()
        assert is_report(report)
        wanted(report)
        dsyms.symbolicated(report, {}, {})
        assert time.perf_counter() - started < 0.5, shape[:20]
    # 1 000 frames and 1 000 images: each frame's image found by bisection, not by a scan of all.
    lines = [f"{n % 10}   App   0x{0x1000 + n:x} 0x1000 + {n}" for n in range(1000)]
    lines += [
        f"0x{0x100000 + 0x1000 * n:x} - 0x{0x100FFF + 0x1000 * n:x} Lib{n} arm64 <{uuid.UUID(int=n)}>"
        for n in range(1000)
    ]
    started = time.perf_counter()
    assert wanted("\n".join(lines)) == ([], [], "")
    assert time.perf_counter() - started < 0.5


def flagged_utf8(data: bytes, name: bytes, replaced: bytes) -> bytes:
    """A zip whose entry names are flagged UTF-8 (bit 11) and `name` made `replaced`."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = out.find(sig)
        struct.pack_into("<H", out, i + at, struct.unpack_from("<H", out, i + at)[0] | 0x800)
    return bytes(out).replace(name, replaced)


def damaged(method: int) -> bytes:
    """A zip of one DWARF entry compressed with `method`, its compressed data damaged."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        z.writestr(DWARF, macho_without_dwarf() * 100)
    data = bytearray(out.getvalue())
    start = 30 + len(DWARF)
    data[start + 4 : start + 30] = bytes(0xFF ^ b for b in data[start + 4 : start + 30])
    return bytes(data)


def directory_moved(data: bytes, by: int) -> bytes:
    """A zip whose end record places its central directory `by` bytes further: every entry's data before 0."""
    out = bytearray(data)
    i = out.rfind(b"PK\x05\x06")
    struct.pack_into("<I", out, i + 16, struct.unpack_from("<I", out, i + 16)[0] + by)
    return bytes(out)


@pytest.mark.parametrize(
    "body",
    [
        flagged_utf8(zipped({DWARF: macho_without_dwarf()}), DWARF.encode(), DWARF.encode()[:-1] + b"\xff"),
        directory_moved(zipped({DWARF: macho_without_dwarf()}), 1000),
        zipped({DWARF: macho_without_dwarf()}).replace(DWARF.encode(), b"\x00" * len(DWARF)),
        damaged(zipfile.ZIP_BZIP2),
        damaged(zipfile.ZIP_LZMA),
    ],
    ids=["name-not-utf8", "data-before-the-file", "name-of-nul", "bzip2-damaged", "lzma-damaged"],
)
async def test_a_damaged_zip_is_a_400_not_a_500(tmp_path: Path, body: bytes) -> None:
    status, detail = await put(tmp_path, body)
    assert status == 400 and "not a readable zip" in detail, detail


async def test_too_many_entries_are_refused_before_the_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dsyms, "MAX_ZIP_ENTRIES", 5)
    body = zipped({f"ShopApp.app.dSYM/f{i}": b"" for i in range(6)})
    wide = zipped({f"ShopApp.app.dSYM/{'f' * 900}{i}": b"" for i in range(2)})  # few entries, a large directory
    monkeypatch.setattr(dsyms, "MAX_DIRECTORY_BYTES", 1000)

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("the directory was read: its entries are all in memory by now")

    monkeypatch.setattr(dsyms.zipfile, "ZipFile", unread)
    for refused in (body, wide):
        status, detail = await put(tmp_path, refused)
        assert status == 400 and "at most 5 entries" in detail, detail


class FakeArchive:
    """symbolic's Archive as read_upload sees it: `per_file` objects with debug information, SymCaches of
    `symcache_bytes` each."""

    per_file, symcache_bytes, opened = 1, 10, 0

    class Object:
        file_format, features, arch = "macho", frozenset({"debug"}), "arm64"

        def __init__(self, n: int, size: int):
            self.debug_id, self.size = str(uuid.UUID(int=n)), size

        def make_symcache(self) -> "FakeArchive.Object":
            return self

        def open_stream(self) -> io.BytesIO:
            return io.BytesIO(bytes(self.size))

    @classmethod
    def open(cls, path: str) -> type["FakeArchive"]:
        cls.opened += 1
        return cls

    @classmethod
    def iter_objects(cls) -> list["FakeArchive.Object"]:
        start = cls.opened * 1000
        return [cls.Object(start + n, cls.symcache_bytes) for n in range(cls.per_file)]


async def test_an_upload_is_bounded_in_objects_and_symcache_bytes_and_versions_are_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dsyms, "Archive", FakeArchive)
    # Two universal DWARF files of 20 slices each: 40 objects in one upload, over its bound of 32.
    monkeypatch.setattr(FakeArchive, "per_file", 20)
    two = zipped({DWARF: b"x", "Widget.framework.dSYM/Contents/Resources/DWARF/Widget": b"x"})
    status, detail = await put(tmp_path, two)
    assert status == 400 and "more than 32 objects" in detail, detail
    # A SymCache over what the consumer loads would be stored and never used.
    monkeypatch.setattr(FakeArchive, "per_file", 1)
    monkeypatch.setattr(dsyms, "MAX_SYMCACHE_BYTES", 100)
    monkeypatch.setattr(FakeArchive, "symcache_bytes", 101)
    status, detail = await put(tmp_path, macho_without_dwarf(), URL + "?name=ShopApp")
    assert status == 400 and "SymCache of more than 100 bytes" in detail, detail
    monkeypatch.setattr(FakeArchive, "symcache_bytes", 100)
    # A version that is no object key's segment is refused before anything is stored.
    for n, version in enumerate(["..", ".hidden"]):
        status, detail = await put(tmp_path / f"v{n}", macho_without_dwarf(), f"{URL}?version={version}&name=ShopApp")
        assert status == 400 and "letters, digits" in detail, detail
        assert not (tmp_path / f"v{n}" / "objects").exists()
    status, text = await put(tmp_path, macho_without_dwarf(), URL + "?version=2.0&name=ShopApp")
    assert status == 200 and json.loads(text)["dsyms"][0]["name"] == "ShopApp"


async def test_a_mapping_version_that_is_no_key_segment_is_a_400(tmp_path: Path) -> None:
    mapping = b"com.shop.Cart -> a.a:\n    7:7:int total(int) -> a\n"
    for version in ("...", ".x"):
        status, detail = await put(tmp_path, mapping, f"/v1/apps/SHOP/prod/versions/{version}/mapping")
        assert status == 400 and "letters, digits" in detail, detail


async def test_the_symcaches_one_report_holds_stay_within_the_cache_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report may name 16 images: their SymCaches, held together while it is read, are bounded like the
    cache (1 GiB), not 16 times the largest SymCache."""
    objects = CountingStore(tmp_path / "objects")
    ids = [str(uuid.UUID(int=n + 1)) for n in range(3)]
    for debug_id in ids:
        await objects.put(dsyms.AppleSymbols.key("SHOP/prod", debug_id), bytes(100))
    monkeypatch.setattr(dsyms.SymCache, "from_bytes", staticmethod(lambda data: object()))
    held: list[int] = []
    monkeypatch.setattr(dsyms, "symbolicated", lambda report, caches, by_name: held.append(len(caches)))
    apple = dsyms.AppleSymbols(objects)
    apple.cache.max_bytes = 250
    frames = [f"{n}   Lib{n}   0x{0x10000 * (n + 1) + 8:x} 0x{0x10000 * (n + 1):x} + 8" for n in range(3)]
    images = [f"0x{0x10000 * (n + 1):x} - 0x{0x10000 * (n + 1) + 0xFFFF:x} Lib{n} arm64 <{ids[n]}>" for n in range(3)]
    await apple.symbolicate("SHOP/prod", "2.0", "\n".join([*frames, "", "Binary Images:", *images]))
    assert held == [2]  # 200 of 250 bytes: the third image's frames stay as sent


async def test_a_version_or_name_too_long_is_the_documented_400(tmp_path: Path) -> None:
    status, detail = await put(tmp_path, macho_without_dwarf(), URL + "?version=" + "1" * 65)
    assert status == 400 and "at most 64" in detail, detail
    status, detail = await put(tmp_path, macho_without_dwarf(), URL + "?name=" + "a" * 256)
    assert status == 400 and "at most 255" in detail, detail
