"""Symbolication of crash stacks before grouping: Android (JVM) stacks with the R8 / ProGuard mapping of the
app version that crashed, Apple crash reports with the dSYMs of their images (dsyms.py).

A mapping is uploaded per app version through the query API (`PUT /v1/apps/{app}/{ws}/versions/{v}/mapping`)
and kept in the object store; the real-time consumer loads it when a crash of that version arrives (a few
kept parsed in memory) and retraces the stack before grouping it, so groups and samples carry the original
class, method, file and line names. dSYMs are uploaded per app (`PUT /v1/apps/{app}/{ws}/dsyms`) and found
by the debug ids a report names.

The mapping format (ProGuard's `-printmapping`, R8's `mapping.txt`):

    com.shop.pay.PriceCalculator -> com.shop.a.a:
    # {"fileName":"PriceCalculator.java","id":"sourceFile"}
        int[] prices -> a
        7:7:int total(int) -> a
        11:13:int discounted(int):20:22 -> b     (R8: the original lines after the signature)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..stores import ObjectStore
from .dsyms import AppleSymbols, is_report

MAX_MAPPING_BYTES = 64 << 20  # a mapping of a large app is tens of MiB

_CLASS = re.compile(r"^(\S+) -> (\S+):$")
_METHOD = re.compile(r"^\s+(?:(\d{1,9}):(\d{1,9}):)?(\S+) ([^\s(]+)\(([^)]*)\)(?::(\d{1,9})(?::(\d{1,9}))?)? -> (\S+)$")
_FRAME = re.compile(r"^(\s*at\s+)([\w$.]+)\.([\w$<>]+)\(([^:()]*)(?::(\d{1,9}))?\)(.*)$")


class MappingError(ValueError):
    pass


@dataclass
class _Method:
    name: str
    start: int | None  # obfuscated line range, None: no line information
    end: int | None
    original_start: int | None
    original_end: int | None

    def line(self, obfuscated: int) -> int:
        if self.original_start is None or self.start is None:
            return obfuscated
        if self.original_end is None or self.original_end == self.original_start:
            return self.original_start
        return self.original_start + (obfuscated - self.start)


@dataclass
class _Class:
    name: str
    file: str
    methods: dict[str, list[_Method]] = field(default_factory=dict)


class Mapping:
    """A parsed mapping: obfuscated class -> original class with its methods by obfuscated name."""

    def __init__(self, classes: dict[str, _Class]):
        self.classes = classes

    @classmethod
    def parse(cls, text: str) -> Mapping:
        try:
            return cls._parse(text)
        except MappingError:
            raise
        except (ValueError, RecursionError) as e:  # whatever else a hostile file finds: still "not a mapping"
            raise MappingError(f"not a mapping: {str(e)[:100]}") from None

    @classmethod
    def _parse(cls, text: str) -> Mapping:
        classes: dict[str, _Class] = {}
        current: _Class | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                if current is not None and '"sourceFile"' in line:
                    try:
                        current.file = str(json.loads(line.lstrip("# ")).get("fileName") or current.file)
                    except (ValueError, RecursionError, AttributeError):
                        pass
                continue
            if not line[0].isspace():
                m = _CLASS.match(line)
                if m is None:
                    raise MappingError(f"line {number}: not a class line: {line[:120]!r}")
                original, obfuscated = m.groups()
                simple = original.rsplit(".", 1)[-1].split("$", 1)[0]
                current = classes[obfuscated] = _Class(original, f"{simple}.java")
                continue
            if current is None:
                raise MappingError(f"line {number}: a member before any class")
            m = _METHOD.match(line)
            if m is None:
                continue  # a field: nothing in a stack refers to it
            start, end, _ret, name, _args, ostart, oend, obf = m.groups()
            method = _Method(
                name,
                int(start) if start else None,
                int(end) if end else None,
                int(ostart) if ostart else None,
                int(oend) if oend else None,
            )
            current.methods.setdefault(obf, []).append(method)
        return cls(classes)

    def frame(self, line: str) -> str:
        """One stack line, retraced when it is a JVM frame of a mapped class; else as it is."""
        m = _FRAME.match(line)
        if m is None:
            return line
        lead, cls_name, method_name, _file, number, rest = m.groups()
        c = self.classes.get(cls_name)
        if c is None:
            return line
        lineno = int(number) if number else None
        candidates = c.methods.get(method_name, [])
        if lineno is not None:
            ranged = [x for x in candidates if x.start is not None and x.end is not None and x.start <= lineno <= x.end]
            candidates = ranged or [x for x in candidates if x.start is None]
        method = candidates[0] if candidates else None
        name = method.name if method else method_name
        where = f"{c.file}:{method.line(lineno) if method else lineno}" if lineno is not None else c.file
        return f"{lead}{c.name}.{name}({where}){rest}"

    def retrace(self, stack: str) -> str:
        lines = stack.splitlines()
        out = []
        for i, line in enumerate(lines):
            if i == 0 or line.lstrip().startswith("Caused by:"):  # the exception's class may be obfuscated too
                out.append(self._classes_in(line))
            else:
                out.append(self.frame(line))
        return "\n".join(out)

    def _classes_in(self, line: str) -> str:
        head, sep, message = line.partition(":")
        words = head.split(" ")
        return " ".join(self.classes[w].name if w in self.classes else w for w in words) + sep + message


class MappingCache:
    """The parsed mappings used last (they are large), by (app, version)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._items: OrderedDict[tuple[str, str], Mapping | None] = OrderedDict()

    def get(self, key: tuple[str, str]) -> tuple[bool, Mapping | None]:
        if key not in self._items:
            return False, None
        self._items.move_to_end(key)
        return True, self._items[key]

    def put(self, key: tuple[str, str], mapping: Mapping | None) -> None:
        self._items[key] = mapping
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


_VERSION = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}")  # no leading ".": ".." is no object key


class Symbolicator:
    """Mappings by app and version, and dSYMs by app and debug id: stored in the object store, read on first
    use, a few kept."""

    def __init__(
        self, objects: ObjectStore, *, cache_size: int = 8, recheck_seconds: float = 60.0, symcaches: int = 16
    ):
        self.objects = objects
        self.cache = MappingCache(cache_size)
        self.apple = AppleSymbols(objects, cache_size=symcaches, recheck_seconds=recheck_seconds)
        self.recheck_seconds = recheck_seconds
        self._missing: dict[tuple[str, str], float] = {}  # checked and absent: when to look again
        self._bucket = False

    @staticmethod
    def key(app: str, version: str) -> str | None:
        """The mapping's object key; None for a version the key could not hold as it is."""
        return f"analytics/mappings/{app}/{version}.txt" if _VERSION.fullmatch(version) else None

    async def store(self, app: str, version: str, data: bytes) -> int:
        """Check and keep a mapping; returns how many classes it maps."""
        key = self.key(app, version)
        if key is None:
            raise MappingError(f"version {version[:64]!r}: letters, digits and . _ + - only (not . first), at most 64")
        mapping = await asyncio.to_thread(Mapping.parse, data.decode("utf-8", "replace"))
        if not mapping.classes:
            raise MappingError("no class mapped: is this an R8 / ProGuard mapping.txt?")
        if not self._bucket:
            await self.objects.ensure_bucket()
            self._bucket = True
        await self.objects.put(key, data, content_type="text/plain")
        self.cache.put((app, version), mapping)
        self._missing.pop((app, version), None)
        return len(mapping.classes)

    async def mapping(self, app: str, version: str) -> Mapping | None:
        known, mapping = self.cache.get((app, version))
        if known:
            return mapping
        key = self.key(app, version)
        if key is None or time.monotonic() < self._missing.get((app, version), 0.0):
            return None
        info = await self.objects.stat(key)
        if info is None or info.size > MAX_MAPPING_BYTES:
            if len(self._missing) >= 10_000:  # versions devices name are endless: the oldest notes go
                self._missing.pop(next(iter(self._missing)))
            self._missing[(app, version)] = time.monotonic() + self.recheck_seconds
            return None
        data = await self.objects.get(key)
        mapping = await asyncio.to_thread(Mapping.parse, data.decode("utf-8", "replace"))
        self.cache.put((app, version), mapping)
        return mapping

    async def retrace(self, app: str, version: str, stack: str) -> str | None:
        """The stack in original names: an Apple crash report with the dSYMs of its images, any other stack
        with the version's mapping; None when there is nothing to read it with."""
        if is_report(stack):
            return await self.apple.symbolicate(app, version, stack)
        mapping = await self.mapping(app, version) if version else None
        return mapping.retrace(stack) if mapping is not None else None
