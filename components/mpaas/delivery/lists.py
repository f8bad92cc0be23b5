"""Whitelists too long for a resource, held in the object store (`whitelist.deviceIdsObject`, `userIdsObject`):
a text object with one id per line. Read when a task naming one changes and every `refresh_seconds` after (a
read costs a HEAD unless the object changed), parsed into a set; a list that cannot be read or does not parse
keeps its last good version (none at first), and the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Gauge

from ..stores import ObjectStore

log = logging.getLogger("mpaas.delivery")

MAX_BYTES = 256 << 20
MAX_IDS = 10_000_000
MAX_ID_CHARS = 200

LIST_FAILURES = Counter("mpaas_delivery_list_failures_total", "Whitelists in the object store not read or not parsed")
LIST_IDS = Gauge("mpaas_delivery_list_ids", "Ids in the whitelists read from the object store, all lists")

EMPTY: frozenset[str] = frozenset()


class ListError(ValueError):
    """A list that does not parse (the message says where)."""


def parse(data: bytes) -> frozenset[str]:
    """One id per line; blank lines and lines starting with # are skipped; surrounding spaces dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ListError(f"not UTF-8 at byte {e.start}") from None
    ids = set()
    for n, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if len(item) > MAX_ID_CHARS or not item.isprintable():
            raise ListError(f"line {n}: an id is at most {MAX_ID_CHARS} printable characters")
        ids.add(item)
        if len(ids) > MAX_IDS:
            raise ListError(f"more than {MAX_IDS} ids")
    return frozenset(ids)


class IdLists:
    def __init__(self, objects: ObjectStore | None, refresh_seconds: float = 60.0):
        self.objects = objects
        self.refresh_seconds = refresh_seconds
        self._sets: dict[str, frozenset[str]] = {}
        self._versions: dict[str, str] = {}  # key -> the sha256 (or size) of the version held
        self._wanted: set[str] = set()
        self._changed = asyncio.Event()

    def get(self, key: str) -> frozenset[str]:
        return self._sets.get(key, EMPTY)

    def want(self, keys: set[str]) -> None:
        """The keys the live tasks name: new ones are read at once, the others dropped."""
        for gone in set(self._sets) - keys:
            del self._sets[gone]
            self._versions.pop(gone, None)
        if keys != self._wanted:
            self._wanted = set(keys)
            self._changed.set()

    async def run(self) -> None:
        """Keep the wanted lists read (a background task of the component)."""
        while True:
            started = time.monotonic()
            for key in sorted(self._wanted):
                await self.refresh(key)
            LIST_IDS.set(sum(len(s) for s in self._sets.values()))
            self._changed.clear()
            left = self.refresh_seconds - (time.monotonic() - started)
            try:
                await asyncio.wait_for(self._changed.wait(), max(left, 0.1))
            except TimeoutError:
                pass

    async def refresh(self, key: str) -> None:
        if self.objects is None:
            self._fail(key, "no object store is configured (MPAAS_OBJECTS_URL)")
            return
        try:
            info = await self.objects.stat(key)
            if info is None:
                self._fail(key, "does not exist")
                return
            version = info.sha256 or f"{info.size}"
            if self._versions.get(key) == version and key in self._sets:
                return
            if info.size > MAX_BYTES:
                self._fail(key, f"is larger than {MAX_BYTES} bytes")
                return
            data = await self.objects.get(key)
            ids = await asyncio.to_thread(parse, data)
        except ListError as e:
            self._fail(key, f"does not parse: {e}")
            return
        except Exception as e:  # the store away: the last good version stays
            self._fail(key, f"could not be read: {e!r}")
            return
        self._sets[key] = ids
        self._versions[key] = version
        log.info("whitelist %s: %d ids", key, len(ids))

    def _fail(self, key: str, why: str) -> None:
        LIST_FAILURES.inc()
        kept = "keeping its last good version" if key in self._sets else "no version of it counts yet"
        log.warning("whitelist %s %s; %s", key, why, kept)
