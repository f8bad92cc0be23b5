"""Diff packages: size and build time of a binary diff between two 50 MB releases, by diff engine.

    .venv/bin/python hack/bench/delivery_diffs.py [--mb 50] [--engines hdiffpatch-zstd,bsdiff4,...]

Two pairs of packages, made from a fixed seed so every run compares the same bytes:

- `bundle`: an uncompressed app bundle (a JavaScript or Hermes bundle, an H5 or mini-program file): code-like
  text and binary tables; the new release edits 2 % of it in small scattered changes, inserts 1 MB and drops
  512 KiB;
- `apk`: a zip as APKs and IPAs are: deflated code and resources plus stored (already compressed) media; the
  new release changes one code file in a few places (so its whole deflate stream changes), changes 5 % of
  the resources and media files, adds and removes a few.

Each engine builds the diff old -> new in a process of its own (peak memory from its rusage), the patch is
applied back and compared with the new file. Prints diff size as a share of the full package, build time,
peak memory of the build and of the apply, and each engine's figures against bsdiff4's (the format most
mobile patchers speak). "platform" is what the operator builds (mpaas.delivery.diffs). Needs the engines
(`.venv/bin/pip install bsdiff4 detools zstandard`; hdiffpatch is the platform's own); an engine that is not
installed is skipped with a line that says so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

# "platform": what the operator builds (mpaas.delivery.diffs: HDiffPatch, zstd level 19, an 8 MiB window).
ENGINES = ["platform", "hdiffpatch-zstd", "hdiffpatch-lzma", "bsdiff4", "detools", "zstd-patch-from"]

WORDS = (
    b"function return const let var if else for while this props state render export import from default "
    b"async await new class extends super null undefined true false Object Array String Number Promise map "
    b"filter reduce push length key value index item data result error callback options config module require"
).split()


_names = random.Random(0)
IDENTS = [
    bytes(_names.choice(b"abcdefghijklmnopqrstuvwxyz_$") for _ in range(_names.randint(2, 12))) for _ in range(4000)
]
PUNCT = [b"(", b")", b"{", b"}", b";", b",", b".", b"=", b"=>", b"+", b"[", b"]", b":", b"&&", b"||", b"!"]


def code_like(rng: random.Random, n: int) -> bytes:
    """Text that compresses about as a minified bundle does (~4x)."""
    out = bytearray()
    idents, punct = IDENTS, PUNCT
    while len(out) < n:
        r = rng.random()
        if r < 0.35:
            out += rng.choice(WORDS)
        elif r < 0.7:
            out += rng.choice(idents)
        elif r < 0.95:
            out += rng.choice(punct)
        else:
            out += str(rng.randint(0, 1 << 20)).encode()
        out += b" " if rng.random() < 0.3 else b""
    return bytes(out[:n])


def edited(rng: random.Random, data: bytes, share: float, insert: int, drop: int) -> bytes:
    """`data` with small edits over `share` of it, `insert` new bytes and `drop` bytes removed."""
    edits = int(len(data) * share / 24)
    spots = sorted(rng.sample(range(0, len(data) - 64, 64), edits))
    dropped = rng.randrange(0, len(data) - drop)
    inserted = rng.randrange(0, len(data))
    out = bytearray()
    at = 0
    for spot in spots:  # pieces in order: one pass, no quadratic copying
        if dropped <= spot < dropped + drop:
            continue
        out += data[at:spot]
        n = rng.randint(4, 44)
        out += code_like(rng, rng.randint(n // 2, n * 2))
        at = spot + n
    out += data[at:]
    shift = len(out) - len(data)
    d = max(0, min(dropped + shift, len(out) - drop))
    del out[d : d + drop]
    i = min(inserted, len(out))
    out[i:i] = code_like(rng, insert // 2) + rng.randbytes(insert - insert // 2)
    return bytes(out)


def bundle_pair(mb: int) -> tuple[bytes, bytes]:
    rng = random.Random(1)
    size = mb << 20
    old = code_like(rng, size * 7 // 8) + rng.randbytes(size // 8)  # text, then binary tables
    return old, edited(rng, old, 0.02, 1 << 20, 512 << 10)


def apk_pair(mb: int) -> tuple[bytes, bytes]:
    rng = random.Random(2)
    size = mb << 20
    files: dict[str, tuple[bytes, int]] = {"classes.dex": (code_like(rng, size // 3), zipfile.ZIP_DEFLATED)}
    for i in range(400):  # resources: small text files, deflated
        files[f"res/layout/l{i}.xml"] = (code_like(rng, rng.randint(2_000, 30_000)), zipfile.ZIP_DEFLATED)
    used = sum(len(v[0]) for v in files.values()) // 4  # deflated, about a quarter
    i = 0
    while used < size:  # media: already compressed, stored
        n = rng.randint(20_000, 600_000)
        files[f"assets/img/i{i}.webp"] = (rng.randbytes(n), zipfile.ZIP_STORED)
        used += n
        i += 1

    def pack(entries: dict[str, tuple[bytes, int]]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                info.compress_type = entries[name][1]
                z.writestr(info, entries[name][0])
        return out.getvalue()

    new = dict(files)
    new["classes.dex"] = (edited(rng, files["classes.dex"][0], 0.002, 64 << 10, 16 << 10), zipfile.ZIP_DEFLATED)
    names = [n for n in files if n != "classes.dex"]
    for name in rng.sample(names, len(names) // 20):
        data, how = files[name]
        new[name] = (
            edited(rng, data, 0.05, 256, 128) if how == zipfile.ZIP_DEFLATED else rng.randbytes(len(data)),
            how,
        )
    for name in rng.sample(names, 10):
        new.pop(name, None)
    for j in range(10):
        new[f"assets/img/new{j}.webp"] = (rng.randbytes(rng.randint(20_000, 300_000)), zipfile.ZIP_STORED)
    return pack(files), pack(new)


# --- one engine, in a process of its own ---


def build(engine: str, old: bytes, new: bytes) -> bytes:
    if engine == "platform":
        from mpaas.delivery.diffs import build_binary

        return build_binary(old, new)
    if engine.startswith("hdiffpatch"):
        import hdiffpatch

        kind = hdiffpatch.COMPRESSION_ZSTD if engine.endswith("zstd") else hdiffpatch.COMPRESSION_LZMA
        return bytes(hdiffpatch.diff(old, new, kind, validate=False))
    if engine == "bsdiff4":
        import bsdiff4

        return bytes(bsdiff4.diff(old, new))
    if engine == "detools":
        import detools

        out = io.BytesIO()
        detools.create_patch(io.BytesIO(old), io.BytesIO(new), out, compression="lzma")
        return out.getvalue()
    if engine == "zstd-patch-from":
        import zstandard

        window = max(old.__len__(), new.__len__()).bit_length() + 1
        params = zstandard.ZstdCompressionParameters.from_level(19, window_log=window, enable_ldm=True)
        d = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        return zstandard.ZstdCompressor(dict_data=d, compression_params=params).compress(new)
    raise ValueError(engine)


def apply(engine: str, old: bytes, patch: bytes) -> bytes:
    if engine == "platform":
        from mpaas.delivery.diffs import apply_binary

        return apply_binary(old, patch)
    if engine.startswith("hdiffpatch"):
        import hdiffpatch

        return bytes(hdiffpatch.apply(old, patch))
    if engine == "bsdiff4":
        import bsdiff4

        return bytes(bsdiff4.patch(old, patch))
    if engine == "detools":
        import detools

        out = io.BytesIO()
        detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), out)
        return out.getvalue()
    if engine == "zstd-patch-from":
        import zstandard

        d = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        return zstandard.ZstdDecompressor(dict_data=d, max_window_size=1 << 31).decompress(patch)
    raise ValueError(engine)


def child(step: str, engine: str, folder: Path) -> int:
    old = (folder / "old").read_bytes()
    started = time.perf_counter()
    if step == "build":
        (folder / f"{engine}.patch").write_bytes(build(engine, old, (folder / "new").read_bytes()))
    else:
        got = apply(engine, old, (folder / f"{engine}.patch").read_bytes())
        if got != (folder / "new").read_bytes():
            print(json.dumps({"error": "the patch does not give the new file"}))
            return 1
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


def run_child(step: str, engine: str, folder: Path) -> tuple[dict[str, float], int]:
    """Runs one step in a fresh process; its result and its peak RSS in bytes (from wait4's rusage)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", step, engine, str(folder)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and not out:
        return {"error": f"exit {proc.returncode}"}, usage.ru_maxrss * 1024  # type: ignore[dict-item]
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss * 1024


def installed(engine: str) -> bool:
    module = {
        "platform": "mpaas.delivery.diffs",
        "bsdiff4": "bsdiff4",
        "detools": "detools",
        "zstd-patch-from": "zstandard",
    }.get(engine, "hdiffpatch")
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="size of each package, MiB")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--pairs", default="bundle,apk")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in ENGINES:
            parser.error(f"unknown engine {e}: one of {', '.join(ENGINES)}")
    makers = {"bundle": bundle_pair, "apk": apk_pair}
    with tempfile.TemporaryDirectory(prefix="mpaas-diffs-") as tmp:
        for pair in args.pairs.split(","):
            folder = Path(tmp) / pair
            folder.mkdir()
            old, new = makers[pair](args.mb)
            (folder / "old").write_bytes(old)
            (folder / "new").write_bytes(new)
            print(f"\n{pair}: old {len(old) / 2**20:.1f} MiB, new {len(new) / 2**20:.1f} MiB", flush=True)
            print(
                f"{'engine':<16} {'diff MiB':>9} {'/ full':>7} {'build s':>8} {'build MiB':>10} "
                f"{'apply s':>8} {'apply MiB':>10}   vs bsdiff4 (size, time)"
            )
            rows: dict[str, tuple[float, float]] = {}
            for engine in engines:
                if not installed(engine):
                    print(f"{engine:<16} not installed")
                    continue
                built, build_rss = run_child("build", engine, folder)
                if "error" in built:
                    print(f"{engine:<16} build failed: {built['error']}")
                    continue
                applied, apply_rss = run_child("apply", engine, folder)
                if "error" in applied:
                    print(f"{engine:<16} apply failed: {applied['error']}")
                    continue
                size = (folder / f"{engine}.patch").stat().st_size
                rows[engine] = (size, built["seconds"])
                base = rows.get("bsdiff4")
                versus = f"{size / base[0]:.2f}x, {built['seconds'] / base[1]:.2f}x" if base else "-"
                print(
                    f"{engine:<16} {size / 2**20:9.2f} {size / len(new):7.1%} {built['seconds']:8.1f} "
                    f"{build_rss / 2**20:10.0f} {applied['seconds']:8.2f} {apply_rss / 2**20:10.0f}   {versus}",
                    flush=True,
                )
            if "bsdiff4" in rows:
                b = rows["bsdiff4"]
                for engine, (size, secs) in rows.items():
                    if engine != "bsdiff4":
                        print(f"  {engine}: diff size {size / b[0]:.2f} x bsdiff4's, build time {secs / b[1]:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
