"""Live configuration from resources: the stand-in for mPaaS's dynamic config push.

A component declares the kinds it reads and a `compile` function that turns
valid resources into an immutable, request-ready config object. `LiveConfig`
feeds the sources' snapshots through validation and compilation and swaps the
result in atomically. Invalid resources and failed compilations keep the last
good config; the reason is logged, counted and kept in `errors`. With
`report_applied`, each swap also tells the component's own Pod which
generation of its resource the config in use was compiled from
(`mpaas.applied`), for the operator to put in that resource's status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge

from ..api import KINDS, ApiModel, InvalidResource
from ..applied import AppliedReporter, pod_from_env, worker_from_env
from ..kube import SECRETS, KubeClient, ResourceType
from ..service import ComponentSettings
from .sources import DirectorySource, Key, KubeWatchSource, Snapshot, object_key

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_RELOADS = Counter("mpaas_config_reloads_total", "Config compilations", ["component", "result"])
CONFIG_INVALID = Gauge(
    "mpaas_config_invalid_resources", "Resources rejected by validation", ["component"], multiprocess_mode="livemax"
)
CONFIG_APPLIED = Gauge(
    "mpaas_config_applied_timestamp_seconds",
    "When the current config was swapped in",
    ["component"],
    multiprocess_mode="livemax",
)


@dataclass(frozen=True)
class Resource:
    """A validated resource: its parsed spec plus the identity fields components need."""

    kind: str
    namespace: str
    name: str
    generation: int
    resource_version: str
    spec: Any  # the kind's pydantic spec model; raw `data` dict for Secrets
    raw: dict[str, Any] = field(repr=False, compare=False)


Resources = dict[str, dict[Key, Resource]]  # kind -> (namespace, name) -> resource


def unlisted(kind: str) -> str:
    """Where the resources a component compiles name the objects of a named kind that are watched but not listed
    yet: their absence says nothing yet (a watch still waiting for access), unlike the absence of an object from a
    listing (deleted). Placeholders, `spec` None."""
    return f"{kind}/unlisted"


def validate(kind: str, obj: dict[str, Any]) -> Resource:
    meta = obj.get("metadata") or {}
    spec: ApiModel | dict[str, Any]
    if kind in KINDS:
        spec = KINDS[kind].parse_spec(obj)
    else:  # Secrets carry no spec model: their data, base64 as the API serves it
        spec = dict(obj.get("data") or {})
        string_data = obj.get("stringData") or {}
        if not isinstance(string_data, dict):
            raise InvalidResource(kind, obj, "stringData must be a map of strings")
        for k, v in string_data.items():  # YAML files in local mode may use stringData
            spec[k] = base64.b64encode(str(v).encode()).decode()
    return Resource(
        kind=kind,
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        spec=spec,
        raw=obj,
    )


# For a kind read by name (Secrets): which objects of it to watch, given the resources of the other kinds.
NamesOf = Callable[[Resources], set[Key]]


class LiveConfig(Generic[T]):
    """`named`: kinds watched object by object, as the other kinds' resources name them (from the API server:
    Secrets, so that a component needs read access to the Secrets it uses only, not to every one around it)."""

    def __init__(
        self,
        component: str,
        kinds: Iterable[str],
        compile: Callable[[Resources], T],
        initial: T,
        *,
        named: dict[str, NamesOf] | None = None,
    ):
        self.component = component
        self.kinds = list(kinds)
        self._compile = compile
        self.current: T = initial
        self.resources: Resources = {k: {} for k in self.kinds}
        self.errors: dict[tuple[str, Key], str] = {}
        self.version = 0  # bumps on every swap
        self.applied_at = 0.0
        self._synced: set[str] = set()
        self.ready = asyncio.Event()
        self._listeners: list[Callable[[T], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._client: KubeClient | None = None
        self._named: dict[str, NamesOf] = named or {}
        self._kube: KubeClient | None = None  # set once watching the API server: named kinds follow their names
        self._named_watches: dict[str, dict[Key, asyncio.Task[None]]] = {k: {} for k in self._named}
        self._named_snapshots: dict[str, dict[Key, Snapshot]] = {k: {} for k in self._named}
        self._compiled_resources: Resources = {}  # what the current config was compiled from
        self._report: tuple[str, str | None, str, tuple[str, str] | None] | None = None  # kind, ns, name, pod
        self.reporter: AppliedReporter | None = None

    def subscribe(self, listener: Callable[[T], None]) -> None:
        self._listeners.append(listener)

    def report_applied(
        self, kind: str, name: str, *, namespace: str | None = None, pod: tuple[str, str] | None = None
    ) -> None:
        """Tell on this process's Pod which generation of the resource `kind` `name` the config in use was compiled
        from (`mpaas.applied`), each time that changes. `namespace`: the resource's, by default the Pod's; `pod`:
        (namespace, name) of the Pod, by default from the downward API (POD_NAMESPACE, POD_NAME).

        Call it before or after `start()`. Only a config from the API server is reported: from a folder of YAML
        (`mpaas dev`), or outside a pod, nothing is."""
        self._report = (kind, namespace, name, pod)
        if self._kube is not None:
            self._start_reporter()

    def _start_reporter(self) -> None:
        if self._report is None or self.reporter is not None or self._kube is None:
            return
        kind, namespace, name, pod = self._report
        pod = pod or pod_from_env()
        if pod is None:
            log.info("%s: no POD_NAME/POD_NAMESPACE: the applied generation is not reported", self.component)
            return
        self.reporter = AppliedReporter(
            self._kube, pod=pod, kind=kind, namespace=namespace or pod[0], name=name, worker=worker_from_env()
        )
        self._tasks.append(asyncio.create_task(self.reporter.run(), name=f"report-applied-{kind}"))
        self._tell_applied()

    def _tell_applied(self) -> None:
        if self.reporter is None:
            return
        r = self._compiled_resources.get(self.reporter.kind, {}).get((self.reporter.namespace, self.reporter.name))
        if r is not None:
            self.reporter.applied(r.generation)

    def on_snapshot(self, kind: str, snapshot: Snapshot) -> None:
        """Validate one kind's snapshot, then recompile and swap if anything changed."""
        self._absorb(kind, snapshot)
        if self._kube is not None and kind not in self._named and self._synced.issuperset(self._namers()):
            self._follow_names()
        if self._synced.issuperset(self.kinds):
            self.recompile()

    def _absorb(self, kind: str, snapshot: Snapshot) -> None:
        previous = self.resources.get(kind, {})
        valid: dict[Key, Resource] = {}
        for key, obj in snapshot.items():
            old = previous.get(key)
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if old is not None and rv and old.resource_version == rv:
                valid[key] = old
                continue
            try:
                valid[key] = validate(kind, obj)
                self.errors.pop((kind, key), None)
            except InvalidResource as e:
                self.errors[(kind, key)] = e.detail
                log.error("%s: ignoring invalid %s, keeping its last good version: %s", self.component, kind, e)
                if old is not None:
                    valid[key] = old
            except Exception as e:  # a validator's own failure: this resource alone is left out, not every change
                self.errors[(kind, key)] = f"could not be validated: {e!r}"
                log.exception(
                    "%s: %s %s could not be validated; keeping its last good version", self.component, kind, key
                )
                if old is not None:
                    valid[key] = old
        for err_key in list(self.errors):
            if err_key[0] == kind and err_key[1] not in snapshot:
                del self.errors[err_key]
        CONFIG_INVALID.labels(self.component).set(len(self.errors))
        self.resources[kind] = valid
        self._synced.add(kind)

    def _namers(self) -> list[str]:
        """The kinds whose resources name the objects of the named kinds."""
        return [k for k in self.kinds if k not in self._named]

    def _follow_names(self) -> None:
        """Start a watch for each newly named object of a named kind, stop those no longer named."""
        assert self._kube is not None
        for kind, names_of in self._named.items():
            try:
                wanted = names_of(self.resources)
            except Exception:
                log.exception("%s: cannot tell which %s objects to watch; keeping those", self.component, kind)
                continue
            watches, snapshots = self._named_watches[kind], self._named_snapshots[kind]
            for key in wanted - watches.keys():
                namespace, name = key
                rt, by_name = _resource_type(kind), f"metadata.name={name}"
                src = KubeWatchSource(self._kube, rt, kind, namespace=namespace, field_selector=by_name)
                on_change = functools.partial(self._on_named_snapshot, key)
                watches[key] = asyncio.create_task(src.run(on_change), name=f"watch-{kind}-{namespace}/{name}")
            gone = watches.keys() - wanted
            for key in gone:
                watches.pop(key).cancel()
                snapshots.pop(key, None)
            if (gone or kind not in self._synced) and self._listed(kind):  # absorb now: no new watch will
                self._absorb(kind, self._merged(kind))

    def _listed(self, kind: str) -> bool:
        """Whether a named kind may be absorbed: after its first sync, or once every watch has listed once."""
        return kind in self._synced or self._named_snapshots[kind].keys() >= self._named_watches[kind].keys()

    def _on_named_snapshot(self, key: Key, kind: str, snapshot: Snapshot) -> None:
        if self._named_watches[kind].get(key) is not asyncio.current_task():
            return  # this watch was stopped (its name dropped, perhaps named again since)
        self._named_snapshots[kind][key] = snapshot
        if self._listed(kind):
            self.on_snapshot(kind, self._merged(kind))

    def _merged(self, kind: str) -> Snapshot:
        merged: Snapshot = {}
        for snapshot in self._named_snapshots[kind].values():
            merged.update(snapshot)
        return merged

    def _compiled_from(self) -> Resources:
        """The resources, with the named objects not listed yet under `unlisted(kind)`."""
        pending = {
            kind: watches.keys() - self._named_snapshots[kind].keys() for kind, watches in self._named_watches.items()
        }
        if not any(pending.values()):
            return self.resources
        out = dict(self.resources)
        for kind, keys in pending.items():
            out[unlisted(kind)] = {key: Resource(kind, key[0], key[1], 0, "", None, {}) for key in keys}
        return out

    def recompile(self) -> bool:
        resources = self._compiled_from()
        try:
            compiled = self._compile(resources)
        except Exception as e:
            CONFIG_RELOADS.labels(self.component, "error").inc()
            log.exception("%s: config compilation failed, keeping the last good config: %s", self.component, e)
            return False
        self.current = compiled  # the swap: readers take `current` once per request
        self._compiled_resources = dict(resources)
        self.version += 1
        self.applied_at = time.time()
        CONFIG_RELOADS.labels(self.component, "ok").inc()
        CONFIG_APPLIED.labels(self.component).set(self.applied_at)
        self.ready.set()
        self._tell_applied()
        for listener in self._listeners:
            try:
                listener(compiled)
            except Exception:
                log.exception("config listener failed")
        return True

    # --- wiring to sources ---------------------------------------------------

    def start_kube(
        self, client: KubeClient, *, namespace: str | None = None, selectors: dict[str, dict[str, str]] | None = None
    ) -> None:
        """Watch every kind through the API server. `selectors` narrows a kind's watch; named kinds are
        watched object by object once the others have been listed."""
        self._kube = client
        for kind in self.kinds:
            if kind in self._named:
                continue
            sel = (selectors or {}).get(kind, {})
            src = KubeWatchSource(
                client,
                _resource_type(kind),
                kind,
                namespace=namespace,
                label_selector=sel.get("labelSelector"),
                field_selector=sel.get("fieldSelector"),
            )
            self._tasks.append(asyncio.create_task(src.run(self.on_snapshot), name=f"watch-{kind}"))
        self._start_reporter()

    def start_directory(self, path: str, *, interval: float = 0.25) -> DirectorySource:
        src = DirectorySource(path, set(self.kinds), interval=interval)
        self._tasks.append(asyncio.create_task(src.run(self.on_snapshot), name=f"dir-{path}"))
        return src

    def start(self, settings: ComponentSettings, selectors: dict[str, dict[str, str]] | None = None) -> None:
        """Start the source the settings name: the API server, or a folder of YAML."""
        if settings.config_source == "dir":
            self.start_directory(settings.config_dir)
        else:
            self._client = KubeClient(settings.kubeconfig)
            self.start_kube(self._client, namespace=settings.namespace, selectors=selectors)

    async def stop(self) -> None:
        tasks = self._tasks + [t for watches in self._named_watches.values() for t in watches.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for kind, watches in self._named_watches.items():
            watches.clear()
            self._named_snapshots[kind].clear()
        self._kube = None
        self.reporter = None
        if self._client is not None:
            await self._client.close()
            self._client = None


def _resource_type(kind: str) -> ResourceType:
    return KINDS[kind].resource if kind in KINDS else SECRETS


__all__ = [
    "DirectorySource",
    "KubeWatchSource",
    "LiveConfig",
    "Resource",
    "Resources",
    "object_key",
    "unlisted",
    "validate",
]
