"""Who gets which release: DeliveryTasks compiled once per change into per-app release lists, and the check a
client's attributes go through, in microseconds.

A release is offered to a device when, in this order:

1. it is not rolled back, and its time window (if any) is open;
2. the device or its user is on the whitelist (then percent and filters are skipped), or, unless the release
   is whitelist-only, the device passes the filters, the rule and the current percent;
3. the release is newer than what the client has (its app version for an AppUpgrade, else the installed
   version of that resource it reports);
4. with a window's `maxUsers`, the device holds one of its seats (taken atomically across replicas, by the
   caller, since it is the only step that needs a store: see `Seats`).

Percent is sticky: a device is inside when a stable hash of its id, salted with the task's namespace and name,
falls in the first `percent` of 100 buckets, so a device inside at 5 % is inside at 20 %. Of several live
releases of one app, platform and type, the newest version that applies wins (the latest created on a tie).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..api.delivery import DeliveryTaskSpec, DiffPackage, Filters, Package, ResourceType
from ..config import Resources
from ..rules import Predicate, compile_rule, percent_of, version_key
from ..stores.sets import MemberSets
from . import diffs
from .lists import IdLists
from .packages import locate

KIND = "DeliveryTask"
log = logging.getLogger("mpaas.delivery")


@dataclass(frozen=True)
class Client:
    """What an update check tells about the device (every field as sent; absent: empty)."""

    app_id: str
    workspace_id: str
    platform: str
    device_id: str
    user_id: str = ""
    app_version: str = ""
    os_version: str = ""
    installed_version: str = ""  # of the resource asked about (hotfix, bundle); the app version for upgrades
    installed_sha256: str = ""  # of the package the client runs, when it says: picks the diff it gets
    offline_app_id: str = ""  # the H5 offline app or mini program asked about (spec.offlineAppId)
    city: str = ""
    model: str = ""
    brand: str = ""
    network: str = ""
    channel: str = ""

    def attributes(self) -> dict[str, str]:
        """The gray-rule attributes (rules.ATTRIBUTES) of this client."""
        return {
            "DEVICE_ID": self.device_id,
            "USER_ID": self.user_id,
            "APP_VERSION": self.app_version,
            "OS_VERSION": self.os_version,
            "PLATFORM": self.platform,
            "BRAND": self.brand,
            "MODEL": self.model,
            "CITY": self.city,
            "NETWORK": self.network,
            "CHANNEL": self.channel,
            "APP_ID": self.app_id,
            "WORKSPACE_ID": self.workspace_id,
        }


@dataclass(frozen=True)
class Diff:
    """A diff package from an earlier package to a release's (status.diffPackages)."""

    from_sha256: str
    from_version: tuple[int, ...]
    format: str
    package: Package  # the diff file itself: its uri, sha256 and size (version: the earlier package's)
    by_version: bool = True  # no other live package of its shelf has that version: a version names it


def compile_diffs(status: Mapping[str, Any], spec: DeliveryTaskSpec) -> tuple[Diff, ...]:
    """status.diffPackages, each at the key its builder stores it under and nowhere else: status is writable by
    more than the operator, and an entry must not turn the download links into a way to any object."""
    assert spec.package is not None
    out = []
    for raw in status.get("diffPackages") or ():
        try:
            entry = DiffPackage.model_validate(raw)
            package = Package(
                uri=entry.uri, version=entry.from_version, sha256=entry.sha256, size_bytes=entry.size_bytes
            )
            if entry.format not in diffs.FORMATS:
                continue
            where = locate(entry.uri)
        except (ValidationError, ValueError):
            continue  # the operator writes them; one that does not parse is left out
        expected = diffs.key_of(spec.package.sha256, entry.from_sha256, entry.format, str(spec.platform))
        version = version_key(entry.from_version)
        if version is not None and where.bucket and where.key == expected:
            out.append(Diff(entry.from_sha256, version, entry.format, package))
    return tuple(out)


@dataclass(frozen=True)
class Release:
    namespace: str
    name: str
    uid: str
    spec: DeliveryTaskSpec
    version: tuple[int, ...]  # of the package; () for a Switch
    created: str  # metadata.creationTimestamp: RFC 3339 in UTC sorts as text
    percent: int  # the current stage's, as the operator reports it in status
    withdrawn: bool
    window: tuple[float, float, int | None] | None  # (start, end) as POSIX times, maxUsers
    devices: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    whitelist_only: bool = False
    filters: tuple[Predicate, ...] = ()
    salt: str = ""
    device_list: str = ""  # whitelist.deviceIdsObject: a list held in the object store (lists.py)
    user_list: str = ""
    lists: IdLists | None = None
    stage: int = 0  # status.currentStage, for metrics
    verified: bool = False  # the operator found the package as the task says (status condition PackageVerified)
    diffs: tuple[Diff, ...] = ()  # status.diffPackages, as the operator built them

    def diff_for(self, installed_sha256: str, installed_version: str, formats: tuple[str, ...]) -> Diff | None:
        """The diff, in one of `formats`, from the package the client runs: named by its sha256, or else by its
        version when one diff alone is from that version; only one smaller than the full package."""
        size = self.spec.package.size_bytes if self.spec.package is not None else 0
        offered = [d for d in self.diffs if d.format in formats]
        if installed_sha256:
            found = [d for d in offered if d.from_sha256 == installed_sha256]
        else:
            have = version_key(installed_version) if installed_version else None
            found = [d for d in offered if have is not None and d.from_version == have and d.by_version]
        return found[0] if len(found) == 1 and found[0].package.size_bytes < size else None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def listed(self, client: Client) -> bool:
        if client.device_id in self.devices or (bool(client.user_id) and client.user_id in self.users):
            return True
        lists = self.lists
        if lists is None:
            return False
        if self.device_list and client.device_id in lists.get(self.device_list):
            return True
        return bool(self.user_list and client.user_id and client.user_id in lists.get(self.user_list))

    def targets(self, client: Client, attrs: Mapping[str, str], now: float) -> bool:
        """Steps 1 and 2 of the module's list (the seat of a capped window is the caller's)."""
        if self.withdrawn:
            return False
        if self.window is not None and not self.window[0] <= now < self.window[1]:
            return False
        if self.listed(client):
            return True
        if self.whitelist_only or not client.device_id:
            return False
        if not all(f(attrs) for f in self.filters):
            return False
        return percent_of(client.device_id, self.percent, self.salt)

    def newer_than(self, have: tuple[int, ...] | None) -> bool:
        """`have`: the installed version's key (None: none sent, or one that does not parse: offer)."""
        return have is None or self.version > have


def _set(values: list[str], key: str) -> Predicate:
    allowed = frozenset(v.casefold() for v in values)
    return lambda a: a.get(key, "").casefold() in allowed


def _version(attrs: Mapping[str, str], key: str) -> tuple[int, ...] | None:
    """The version under `key`, parsed once per check (kept in the check's own attribute dict)."""
    memo = "\0" + key
    if memo in attrs:
        return attrs[memo]  # type: ignore[return-value]
    v = version_key(attrs.get(key, ""))
    if isinstance(attrs, dict):
        attrs[memo] = v
    return v


def _range(key: str, low: str | None, high: str | None) -> Predicate:
    lo = version_key(low) if low else None
    hi = version_key(high) if high else None

    def inside(a: Mapping[str, str]) -> bool:
        v = _version(a, key)
        if v is None or (not v and not a.get(key)):  # absent or unreadable: outside any bounded range
            return False
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    return inside


def compile_filters(filters: Filters | None, rule: str | None) -> tuple[Predicate, ...]:
    out: list[Predicate] = []
    if filters is not None:
        for values, key in (
            (filters.cities, "CITY"),
            (filters.models, "MODEL"),
            (filters.brands, "BRAND"),
            ([str(n) for n in filters.networks], "NETWORK"),
            (filters.channels, "CHANNEL"),
        ):
            if values:
                out.append(_set(values, key))
        for vr, key in ((filters.os_version, "OS_VERSION"), (filters.app_version, "APP_VERSION")):
            if vr is not None and (vr.min or vr.max):
                out.append(_range(key, vr.min, vr.max))
    if rule:
        out.append(compile_rule(rule))  # checked by the operator; a rule that does not parse raises here too
    return tuple(out)


def _timestamp(value: datetime) -> float:
    return value.timestamp()


def compile_release(
    namespace: str, name: str, spec: DeliveryTaskSpec, raw: Mapping[str, Any], lists: IdLists | None = None
) -> Release:
    meta = raw.get("metadata") or {}
    status = raw.get("status") or {}
    t = spec.targeting
    # A Switch has no version: of two, the one created later wins.
    version = (version_key(spec.package.version) or ()) if spec.package is not None else ()
    reported = status.get("currentPercent")
    # Until the operator has reported a stage, the first stage's percent (or targeting.percent) holds.
    percent = (
        int(reported)
        if isinstance(reported, int) and not isinstance(reported, bool)
        else (spec.stages[0].percent if spec.stages else t.percent)
    )
    window = None
    if t.window is not None:
        window = (_timestamp(t.window.start), _timestamp(t.window.end), t.window.max_users)
    wl = t.whitelist
    return Release(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or f"{namespace}/{name}/{meta.get('creationTimestamp') or ''}"),
        spec=spec,
        version=version,
        created=str(meta.get("creationTimestamp") or ""),
        percent=0 if spec.rollback else percent,
        withdrawn=spec.rollback,
        window=window,
        devices=frozenset(wl.device_ids) if wl else frozenset(),
        users=frozenset(wl.user_ids) if wl else frozenset(),
        device_list=(wl.device_ids_object or "") if wl else "",
        user_list=(wl.user_ids_object or "") if wl else "",
        lists=lists,
        whitelist_only=bool(wl and wl.only),
        filters=compile_filters(t.filters, t.rule),
        salt=f"{namespace}/{name}/",
        stage=status["currentStage"] if isinstance(status.get("currentStage"), int) else 0,
        diffs=compile_diffs(status, spec) if spec.package is not None else (),
        verified=spec.package is None
        or any(
            c.get("type") == "PackageVerified" and c.get("status") == "True"
            for c in status.get("conditions") or ()
            if isinstance(c, dict)
        ),
    )


Shelf = tuple[str, str, str, str, str]  # (appId, workspaceId, platform, resourceType, offlineAppId or "")


@dataclass(frozen=True)
class Catalog:
    """Every live release, by app, workspace, platform, type (and offline app), newest first."""

    shelves: dict[Shelf, tuple[Release, ...]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    # (appId, workspaceId, platform, resourceType) -> the offline app ids released, sorted
    offline_apps: dict[tuple[str, str, str, str], tuple[str, ...]] = field(default_factory=dict)

    def releases(self, client: Client, resource_type: ResourceType | str) -> tuple[Release, ...]:
        shelf = (client.app_id, client.workspace_id, client.platform, str(resource_type), client.offline_app_id)
        return self.shelves.get(shelf, ())

    def candidates(
        self,
        client: Client,
        resource_type: ResourceType | str,
        now: float,
        verified: Callable[[Release], bool] = lambda r: r.verified,
    ) -> list[Release]:
        """The releases this client may get, best first: the caller offers the first whose seat it holds.
        Only releases whose package was `verified` are candidates."""
        shelf = self.releases(client, resource_type)
        if not shelf:
            return []
        attrs = client.attributes()
        kind = str(resource_type)
        installed = client.app_version if kind == ResourceType.APP_UPGRADE else client.installed_version
        # A Switch has no version: whatever the client says it runs, none is "newer".
        have = version_key(installed) if installed and kind != ResourceType.SWITCH else None
        # The package check last: it is the caller's, and the others rule out most releases for less.
        return [r for r in shelf if r.newer_than(have) and r.targets(client, attrs, now) and verified(r)]

    def __len__(self) -> int:
        return sum(len(s) for s in self.shelves.values())


EMPTY = Catalog()


def compile_catalog(resources: Resources, lists: IdLists | None = None) -> Catalog:
    shelves: dict[Shelf, list[Release]] = defaultdict(list)
    errors: dict[tuple[str, str], str] = {}
    for (namespace, name), res in resources.get(KIND, {}).items():
        spec: DeliveryTaskSpec = res.spec
        try:
            release = compile_release(namespace, name, spec, res.raw, lists)
        except (ValueError, RecursionError) as e:  # a rule the operator would refuse too: left out, the rest served
            errors[(namespace, name)] = str(e)
            continue
        except Exception as e:  # an odd status or metadata (not validated): left out too, never the whole catalog
            log.error("DeliveryTask %s/%s left out: %r", namespace, name, e)
            errors[(namespace, name)] = repr(e)
            continue
        shelf = (spec.app_id, spec.workspace_id, str(spec.platform), str(spec.resource_type), spec.offline_app_id or "")
        shelves[shelf].append(release)
    ordered = {
        shelf: tuple(sorted(_by_version(rs), key=lambda r: (r.version, r.created, r.name), reverse=True))
        for shelf, rs in shelves.items()
    }
    offline: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for shelf in ordered:
        if shelf[4]:
            offline[shelf[:4]].append(shelf[4])
    return Catalog(ordered, errors, {k: tuple(sorted(v)) for k, v in offline.items()})


def _by_version(shelf: list[Release]) -> list[Release]:
    """A diff is offered to a client that names only its version when no other live package of the shelf has
    that version (two channels' APKs of one version are two packages: the diff applies to one)."""
    shas: dict[tuple[int, ...], set[str]] = defaultdict(set)
    for r in shelf:
        if r.spec.package is not None:
            shas[r.version].add(r.spec.package.sha256)
    out = []
    for r in shelf:
        if any(shas.get(d.from_version, set()) - {d.from_sha256} for d in r.diffs):
            diffs_ = tuple(
                dataclasses.replace(d, by_version=not (shas.get(d.from_version, set()) - {d.from_sha256}))
                for d in r.diffs
            )
            r = dataclasses.replace(r, diffs=diffs_)
        out.append(r)
    return out


class Seats:
    """The seats of capped windows: a set per release (named by its uid, so a task created again under the
    same name starts empty), filled atomically up to `maxUsers` across every replica.

    With the store unreachable a capped release admits nobody (a cap is never exceeded; the caller goes on to
    the next candidate), and for `RETRY_SECONDS` after a failure the store is not asked again, so checks do
    not each wait out its timeout."""

    RETRY_SECONDS = 1.0

    def __init__(self, sets: MemberSets):
        self.sets = sets
        self._down_until = 0.0

    async def admit(self, release: Release, device_id: str) -> bool:
        if release.window is None or release.window[2] is None:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            return await self.sets.add_capped(f"delivery:seats:{release.uid}", device_id, release.window[2])
        except ValueError:  # a set name the store refuses (a uid with braces): this release only, not the store
            return False
        except Exception as e:
            if time.monotonic() >= self._down_until:
                log.warning("seat store unreachable, capped releases not offered for now: %r", e)
            self._down_until = time.monotonic() + self.RETRY_SECONDS
            return False

    async def taken(self, release: Release) -> int:
        return await self.sets.size(f"delivery:seats:{release.uid}")


async def choose(
    catalog: Catalog,
    seats: Seats,
    client: Client,
    resource_type: ResourceType | str,
    now: float,
    verified: Callable[[Release], bool] = lambda r: r.verified,
) -> Release | None:
    """The release to offer `client`: the best candidate that, if its window is capped, has a seat for it."""
    for release in catalog.candidates(client, resource_type, now, verified):
        if release.listed(client) or await seats.admit(release, client.device_id):  # whitelists take no seat
            return release
    return None
