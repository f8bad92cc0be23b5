"""Symbolication of Apple crash reports with the app's dSYMs (Sentry's `symbolic`: Mach-O, DWARF, SymCaches).

A dSYM is uploaded through the query API (`PUT /v1/apps/{app}/{ws}/dsyms`): a zipped `.dSYM` bundle, as Xcode
and fastlane produce it, or a bare Mach-O file with its DWARF (fat files too). Each object (one per arch) with
debug information becomes a SymCache in the object store, keyed by the app and its debug id (the Mach-O
UUID). A report names the debug ids of its images in its `Binary Images:` section; each frame of an image
with a SymCache then reads `function (file:line)`, inlined functions first, as Apple's tools print them:

    3   MyApp   0x0000000104a1b2c4 0x104a14000 + 29380
    3   MyApp   0x0000000104a1b2c4 checked_total (Cart.c:7) [inlined]
    3   MyApp   0x0000000104a1b2c4 price_total (Cart.c:15)

A report without its `Binary Images:` (SDKs often send only the crashed thread) is read by image name, when
the dSYM was uploaded with `?version=` for the version that crashed.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import lzma
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from symbolic.debuginfo import Archive
from symbolic.exceptions import SymbolicError
from symbolic.symcache import SymCache

from ..stores import ObjectStore

log = logging.getLogger("mpaas.analytics")

MAX_UPLOAD_BYTES = 512 << 20  # as sent: a large app's zipped dSYMs are a few hundred MiB
MAX_ZIP_ENTRIES = 10_000
MAX_DIRECTORY_BYTES = MAX_ZIP_ENTRIES * 1024  # the zip's central directory: a real entry is ~200 bytes
MAX_UNZIPPED_BYTES = 2 << 30
MAX_OBJECTS = 32  # archs and frameworks in one upload
MAX_SYMCACHE_BYTES = 512 << 20
MAX_IMAGES_PER_REPORT = 16  # distinct debug ids a report may have loaded
MAX_FRAMES_PER_REPORT = 1_000
MAX_IMAGES_PER_LIST = 2_000  # a report's Binary Images: a few hundred in practice
LINE_CHARS = 1_024  # longer lines are no frame or image: never matched (the patterns' work grows with length)
MAX_VERSION_ENTRIES = 256  # dSYMs named for one version

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Mach-O (32 and 64 bits, both byte orders) and fat / universal files.
_MACHO_MAGIC = {
    b"\xfe\xed\xfa\xce",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"\xbe\xba\xfe\xca",
    b"\xca\xfe\xba\xbf",
}
_DWARF_DIR = "/Contents/Resources/DWARF/"
_VERSION = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}")  # no leading ".": ".." is no object key
_NAME = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")

_UUID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
# 0x104a14000 - 0x104a1ffff MyApp arm64  <uuid> /path/MyApp  (older reports: "+MyApp"; macOS: "(1.0 - 1)")
# Possessive: a line a device sends must cost linear time (lazy groups next to \s* backtrack cubically).
_IMAGE = re.compile(
    rf"^\s*+(0x[0-9a-fA-F]{{1,16}}+)\s*+-\s*+(0x[0-9a-fA-F]{{1,16}}+)\s++((?:[^<]|<(?!{_UUID}>))*+)<({_UUID})>"
)
# 3   MyApp   0x0000000104a1b2c4 0x104a14000 + 29380   (or "MyApp + 29380"): read by tokens, see _frame_parts
_TOKEN = re.compile(r"\S+")
_HEX = re.compile(r"0x[0-9a-fA-F]{1,16}")
_NUMBER = re.compile(r"[0-9]{1,4}")
_OFFSET = re.compile(r"[0-9]{1,12}")
_CODE_TYPE = re.compile(r"^Code Type:\s+(\S+)", re.MULTILINE)
_ARCHS = {"arm64", "arm64e", "arm64_32", "armv7", "armv7s", "armv7k", "x86_64", "x86_64h", "i386"}
_CODE_TYPES = {"ARM-64": "arm64", "ARM64": "arm64", "ARM64E": "arm64e", "X86-64": "x86_64", "ARM": "armv7"}


class DsymError(ValueError):
    pass


@dataclass(frozen=True)
class DebugObject:
    debug_id: str
    arch: str
    name: str
    symcache: bytes


def debug_id(text: str) -> str | None:
    """A Mach-O UUID as symbolic names it (lower case, dashed); None for anything else."""
    try:
        return str(uuid.UUID(hex=text))
    except ValueError:
        return None


def read_upload(path: Path, work: Path, name: str = "") -> list[DebugObject]:
    """The objects with debug information in an uploaded file (a zipped .dSYM bundle or a Mach-O file), as
    SymCaches. `work` is a scratch folder for what the zip holds; `name` names a bare Mach-O file's image."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic in _ZIP_MAGIC:
        found = _unzipped(path, work)
        if not found:
            raise DsymError("no .dSYM bundle in the zip (no <name>.dSYM/Contents/Resources/DWARF/<name>)")
    elif magic in _MACHO_MAGIC:
        found = [(path, name)]
    else:
        raise DsymError("neither a zipped .dSYM bundle nor a Mach-O file")
    objects: list[DebugObject] = []
    for file, image in found:
        objects += _objects(file, image, MAX_OBJECTS - len(objects))  # the bound is the upload's, not a file's
    if not objects:
        raise DsymError("no DWARF debug information: upload the .dSYM, not the app's (stripped) binary")
    return objects


def _objects(file: Path, image: str, room: int) -> list[DebugObject]:
    try:
        archive = Archive.open(str(file))
        out: list[DebugObject] = []
        for obj in archive.iter_objects():
            if obj.file_format != "macho" or "debug" not in obj.features:
                continue
            if len(out) >= room:
                raise DsymError(f"more than {MAX_OBJECTS} objects with debug information in one upload")
            data = obj.make_symcache().open_stream().read(MAX_SYMCACHE_BYTES + 1)
            if len(data) > MAX_SYMCACHE_BYTES:  # it would be stored, and never loaded to symbolicate
                raise DsymError(f"{image or obj.arch}: a SymCache of more than {MAX_SYMCACHE_BYTES} bytes")
            out.append(DebugObject(obj.debug_id, obj.arch, image, data))
        return out
    except SymbolicError as e:
        raise DsymError(f"{image or 'the file'}: not a readable Mach-O file: {str(e)[:200]}") from None


def _unzipped(path: Path, work: Path) -> list[tuple[Path, str]]:
    """The DWARF files of the .dSYM bundles in a zip, extracted under `work` by index (never by their names)."""
    try:
        _check_directory(path)
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise DsymError(f"a zip of at most {MAX_ZIP_ENTRIES} entries")
            for entry in entries:
                _check_entry(entry)
            wanted = [e for e in entries if not e.is_dir() and _DWARF_DIR in "/" + e.filename]
            if not wanted:  # a zip of bare Mach-O files
                wanted = [e for e in entries if not e.is_dir() and _peek(z, e) in _MACHO_MAGIC]
            if len(wanted) > MAX_OBJECTS:
                raise DsymError(f"at most {MAX_OBJECTS} debug files in one upload")
            if sum(e.file_size for e in wanted) > MAX_UNZIPPED_BYTES:
                raise DsymError(f"the zip's debug files inflate to more than {MAX_UNZIPPED_BYTES} bytes")
            out = []
            left = MAX_UNZIPPED_BYTES  # counted as it inflates, whatever the headers say
            for index, entry in enumerate(wanted):
                target = work / f"object-{index}"
                with z.open(entry) as src, target.open("wb") as dst:
                    while chunk := _inflated(src, 1 << 20):
                        left -= len(chunk)
                        if left < 0:
                            raise DsymError(f"the zip's debug files inflate to more than {MAX_UNZIPPED_BYTES} bytes")
                        dst.write(chunk)
                out.append((target, PurePosixPath(entry.filename).name))
            return out
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        RuntimeError,
        NotImplementedError,
        EOFError,
        UnicodeDecodeError,  # a name flagged UTF-8 that is not
    ) as e:
        raise DsymError(f"not a readable zip: {str(e)[:200]}") from None


def _check_directory(path: Path) -> None:
    """Refuse a zip of too many entries before zipfile reads its whole central directory into memory: a 512 MiB
    upload of tiny entries is 11 million of them, gigabytes as ZipInfos."""
    with path.open("rb") as f:
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]
    if end and (
        end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ZIP_ENTRIES  # type: ignore[attr-defined]
        or end[zipfile._ECD_SIZE] > MAX_DIRECTORY_BYTES  # type: ignore[attr-defined]
    ):
        raise DsymError(f"a zip of at most {MAX_ZIP_ENTRIES} entries")


def _check_entry(entry: zipfile.ZipInfo) -> None:
    name = entry.filename
    if not name:  # zipfile cuts a name at its first NUL
        raise DsymError("not a readable zip: an entry without a name")
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or ".." in parts
        or ":" in parts[0]
        or any(ord(c) < 32 for c in name)
    ):
        raise DsymError(f"zip entry {name[:200]!r}: absolute, parent or drive paths are refused")
    if entry.header_offset < 0:  # its directory points before the file: a seek zipfile would fail with OSError
        raise DsymError(f"zip entry {name[:200]!r}: not a readable zip (its data is before the file's start)")
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise DsymError(f"zip entry {name[:200]!r}: symbolic links are refused")


def _peek(z: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bytes:
    with z.open(entry) as f:
        return _inflated(f, 4)


def _inflated(src: IO[bytes], size: int) -> bytes:
    try:
        return src.read(size)
    except (OSError, lzma.LZMAError) as e:  # bzip2's and LZMA's damaged streams; writes are not in here
        raise DsymError(f"not a readable zip: {str(e)[:200]}") from None


@dataclass(frozen=True)
class _Image:
    start: int
    end: int
    name: str
    arch: str
    debug_id: str


def _images(report: str) -> list[_Image]:
    out: list[_Image] = []
    for line in report.splitlines():
        m = _IMAGE.match(line) if len(line) <= LINE_CHARS else None
        if m is None:
            continue
        start, end, middle, uuid_text = m.groups()
        middle = middle.rstrip()
        cut = middle.rfind("(")
        if middle.endswith(")") and cut >= 0 and ")" not in middle[cut + 1 : -1]:  # "(1.0 - 1)": a macOS version
            middle = middle[:cut]
        words = middle.lstrip("+").split()
        arch = words.pop() if len(words) > 1 and words[-1] in _ARCHS else ""
        found = debug_id(uuid_text)
        if found is not None:
            out.append(_Image(int(start, 16), int(end, 16), " ".join(words), arch, found))
            if len(out) >= MAX_IMAGES_PER_LIST:
                break
    return out


def _image_at(images: list[_Image], starts: list[int], address: int) -> _Image | None:
    """The image (of `images`, sorted by start) an address is in: a bisection, as a report may list 2 000
    images and 1 000 frames (loaded images never overlap)."""
    i = bisect.bisect_right(starts, address) - 1
    return images[i] if i >= 0 and address <= images[i].end else None


def _by_start(images: list[_Image]) -> tuple[list[_Image], list[int]]:
    ordered = sorted(images, key=lambda x: x.start)
    return ordered, [x.start for x in ordered]


@dataclass(frozen=True)
class _Frame:
    line: int  # index in the report
    lead: str  # number, image and address, as sent
    number: int
    image: str
    address: int
    base: int | None
    offset: int


def _frame_parts(line: str) -> tuple[str, str, str, str, str | None, str | None, str] | None:
    """(lead, number, image, address, base, word, offset) of a frame line; None for any other line.

    The last four tokens are address, base (or a word), "+" and offset, the first the frame's number, the
    image all between: linear in the line, where a pattern with a lazy image name backtracks."""
    if len(line) > LINE_CHARS:
        return None
    tokens = list(_TOKEN.finditer(line))
    if len(tokens) < 6:
        return None
    number, address, where, plus, offset = tokens[0], tokens[-4], tokens[-3], tokens[-2], tokens[-1]
    if not (
        _NUMBER.fullmatch(number[0]) and _HEX.fullmatch(address[0]) and plus[0] == "+" and _OFFSET.fullmatch(offset[0])
    ):
        return None
    base = where[0] if _HEX.fullmatch(where[0]) else None
    image = line[tokens[1].start() : tokens[-5].end()]
    return line[: where.start()], number[0], image, address[0], base, None if base else where[0], offset[0]


def _frames(lines: list[str]) -> list[_Frame]:
    out = []
    for i, line in enumerate(lines):
        parts = _frame_parts(line)
        if parts is None:
            continue
        lead, number, image, address, base, word, offset = parts
        if word is not None and word != image:  # "main + 44": already a symbol, not an image's offset
            continue
        out.append(_Frame(i, lead, int(number), image, int(address, 16), int(base, 16) if base else None, int(offset)))
        if len(out) >= MAX_FRAMES_PER_REPORT:
            break
    return out


def is_report(stack: str) -> bool:
    """Whether a stack is an Apple crash report (it has a frame with an address in an image)."""
    lines = stack.splitlines()[:MAX_FRAMES_PER_REPORT]
    return any(_frame_parts(line) is not None for line in lines)


def symbolicated(report: str, caches: dict[str, SymCache], by_name: dict[str, str]) -> str | None:
    """The report with each frame of an image in `caches` (by debug id) symbolicated; None when none is.

    `by_name` gives an image's debug id by name, for a report without its `Binary Images:`."""
    lines = report.splitlines()
    images = _images(report)
    ordered, starts = _by_start(images)
    changed = False
    for frame in reversed(_frames(lines)):  # from the end: expanded frames do not move the ones before
        image = _image_at(ordered, starts, frame.address)
        if image is not None:
            found, offset = image.debug_id, frame.address - image.start
        elif not images and frame.image in by_name:
            found, offset = by_name[frame.image], frame.offset
        else:
            continue
        cache = caches.get(found)
        if cache is None:
            continue
        # Below the top of a thread, an address is where the call returns to: its call is the byte before.
        matches = cache.lookup(offset if frame.number == 0 or offset == 0 else offset - 1)
        if not matches:
            continue
        expanded = [
            f"{frame.lead}{_where(m)}" + (" [inlined]" if i < len(matches) - 1 else "") for i, m in enumerate(matches)
        ]
        lines[frame.line : frame.line + 1] = expanded
        changed = True
    return "\n".join(lines) if changed else None


def _where(location: Any) -> str:
    file = PurePosixPath(location.full_path).name if location.full_path else ""
    if file and location.line:
        return f"{location.symbol} ({file}:{location.line})"
    return f"{location.symbol} ({file})" if file else str(location.symbol)


def wanted(report: str) -> tuple[list[str], list[str], str]:
    """(debug ids of the images a report's frames are in, image names of its frames when it has no
    `Binary Images:`, its arch from `Code Type:` or "")."""
    lines = report.splitlines()
    images = _images(report)
    frames = _frames(lines)
    ordered, starts = _by_start(images)
    ids: list[str] = []
    for frame in frames:
        image = _image_at(ordered, starts, frame.address)
        if image is not None and image.debug_id not in ids:
            ids.append(image.debug_id)
            if len(ids) >= MAX_IMAGES_PER_REPORT:
                break
    names = [] if images else sorted({f.image for f in frames})
    code = _CODE_TYPE.search(report)
    arch = _CODE_TYPES.get(code.group(1).upper(), "") if code else ""
    return ids[:MAX_IMAGES_PER_REPORT], names[:MAX_IMAGES_PER_REPORT], arch


class SymCacheCache:
    """The SymCaches used last, by (app, debug id); None notes one looked for and absent, until `until`."""

    def __init__(self, size: int = 16, max_bytes: int = 1 << 30):
        self.size, self.max_bytes = size, max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[SymCache, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str]) -> SymCache | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def size_of(self, key: tuple[str, str]) -> int:
        found = self._items.get(key)
        return found[1] if found is not None else 0

    def put(self, key: tuple[str, str], cache: SymCache, size: int) -> None:
        self.drop(key)
        self._items[key] = (cache, size)
        self._bytes += size
        while len(self._items) > self.size or (self._bytes > self.max_bytes and len(self._items) > 1):
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def drop(self, key: tuple[str, str]) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]

    def __len__(self) -> int:
        return len(self._items)


class AppleSymbols:
    """SymCaches by app and debug id in the object store, a few loaded; absent ones looked for again later."""

    def __init__(
        self, objects: ObjectStore, *, cache_size: int = 16, recheck_seconds: float = 60.0, max_notes: int = 10_000
    ):
        self.objects = objects
        self.cache = SymCacheCache(cache_size)
        self.recheck_seconds = recheck_seconds
        self.max_notes = max_notes
        self._missing: dict[tuple[str, str], float] = {}  # (app, debug id) checked and absent: when to look again
        self._versions: OrderedDict[tuple[str, str], tuple[float, list[dict[str, str]]]] = OrderedDict()
        self._bucket = False

    @staticmethod
    def key(app: str, debug_id: str) -> str:
        return f"analytics/dsyms/{app}/{debug_id}.symcache"

    @staticmethod
    def version_prefix(app: str, version: str) -> str:
        return f"analytics/dsyms/{app}/versions/{version}/"

    async def store(self, app: str, path: Path, *, version: str = "", name: str = "") -> list[dict[str, str]]:
        """Read an uploaded file and keep a SymCache per object with debug information; returns what was kept."""
        if version and not _VERSION.fullmatch(version):
            raise DsymError(f"version {version[:64]!r}: letters, digits and . _ + - only (not . first), at most 64")
        if name and (not _NAME.fullmatch(name) or name.startswith(".")):
            raise DsymError(f"name {name[:64]!r}: an image's file name, at most 255 characters")
        work = path.parent / "unzipped"
        work.mkdir(exist_ok=True)
        try:
            objects = await asyncio.to_thread(read_upload, path, work, name)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        if not self._bucket:
            await self.objects.ensure_bucket()
            self._bucket = True
        kept = []
        for obj in objects:
            await self.objects.put(self.key(app, obj.debug_id), obj.symcache)
            if version and obj.name:
                note = json.dumps({"name": obj.name, "arch": obj.arch, "debugId": obj.debug_id}).encode()
                await self.objects.put(f"{self.version_prefix(app, version)}{obj.debug_id}.json", note)
            self.cache.drop((app, obj.debug_id))
            self._missing.pop((app, obj.debug_id), None)
            kept.append({"debugId": obj.debug_id, "arch": obj.arch, "name": obj.name})
        if version:
            self._versions.pop((app, version), None)
        return kept

    async def symcache(self, app: str, debug_id: str, room: int = MAX_SYMCACHE_BYTES) -> SymCache | None:
        """The image's SymCache; None when there is none, or when it is larger than `room` bytes."""
        found = self.cache.get((app, debug_id))
        if found is not None:
            return found if self.cache.size_of((app, debug_id)) <= room else None
        if time.monotonic() < self._missing.get((app, debug_id), 0.0):
            return None
        key = self.key(app, debug_id)
        info = await self.objects.stat(key)
        if info is None or info.size > MAX_SYMCACHE_BYTES:
            self._note_missing((app, debug_id))
            return None
        if info.size > room:
            return None
        data = await self.objects.get(key)
        try:
            cache = await asyncio.to_thread(SymCache.from_bytes, data)
        except SymbolicError as e:  # written by another version of symbolic, or damaged: upload it again
            log.warning("SymCache %s unreadable, looked for again later: %s", key, e)
            self._note_missing((app, debug_id))
            return None
        self.cache.put((app, debug_id), cache, len(data))
        return cache

    def _note_missing(self, key: tuple[str, str]) -> None:
        if len(self._missing) >= self.max_notes:  # ids devices name are endless: the oldest notes go
            self._missing.pop(next(iter(self._missing)))
        self._missing[key] = time.monotonic() + self.recheck_seconds

    async def named(self, app: str, version: str) -> list[dict[str, str]]:
        """The dSYMs uploaded for a version: name, arch and debug id of each."""
        if not version or not _VERSION.fullmatch(version):
            return []
        found = self._versions.get((app, version))
        if found is not None and time.monotonic() < found[0]:
            return found[1]
        notes = []
        for key in (await self.objects.list(self.version_prefix(app, version)))[:MAX_VERSION_ENTRIES]:
            try:
                note = json.loads(await self.objects.get(key))
                notes.append({k: str(note[k]) for k in ("name", "arch", "debugId")})
            except (KeyError, ValueError, TypeError):
                continue  # gone meanwhile, or not one of ours
        self._versions[(app, version)] = (time.monotonic() + self.recheck_seconds, notes)
        while len(self._versions) > 64:
            self._versions.popitem(last=False)
        return notes

    async def symbolicate(self, app: str, version: str, report: str) -> str | None:
        """The report with its frames symbolicated, or None when no frame's image has a dSYM here."""
        ids, names, arch = wanted(report)
        by_name: dict[str, str] = {}
        if names:
            notes = [n for n in await self.named(app, version) if n["name"] in names]
            for name in names:
                candidates = [n for n in notes if n["name"] == name]
                if len(candidates) > 1:  # a fat build: the report's arch says which
                    candidates = [n for n in candidates if n["arch"] == arch]
                if len(candidates) == 1:
                    by_name[name] = candidates[0]["debugId"]
            ids = list(by_name.values())
        caches = {}
        held = 0  # a report holds its SymCaches until it is read: together within the cache's bound
        for found in ids:
            cache = await self.symcache(app, found, max(self.cache.max_bytes - held, 0))
            if cache is not None:
                caches[found] = cache
                held += self.cache.size_of((app, found))
        if not caches:
            return None
        return await asyncio.to_thread(symbolicated, report, caches, by_name)
