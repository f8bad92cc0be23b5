"""iOS crash symbolication against a real dSYM: a small C program is compiled and linked for macOS on arm64
and x86_64 (zig's clang and Mach-O linker, from the `ziglang` package of the test extras), joined into a
universal binary (llvm-lipo) and its dSYM built by dsymutil from the debug map, as Xcode does. The zipped
dSYM goes up through the admin API; crash reports whose addresses are read from the binary's own
disassembly (llvm-objdump) must come out with the source's functions, files and lines."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from mpaas.analytics.crashes import group
from mpaas.analytics.query import create_query_app
from mpaas.analytics.realtime import MemoryAggregates, apply_records
from mpaas.analytics.symbols import Symbolicator
from mpaas.apps import AppDirectory
from mpaas.stores import LocalObjectStore

pytestmark = pytest.mark.component

# checked_total is always inlined into price_total: its abort() is one frame of two functions.
SOURCE = """\
#include <stdlib.h>

static inline __attribute__((always_inline)) int checked_total(const int *prices, int n) {
    int total = 0;
    for (int i = 0; i < n; i++) {
        if (prices[i] < 0) {
            abort(); /* crash site */
        }
        total += prices[i];
    }
    return total;
}

__attribute__((noinline)) int price_total(const int *prices, int n) {
    return checked_total(prices, n) + 1; /* inlined call */
}

__attribute__((noinline)) int checkout(int n) {
    static const int prices[4] = {3, -1, 4, 1};
    return price_total(prices, n) * 2; /* calls price_total */
}

int main(int argc, char **argv) {
    (void)argv;
    return checkout(argc + 3) + 1; /* calls checkout */
}
"""
APP = "ShopApp"
ARCHS = {"arm64": "aarch64", "x86_64": "x86_64"}  # Apple's names, zig's
CALLERS = {"price_total": "abort", "checkout": "price_total", "main": "checkout"}
LLVM_BINS = sorted(Path("/usr/lib").glob("llvm-*/bin"), reverse=True)


def tool(name: str) -> str:
    found = shutil.which(name) or next((str(d / name) for d in LLVM_BINS if (d / name).exists()), None)
    assert found, f"{name} is needed to build the test's dSYM (LLVM's tools: apt install llvm)"
    return found


def line_of(marker: str) -> int:
    return next(i for i, text in enumerate(SOURCE.splitlines(), 1) if marker in text)


def run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def return_addresses(binary: Path) -> dict[str, int]:
    """Function -> the address its call (CALLERS) returns to: the call's address and length, read from the
    thin binary's disassembly (vm addresses)."""
    out: dict[str, int] = {}
    function = ""
    for text in run(tool("llvm-objdump"), "-d", str(binary)).splitlines():
        if m := re.match(r"^(?:[0-9a-f]+ <)?_?(\w+)>?:$", text.strip()):
            function = m.group(1)
        elif m := re.match(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} ?)+)\s+(\w+)", text):
            address, code, mnemonic = m.groups()
            if function in CALLERS and function not in out and mnemonic in ("bl", "call", "callq"):
                out[function] = int(address, 16) + len(code.split())
    assert set(out) == set(CALLERS), f"calls not found in the disassembly of {binary.name}: {out}"
    return out


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The universal binary, its dSYM (zipped as Xcode's archives have it), debug ids and return addresses."""
    try:
        import ziglang  # noqa: F401
    except ImportError:
        pytest.fail("the ziglang package (pyproject.toml's test extras) is needed to build the test's dSYM")
    work = tmp_path_factory.mktemp("dsym")
    (work / "Cart.c").write_text(SOURCE)
    # dsymutil runs `lipo` to join the archs of a universal dSYM: LLVM's is the same tool.
    (work / "bin").mkdir()
    (work / "bin" / "lipo").symlink_to(tool("llvm-lipo"))
    env = {**os.environ, "PATH": f"{work / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    zig = [sys.executable, "-m", "ziglang", "cc"]
    slices = []
    for apple, zig_arch in ARCHS.items():
        target = f"{zig_arch}-macos"
        obj, exe = work / f"Cart-{apple}.o", work / f"{APP}-{apple}"
        # Compiled apart from the link, so the binary's debug map points at an object file that stays here.
        flags = ["-g", "-O1", "-fno-optimize-sibling-calls", "-fno-omit-frame-pointer"]
        run(*zig, "-target", target, *flags, "-c", "-o", str(obj), str(work / "Cart.c"), env=env)
        run(*zig, "-target", target, "-o", str(exe), str(obj), env=env)
        slices.append(str(exe))
    binary = work / APP
    run(tool("llvm-lipo"), "-create", *slices, "-output", str(binary))
    dsym = work / f"{APP}.app.dSYM"
    run(tool("dsymutil"), str(binary), "-o", str(dsym), env=env)
    dwarf = dsym / "Contents" / "Resources" / "DWARF" / APP
    assert dwarf.exists(), sorted(str(p) for p in dsym.rglob("*"))
    ids = {}
    for text in run(tool("llvm-dwarfdump"), "--uuid", str(binary)).splitlines():
        m = re.match(r"UUID: (\S+) \((\w+)\)", text)
        if m:
            ids[m.group(2)] = m.group(1).lower()
    assert set(ids) == set(ARCHS), ids
    archive = work / f"{APP}.app.dSYM.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(dsym.rglob("*")):
            z.write(path, path.relative_to(work))
    return {
        "binary": binary,
        "dwarf": dwarf,
        "zip": archive,
        "ids": ids,
        "calls": {arch: return_addresses(work / f"{APP}-{arch}") for arch in ARCHS},
    }


VMADDR = 0x1_0000_0000  # where the linker put __TEXT: report offsets are from there


def report(build: dict, arch: str, load: int, *, images: bool = True) -> str:
    """An Apple crash report of the abort, with the binary loaded at `load`: the crashed thread's frames as
    the device writes them (caller frames: return addresses), and the images' section."""
    calls = build["calls"][arch]
    lines = [
        "Incident Identifier: 6B5E2A2B-0C4D-4C8A-9E36-3C1A7E5B9F01",
        f"Code Type:           {'ARM-64' if arch == 'arm64' else 'X86-64'} (Native)",
        "Exception Type:  EXC_CRASH (SIGABRT)",
        "",
        "Thread 0 Crashed:",
        "0   libsystem_kernel.dylib        \t0x00000001bd5a9bbc 0x1bd5a1000 + 35772",
        "1   libsystem_c.dylib             \t0x000000019e2a3b44 abort + 180",
    ]
    for number, function in enumerate(["price_total", "checkout", "main"], 2):
        offset = calls[function] - VMADDR
        lines.append(f"{number}   {APP:<30}\t0x{load + offset:016x} 0x{load:x} + {offset}")
    if images:
        lines += [
            "",
            "Binary Images:",
            f"0x{load:x} - 0x{load + 0x7FFF:x} {APP} {arch}  <{build['ids'][arch].replace('-', '')}> "
            f"/private/var/containers/Bundle/Application/5C1D/{APP}.app/{APP}",
            "0x1bd5a1000 - 0x1bd5d8fff libsystem_kernel.dylib arm64e  <d36ce7d2a5a33b0d9b8b3ad1de21f5e3> "
            "/usr/lib/system/libsystem_kernel.dylib",
        ]
    return "\n".join(lines)


def symbolicated_frames(arch_load: int, build: dict, arch: str) -> list[str]:
    """The app's frames as they must read once symbolicated."""
    calls = build["calls"][arch]

    def frame(number: int, function: str, where: str) -> str:
        address = arch_load + calls[function] - VMADDR
        return f"{number}   {APP:<30}\t0x{address:016x} {where}"

    return [
        frame(2, "price_total", f"checked_total (Cart.c:{line_of('crash site')}) [inlined]"),
        frame(2, "price_total", f"price_total (Cart.c:{line_of('inlined call')})"),
        frame(3, "checkout", f"checkout (Cart.c:{line_of('calls price_total')})"),
        frame(4, "main", f"main (Cart.c:{line_of('calls checkout')})"),
    ]


def admin(symbols: Symbolicator | None) -> httpx.AsyncClient:
    class Live:
        current = AppDirectory({"SHOP/prod": ("SHOP", "prod")})

    app = create_query_app(Live(), MemoryAggregates(), symbols)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")


def crash_event(n: int, stack: str) -> bytes:
    return json.dumps(
        {
            "id": f"c{n}",
            "app": "SHOP",
            "workspace": "prod",
            "event": "crash",
            "device": f"d{n}",
            "ts": 1_796_000_000_000,
            "platform": "iOS",
            "version": "2.0",
            "props": {"stack": stack, "type": "EXC_CRASH (SIGABRT)"},
        }
    ).encode()


async def test_a_zipped_dsym_uploaded_symbolicates_crash_reports_of_both_archs(build: dict, tmp_path: Path) -> None:
    symbols = Symbolicator(LocalObjectStore(tmp_path / "objects"))
    async with admin(symbols) as client:
        r = await client.put("/v1/apps/SHOP/prod/dsyms", content=build["zip"].read_bytes())
    assert r.status_code == 200, r.text
    stored = {(d["debugId"], d["arch"], d["name"]) for d in r.json()["dsyms"]}
    assert stored == {(build["ids"][arch], arch, APP) for arch in ARCHS}

    sent = {
        "arm64": report(build, "arm64", 0x104A14000),
        "arm64, another slide": report(build, "arm64", 0x1022F0000),
        "x86_64": report(build, "x86_64", 0x10C3B1000),
    }
    store = MemoryAggregates()
    assert await apply_records(store, b"\n".join(crash_event(n, s) for n, s in enumerate(sent.values())), symbols) == 3
    (crash,) = await store.crashes("SHOP/prod", "2.0", 10)  # one bug, one group: whatever the slide or arch
    assert crash["count"] == 3

    for name, load, arch in [("arm64", 0x104A14000, "arm64"), ("x86_64", 0x10C3B1000, "x86_64")]:
        out = await symbols.retrace("SHOP/prod", "2.0", sent[name])
        assert out is not None, name
        lines = out.splitlines()
        assert lines[7:11] == symbolicated_frames(load, build, arch), "\n".join(lines)
        assert lines[5:7] == sent[name].splitlines()[5:7]  # system libraries: no dSYM here, as sent
        assert group(out, "EXC_CRASH (SIGABRT)").fingerprint == crash["fingerprint"]
    assert crash["sample"].splitlines()[7:11] == symbolicated_frames(0x104A14000, build, "arm64")


async def test_a_bare_dwarf_file_named_for_a_version_symbolicates_reports_without_binary_images(
    build: dict, tmp_path: Path
) -> None:
    symbols = Symbolicator(LocalObjectStore(tmp_path / "objects"))
    async with admin(symbols) as client:
        r = await client.put(f"/v1/apps/SHOP/prod/dsyms?version=2.0&name={APP}", content=build["dwarf"].read_bytes())
        assert r.status_code == 200, r.text
        assert {d["arch"] for d in r.json()["dsyms"]} == set(ARCHS)
        # The app's own binary carries a debug map, not DWARF: a clear refusal, not an empty symbolication.
        r = await client.put("/v1/apps/SHOP/prod/dsyms", content=build["binary"].read_bytes())
        assert r.status_code == 400 and "no DWARF debug information" in r.json()["detail"]

    for arch, load in [("arm64", 0x104A14000), ("x86_64", 0x10C3B1000)]:
        sent = report(build, arch, load, images=False)
        out = await symbols.retrace("SHOP/prod", "2.0", sent)  # the report's Code Type picks the slice
        assert out is not None and out.splitlines()[7:11] == symbolicated_frames(load, build, arch), out
    # Another version: which build the image was is unknown, so the frames stay as sent.
    assert await symbols.retrace("SHOP/prod", "1.0", report(build, "arm64", 0x104A14000, images=False)) is None


async def test_without_an_object_store_a_dsym_upload_gets_503(build: dict) -> None:
    async with admin(None) as client:
        r = await client.put("/v1/apps/SHOP/prod/dsyms", content=build["zip"].read_bytes())
    assert r.status_code == 503 and "MPAAS_OBJECTS_URL" in r.json()["detail"]
