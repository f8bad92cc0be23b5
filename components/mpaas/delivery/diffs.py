"""Diff packages: what a client that runs an earlier release downloads instead of the whole new package
(docs/delivery.md, "Diff packages").

Two formats, by resource type:

- `hdiffpatch`: a binary diff of the whole file, HDiffPatch's compressed diff with zstd (app packages, hot
  fixes, mini programs, resources). Chosen by measurement (hack/bench/delivery_diffs.py): on a pair of 50 MB
  packages it is a little smaller than bsdiff's and built in about a third of the time and memory, and its
  patcher is a small C library with Android and iOS builds that can patch while streaming;
- `files`: for H5 offline packages (zips whose files the client keeps unpacked): a zip of the files added or
  changed, plus `mpaas-diff.json` naming the files deleted and every file of the new package with its sha256,
  so the client checks the tree it ends with;
- `expo-bsdiff`: for Expo updates (hot fixes whose packages are `expo export` dists): a bsdiff (BSDIFF40) patch
  of the launch bundle for the task's platform, the format Expo's clients apply (`A-IM: bsdiff`, expo.py).

The operator builds them (`build_to_store`, run in a process of its own by `python -m mpaas.delivery.diffs`)
and lists them in the DeliveryTask's status; the delivery component offers one to a client that says what it
runs. A diff is stored under a key made of the two packages' sha256, so a rebuild finds it already there.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ..api.delivery import Package, ResourceType
from ..stores import ObjectStore, open_objectstore
from .packages import bucket_of, verify

HDIFFPATCH = "hdiffpatch"
FILES = "files"
EXPO_BSDIFF = "expo-bsdiff"
FORMATS = (HDIFFPATCH, FILES, EXPO_BSDIFF)
MANIFEST = "mpaas-diff.json"
ZSTD_LEVEL = 19  # the patch is built once and downloaded by many: its size matters more than its build time
ZSTD_WINDOW_LOG = 23  # 8 MiB: what a patcher must hold to decompress, at most
MAX_ENTRIES = 100_000  # files in an H5 offline zip
MAX_INFLATED = 4 << 30  # bytes of a zip's files together
KEY_PREFIX = "delivery/diffs"
SUFFIX = {HDIFFPATCH: "hdiff", FILES: "zip", EXPO_BSDIFF: "bsdiff"}
EXPO_PLATFORMS = {"Android": "android", "IOS": "ios"}


class DiffError(Exception):
    """The diff cannot be built from these packages; says why."""


def format_for(resource_type: str) -> str:
    return FILES if resource_type == ResourceType.H5_OFFLINE else HDIFFPATCH


def key_of(to_sha256: str, from_sha256: str, fmt: str, platform: str = "") -> str:
    """The diff's object key. An Expo patch is of one platform's bundle: one dist holds both, and an Android
    and an IOS task may release the same dist."""
    if fmt == EXPO_BSDIFF:
        return f"{KEY_PREFIX}/{to_sha256}/{from_sha256}.{EXPO_PLATFORMS.get(platform, 'none')}.{SUFFIX[fmt]}"
    return f"{KEY_PREFIX}/{to_sha256}/{from_sha256}.{SUFFIX[fmt]}"


def memory_needed(fmt: str, old_bytes: int, new_bytes: int) -> int:
    """About what a build holds at its peak (hack/bench/delivery_diffs.py), plus the interpreter's own."""
    factor = 17 if fmt == EXPO_BSDIFF else 5  # bsdiff's suffix array; HDiffPatch's
    return old_bytes * factor + new_bytes * 2 + (96 << 20)


# --- binary ---------------------------------------------------------------------------------------------


def build_binary(old: bytes, new: bytes) -> bytes:
    import hdiffpatch  # loaded by the builder's process alone: the servers never build

    config = hdiffpatch.ZStdConfig(level=ZSTD_LEVEL, window=ZSTD_WINDOW_LOG)
    return bytes(hdiffpatch.diff(old, new, config, validate=False))


def apply_binary(old: bytes, patch: bytes) -> bytes:
    import hdiffpatch

    return bytes(hdiffpatch.apply(old, patch))


def build_bsdiff(old: bytes, new: bytes) -> bytes:
    import bsdiff4

    return bytes(bsdiff4.diff(old, new))


def apply_bsdiff(old: bytes, patch: bytes) -> bytes:
    import bsdiff4

    return bytes(bsdiff4.patch(old, patch))


def expo_launch_bundle(path: Path, platform: str, max_bytes: int) -> bytes | None:
    """The launch bundle for `platform` (the task's, e.g. Android) of an `expo export` dist zip; None when the
    zip is not one, or has no bundle for it. DiffError for a bundle over `max_bytes` unpacked."""
    expo = EXPO_PLATFORMS.get(platform)
    try:
        with zipfile.ZipFile(path) as z:
            names = {i.filename: i for i in z.infolist()}
            meta = names.get("metadata.json")
            if expo is None or meta is None or meta.file_size > 1 << 20:
                return None
            bundle = json.loads(z.read(meta))["fileMetadata"][expo]["bundle"]
            info = names.get(bundle) if isinstance(bundle, str) else None
            if info is None:
                return None
            if info.file_size > max_bytes:
                raise DiffError(
                    f"the {platform} bundle has {info.file_size} bytes, more than the {max_bytes} a diff is built "
                    "from (MPAAS_DIFF_MAX_BYTES)"
                )
            return z.read(info)
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, RecursionError, NotImplementedError):
        return None


# --- files (H5 offline) ---------------------------------------------------------------------------------


def _entries(z: zipfile.ZipFile, what: str) -> dict[str, zipfile.ZipInfo]:
    """The zip's files by name; DiffError for one no client could unpack safely."""
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise DiffError(f"the {what} package has more than {MAX_ENTRIES} entries")
    if sum(i.file_size for i in infos) > MAX_INFLATED:
        raise DiffError(f"the {what} package's files are larger than {MAX_INFLATED} bytes together")
    files: dict[str, zipfile.ZipInfo] = {}
    folded: dict[str, str] = {}  # case-folded name -> name: iOS and macOS storage ignore case
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG):  # a symlink, a device: a client unpacking over its tree must not
            raise DiffError(f"the {what} package's {name[:100]!r} is not a regular file")
        segments = name.split("/")
        if (
            name == MANIFEST
            or "\\" in name
            or ":" in name
            or any(s in ("", ".", "..") for s in segments)
            or not name.isprintable()
        ):
            raise DiffError(f"the {what} package has a file named {name[:100]!r}, which no client may unpack")
        if name.casefold() in folded:
            raise DiffError(f"the {what} package has {name[:100]!r} twice (names differing in case are one file)")
        folded[name.casefold()] = name
        files[name] = info
    folders = {"/".join(n.split("/")[:i]).casefold() for n in files for i in range(1, n.count("/") + 1)}
    for name in files:
        if name.casefold() in folders:
            raise DiffError(f"the {what} package has {name[:100]!r} as a file and as a folder")
    return files


def _digest(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    h = hashlib.sha256()
    with z.open(info) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def build_files(old: Path, new: Path, out: Path, *, from_sha256: str, to_sha256: str) -> None:
    """Write to `out` the zip of the files of `new` that `old` lacks or has with other bytes, and the manifest."""
    try:
        with zipfile.ZipFile(old) as zo, zipfile.ZipFile(new) as zn, zipfile.ZipFile(out, "w") as zd:
            before, after = _entries(zo, "earlier"), _entries(zn, "new")
            # A file whose size and CRC-32 match is read to compare its sha256: a CRC collision must not
            # leave a client with the old bytes.
            had = {n: (i.file_size, i.CRC) for n, i in before.items()}
            sums: dict[str, str] = {}
            for name, info in after.items():
                digest = _digest(zn, info)
                sums[name] = digest
                if had.get(name) == (info.file_size, info.CRC) and _digest(zo, before[name]) == digest:
                    continue
                target = zipfile.ZipInfo(name, date_time=info.date_time)
                target.compress_type = zipfile.ZIP_DEFLATED
                target.external_attr = (stat.S_IFREG | 0o644) << 16  # a plain file, whatever the package said
                with zn.open(info) as src, zd.open(target, "w", force_zip64=info.file_size >= 1 << 31) as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            manifest = {
                "format": FILES,
                "from": from_sha256,
                "to": to_sha256,
                "deleted": sorted(set(before) - set(after)),
                "files": dict(sorted(sums.items())),
            }
            zd.writestr(MANIFEST, json.dumps(manifest, separators=(",", ":")), zipfile.ZIP_DEFLATED)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise DiffError(f"a package is not a readable zip: {e}") from None


def apply_files(old: Path, patch: Path) -> dict[str, bytes]:
    """The files of the new package, from the earlier package and a `files` diff, each checked against the
    manifest's sha256 (what a client does; used by the tests and the reference clients)."""
    with zipfile.ZipFile(old) as zo, zipfile.ZipFile(patch) as zd:
        manifest = json.loads(zd.read(MANIFEST))
        files = {n: zo.read(n) for n in _entries(zo, "earlier") if n not in set(manifest["deleted"])}
        for name in _entries_of_diff(zd):
            files[name] = zd.read(name)
    sums: dict[str, str] = manifest["files"]
    if set(files) != set(sums):
        raise DiffError("the files after patching are not the new package's")
    for name, data in files.items():
        if hashlib.sha256(data).hexdigest() != sums[name]:
            raise DiffError(f"{name} does not have the new package's sha256 after patching")
    return files


def _entries_of_diff(z: zipfile.ZipFile) -> list[str]:
    return [i.filename for i in z.infolist() if not i.is_dir() and i.filename != MANIFEST]


# --- building into the object store (the operator's builder process) -------------------------------------


@dataclass(frozen=True)
class Built:
    """A diff in the object store, as the DeliveryTask's status lists it."""

    format: str
    uri: str
    sha256: str
    size_bytes: int
    seconds: float  # build time; 0 when it was found already built

    def entry(self, source: Package, task: str) -> dict[str, object]:
        return {
            "fromVersion": source.version,
            "fromSha256": source.sha256,
            "fromTask": task,
            "format": self.format,
            "uri": self.uri,
            "sha256": self.sha256,
            "sizeBytes": self.size_bytes,
        }


async def _fetch(package: Package, objects: ObjectStore, folder: Path, name: str) -> Path:
    path = folder / name
    with path.open("wb") as f:
        problem = await verify(package, objects, sink=f.write)
    if problem is not None:
        raise DiffError(problem)
    return path


def too_big(fmt: str, old_bytes: int, new_bytes: int, max_memory: int) -> str | None:
    """Why a build of this format and these sizes would take more memory than it may; None when it fits."""
    need = memory_needed(fmt, old_bytes, new_bytes)
    if need <= max_memory:
        return None
    return (
        f"a {fmt} diff of these packages needs about {need >> 20} MiB, more than the {max_memory >> 20} MiB a "
        "build may take (MPAAS_DIFF_MAX_MEMORY)"
    )


def _fits(fmt: str, old_bytes: int, new_bytes: int, max_memory: int) -> None:
    problem = too_big(fmt, old_bytes, new_bytes, max_memory)
    if problem:
        raise DiffError(problem)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            yield chunk


async def build_to_store(
    objects: ObjectStore,
    source: Package,
    target: Package,
    fmt: str,
    *,
    max_bytes: int,
    max_memory: int = 1 << 40,
    platform: str = "",
    resource_type: str = "",
    work_dir: str | None = None,
) -> Built:
    """The diff from `source` to `target` in the store: found there, or built and stored. `fmt` is the resource
    type's (`format_for`); for a Hotfix of two Expo dists it is an `expo-bsdiff` of their `platform` bundles."""
    if fmt not in FORMATS:
        raise DiffError(f"unknown diff format {fmt!r}")
    expo = fmt == HDIFFPATCH and resource_type == ResourceType.HOTFIX and platform in EXPO_PLATFORMS
    candidates = [fmt, EXPO_BSDIFF] if expo else [fmt]
    for candidate in candidates:  # built before, by this operator or another replica
        key = key_of(target.sha256, source.sha256, candidate, platform)
        found = await objects.stat(key)
        if found is not None and found.sha256:
            return Built(candidate, f"s3://{bucket_of(objects)}/{key}", found.sha256, found.size, 0.0)
    for p in (source, target):
        if p.size_bytes > max_bytes:
            raise DiffError(
                f"the package of version {p.version} has {p.size_bytes} bytes, more than the {max_bytes} a diff is "
                "built from (MPAAS_DIFF_MAX_BYTES)"
            )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mpaas-diff-", dir=work_dir) as tmp:
        folder = Path(tmp)
        old = await _fetch(source, objects, folder, "old")
        new = await _fetch(target, objects, folder, "new")
        out = folder / "diff"
        bundles = (
            (expo_launch_bundle(old, platform, max_bytes), expo_launch_bundle(new, platform, max_bytes))
            if expo
            else (None, None)
        )
        if bundles[0] is not None and bundles[1] is not None:
            fmt = EXPO_BSDIFF
            _fits(fmt, len(bundles[0]), len(bundles[1]), max_memory)
            out.write_bytes(build_bsdiff(bundles[0], bundles[1]))
        elif fmt == HDIFFPATCH:
            _fits(fmt, source.size_bytes, target.size_bytes, max_memory)
            out.write_bytes(build_binary(old.read_bytes(), new.read_bytes()))
        else:
            build_files(old, new, out, from_sha256=source.sha256, to_sha256=target.sha256)
        key = key_of(target.sha256, source.sha256, fmt, platform)
        h = hashlib.sha256()
        with out.open("rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        info = await objects.put_stream(key, _chunks(out), sha256=h.hexdigest())
    return Built(fmt, f"s3://{bucket_of(objects)}/{key}", info.sha256, info.size, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """One build, as the operator runs it: packages as JSON on the command line, the store from the
    environment (MPAAS_OBJECTS_URL, MPAAS_OBJECTS_ACCESS_KEY, MPAAS_OBJECTS_SECRET_KEY); prints the result
    as one JSON line, or the reason it failed on stderr with exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m mpaas.delivery.diffs", description="Build one diff package.")
    parser.add_argument("--source", required=True, help="the earlier package, as the DeliveryTask's spec.package")
    parser.add_argument("--target", required=True, help="the new package")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--platform", default="", help="the task's platform (Android, IOS): an Expo dist's bundle")
    parser.add_argument("--resource-type", default="", help="the task's resourceType (Hotfix: maybe an Expo update)")
    parser.add_argument("--max-memory", type=int, default=0, help="bytes this process may allocate (RLIMIT_DATA)")
    parser.add_argument("--max-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    url = os.environ.get("MPAAS_OBJECTS_URL", "")
    if not url:
        print("no object store is configured (MPAAS_OBJECTS_URL)", file=sys.stderr)
        return 2
    objects = open_objectstore(
        url,
        access_key=os.environ.get("MPAAS_OBJECTS_ACCESS_KEY", ""),
        secret_key=os.environ.get("MPAAS_OBJECTS_SECRET_KEY", ""),
    )
    source = Package.model_validate_json(args.source)
    target = Package.model_validate_json(args.target)
    if args.max_memory:  # past it an allocation fails here, alone, instead of the OOM killer taking the operator
        resource.setrlimit(resource.RLIMIT_DATA, (args.max_memory, args.max_memory))
    try:
        built = asyncio.run(
            build_to_store(
                objects,
                source,
                target,
                args.format,
                max_bytes=args.max_bytes,
                max_memory=args.max_memory or 1 << 40,
                platform=args.platform,
                resource_type=args.resource_type,
            )
        )
    except DiffError as e:
        print(str(e), file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"the build needed more than the {args.max_memory >> 20} MiB it may take (MPAAS_DIFF_MAX_MEMORY)",
            file=sys.stderr,
        )
        return 2
    print(
        json.dumps(
            {
                "format": built.format,
                "uri": built.uri,
                "sha256": built.sha256,
                "sizeBytes": built.size_bytes,
                "seconds": round(built.seconds, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
