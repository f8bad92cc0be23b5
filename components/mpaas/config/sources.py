"""Where resources come from: the Kubernetes API (list+watch) or a folder of YAML.

Both sources hand full snapshots of one kind to a callback; they never judge
the content (that is `LiveConfig`'s job) and never drop the last snapshot on
errors, so a component keeps serving what it had while the API server is away.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from ..kube import ApiError, Gone, KubeClient, ResourceType

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
Snapshot = dict[Key, dict[str, Any]]
OnChange = Callable[[str, Snapshot], None]


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, first: float = 0.2, cap: float = 10.0):
        self.first, self.cap, self.attempt = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


PROBE_SECONDS = 0.25


class KubeWatchSource:
    """List+watch of one resource type, resuming from the last resourceVersion.

    - re-lists on 410 Gone (the resourceVersion was compacted away);
    - backs off on connection and server errors and resumes without re-listing;
    - bookmarks keep the resume point fresh on quiet resources.
    """

    def __init__(
        self,
        client: KubeClient,
        rt: ResourceType,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout_seconds: int = 300,
    ):
        self.client, self.rt, self.kind = client, rt, kind
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self.watch_timeout_seconds = watch_timeout_seconds
        self.snapshot: Snapshot = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.relists = 0
        self.errors = 0

    async def _list(self) -> None:
        data = await self.client.list(
            self.rt, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        items = data.get("items") or []
        api_version = f"{self.rt.group}/{self.rt.version}" if self.rt.group else self.rt.version
        for item in items:  # list items come without kind/apiVersion
            item.setdefault("kind", self.kind)
            item.setdefault("apiVersion", api_version)
        self.snapshot = {object_key(o): o for o in items}
        self.resource_version = data["metadata"]["resourceVersion"]
        self.relists += 1

    async def run(self, on_change: OnChange) -> None:
        backoff = Backoff()
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                    on_change(self.kind, dict(self.snapshot))
                    self.synced.set()
                async for event in self.client.watch(
                    self.rt,
                    self.namespace,
                    self.resource_version or "",
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=self.watch_timeout_seconds,
                ):
                    backoff.reset()
                    obj = event["object"]
                    self.resource_version = obj.get("metadata", {}).get("resourceVersion") or self.resource_version
                    etype = event["type"]
                    if etype == "BOOKMARK":
                        continue
                    if etype == "DELETED":
                        self.snapshot.pop(object_key(obj), None)
                    else:
                        self.snapshot[object_key(obj)] = obj
                    on_change(self.kind, dict(self.snapshot))
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("watch of %s expired (410 Gone); re-listing", self.rt.plural)
                self.resource_version = None
            except (ApiError, OSError, ValueError, Exception) as e:
                self.errors += 1
                delay = backoff.next()
                log.warning("watch of %s failed (%s); retrying in at most %.1fs", self.rt.plural, e, delay)
                await self._wait_for_return(delay, unreachable=isinstance(e, (OSError, httpx.TransportError)))

    async def _wait_for_return(self, delay: float, *, unreachable: bool) -> None:
        """Back off, but when the API server was unreachable, resume as soon as it accepts connections again.

        The probe is one TCP connect every `PROBE_SECONDS` (shared by the watches of one client), so an edit
        made right after the server's return arrives within about a second, and a server that is away
        gets no requests meanwhile.
        """
        deadline = asyncio.get_running_loop().time() + delay
        was_away = False  # resume early only on a return: a server that answers TCP but fails gets the backoff
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(left, PROBE_SECONDS))
            if unreachable:
                if not await self.client.reachable():
                    was_away = True
                elif was_away:
                    return


class DirectorySource:
    """Resources from `*.yaml` files in a folder (recursively), re-read when files change."""

    def __init__(self, path: str | Path, kinds: set[str], *, interval: float = 0.25):
        self.path, self.kinds, self.interval = Path(path), kinds, interval
        self.synced = asyncio.Event()
        self._signature: tuple[Any, ...] | None = None
        self._last: dict[str, Snapshot] = {}
        self._file_docs: dict[Path, list[Any]] = {}  # last good parse of each file

    def _files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())

    def read(self) -> dict[str, Snapshot]:
        out: dict[str, Snapshot] = {k: {} for k in self.kinds}
        files = self._files()
        for f in files:
            try:
                docs = list(yaml.safe_load_all(f.read_text()))
                self._file_docs[f] = docs
            except (OSError, yaml.YAMLError) as e:
                # A half-saved or broken file must not unload what it held: keep its last good parse.
                log.warning("%s is not valid YAML, keeping its previous content: %s", f, e)
                docs = self._file_docs.get(f, [])
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") in self.kinds:
                    meta = doc.get("metadata")
                    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                        log.warning("%s: a %s without metadata.name, skipped", f, doc.get("kind"))
                        continue
                    meta.setdefault("namespace", "default")
                    out[doc["kind"]][object_key(doc)] = doc
        for gone in set(self._file_docs) - set(files):
            del self._file_docs[gone]
        return out

    def _stat(self) -> tuple[Any, ...]:
        sig = []
        for f in self._files():
            try:
                st = f.stat()
                sig.append((str(f), st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        return tuple(sig)

    def poll(self, on_change: OnChange) -> bool:
        sig = self._stat()
        if sig == self._signature:
            return False
        self._signature = sig
        snapshots = self.read()
        changed = False
        for kind, snap in snapshots.items():
            if self._last.get(kind) != snap:
                self._last[kind] = snap
                on_change(kind, snap)
                changed = True
        return changed

    async def run(self, on_change: OnChange) -> None:
        if not self.path.is_dir():
            raise FileNotFoundError(f"config directory {self.path} does not exist")
        while True:
            try:
                self.poll(on_change)
            except Exception:  # one odd file must not stop the folder from being watched
                log.exception("reading %s failed; keeping the current config", self.path)
            self.synced.set()
            await asyncio.sleep(self.interval)
