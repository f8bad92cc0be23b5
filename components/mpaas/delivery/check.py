"""The update check (mPaaS style): a client posts what it is and which resources it asks about, and gets, per
resource, the release its targeting gives it or none (docs/delivery.md, "Update check").

    POST /v1/delivery/check
    {"appId": "SHOP", "workspaceId": "prod", "platform": "Android", "deviceId": "d-1", "userId": "u-1",
     "appVersion": "2.0.1", "osVersion": "14", "city": "Hangzhou", "model": "X2", "brand": "Acme",
     "network": "Wifi", "channel": "store",
     "resources": [{"type": "AppUpgrade"}, {"type": "Hotfix", "installedVersion": "3"}, {"type": "Switch"}]}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from ..api.delivery import PER_OFFLINE_APP, ResourceType
from ..apps import AppDirectory, compile_apps
from ..config import LiveConfig, Resources
from ..resultcodes import ResultCode
from ..rules import version_key
from . import codes, diffs
from .codepush import EMPTY as NO_DEPLOYMENTS
from .codepush import Deployments, compile_deployments

if TYPE_CHECKING:
    from .reports import Tally
from .lists import IdLists
from .packages import Link
from .targeting import Catalog, Client, Release, Seats, choose, compile_catalog

log = logging.getLogger("mpaas.delivery")

CHECK_PATH = "/v1/delivery/check"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_OFFLINE_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_OFFLINE_APPS = 500  # offline apps in one check
MAX_FIELD_CHARS = 200
PLATFORMS = {"android": "Android", "ios": "IOS", "harmony": "Harmony"}
TYPES = {t.value for t in ResourceType}
_FIELDS = {
    "userId": "user_id",
    "appVersion": "app_version",
    "osVersion": "os_version",
    "city": "city",
    "model": "model",
    "brand": "brand",
    "network": "network",
    "channel": "channel",
}

CHECKS = Counter("mpaas_delivery_checks_total", "Update checks, by result code", ["code"])
OFFERS = Counter(
    "mpaas_delivery_offers_total",
    "Releases offered by update checks, by app, resource type, version and stage",
    ["app", "type", "version", "stage"],
)
NOT_OFFERED = Counter(
    "mpaas_delivery_not_offered_total",
    "Releases a client's targeting gave but that could not be offered (no link to the package)",
    ["app", "type"],
)


@dataclass(frozen=True)
class DeliveryConfig:
    catalog: Catalog
    apps: AppDirectory
    codepush: Deployments = NO_DEPLOYMENTS  # CodePush deployment keys (codepush.py)


EMPTY = DeliveryConfig(Catalog(), AppDirectory())
KINDS = ("DeliveryTask", "MpaasGateway")


def compile_config(resources: Resources, lists: IdLists | None = None) -> DeliveryConfig:
    return DeliveryConfig(compile_catalog(resources, lists), compile_apps(resources), compile_deployments(resources))


class Refused(Exception):
    def __init__(self, code: ResultCode):
        super().__init__(code.memo)
        self.code = code


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise Refused(codes.INVALID_REQUEST.because(f"{name} is required"))
        return ""
    if not isinstance(value, str):
        raise Refused(codes.INVALID_REQUEST.because(f"{name} must be a string"))
    if len(value) > MAX_FIELD_CHARS:
        raise Refused(codes.INVALID_REQUEST.because(f"{name} is longer than {MAX_FIELD_CHARS} characters"))
    if not value.isascii():
        try:  # JSON may carry lone surrogates ("\ud800"), which no store or hash takes as UTF-8
            value.encode()
        except UnicodeEncodeError:
            raise Refused(codes.INVALID_REQUEST.because(f"{name} is not valid Unicode")) from None
    return value


@dataclass(frozen=True)
class Installed:
    """What the client runs of a resource (of one offline app, for H5Offline and MiniProgram)."""

    version: str = ""
    sha256: str = ""
    offline_app_id: str = ""


@dataclass(frozen=True)
class Asked:
    kind: str
    installed: Installed = Installed()
    apps: tuple[Installed, ...] | None = None  # H5Offline, MiniProgram: per offline app; None: every one released


def _installed(item: dict[str, Any], where: str, offline_app_id: str = "") -> Installed:
    sha = _text(item, "installedSha256")
    if sha and not _SHA256.fullmatch(sha):
        raise Refused(codes.INVALID_REQUEST.because(f"{where}: installedSha256 must be 64 lower-case hex digits"))
    return Installed(_text(item, "installedVersion"), sha, offline_app_id)


def _apps(item: dict[str, Any], kind: str) -> tuple[Installed, ...] | None:
    apps = item.get("apps")
    if apps is None:
        return None
    if not isinstance(apps, list) or len(apps) > MAX_OFFLINE_APPS:
        raise Refused(codes.INVALID_REQUEST.because(f"resources: {kind} apps is a list of at most {MAX_OFFLINE_APPS}"))
    out: dict[str, Installed] = {}
    for app in apps:
        if not isinstance(app, dict):
            raise Refused(codes.INVALID_REQUEST.because(f"resources: {kind} apps: each one an object with its id"))
        app_id = _text(app, "id", required=True)
        if not _OFFLINE_APP_ID.fullmatch(app_id):
            raise Refused(codes.INVALID_REQUEST.because(f"resources: {kind} apps: id {app_id[:40]!r} is not an app id"))
        if app_id in out:
            raise Refused(codes.INVALID_REQUEST.because(f"resources: {kind} apps: {app_id} asked twice"))
        out[app_id] = _installed(app, f"resources: {kind} apps", app_id)
    return tuple(out.values())


def parse(data: bytes) -> tuple[Client, list[Asked]]:
    """The client and what it asks about; Refused when unreadable."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused(codes.MALFORMED_BODY) from None
    if not isinstance(body, dict):
        raise Refused(codes.MALFORMED_BODY)
    platform = PLATFORMS.get(_text(body, "platform", required=True).lower())
    if platform is None:
        raise Refused(codes.INVALID_REQUEST.because("platform must be Android, IOS or Harmony"))
    fields = {attr: _text(body, name) for name, attr in _FIELDS.items()}
    client_base = dict(
        app_id=_text(body, "appId", required=True),
        workspace_id=_text(body, "workspaceId", required=True),
        platform=platform,
        device_id=_text(body, "deviceId", required=True),
        **fields,
    )
    asked = body.get("resources", [{"type": ResourceType.APP_UPGRADE.value}])
    if not isinstance(asked, list) or not asked or len(asked) > len(TYPES):
        raise Refused(codes.INVALID_REQUEST.because(f"resources: a list of 1 to {len(TYPES)} objects"))
    wanted: list[Asked] = []
    for item in asked:
        if not isinstance(item, dict):
            raise Refused(codes.INVALID_REQUEST.because("resources: each one an object with its type"))
        kind = _text(item, "type", required=True)
        if kind not in TYPES:
            raise Refused(codes.INVALID_REQUEST.because(f"resources: type {kind[:40]!r} is not one of {sorted(TYPES)}"))
        if any(kind == a.kind for a in wanted):
            raise Refused(codes.INVALID_REQUEST.because(f"resources: {kind} asked twice"))
        if kind in PER_OFFLINE_APP:
            wanted.append(Asked(kind, apps=_apps(item, kind)))
        else:
            wanted.append(Asked(kind, _installed(item, "resources")))
    return Client(**client_base), wanted


class Checker:
    """Answers update checks from the live DeliveryTasks; `link` makes each offered package's URL."""

    def __init__(
        self,
        live: LiveConfig[DeliveryConfig],
        seats: Seats,
        link: Link,
        verified: Callable[[Release], bool] = lambda r: r.verified,
        tally: Tally | None = None,
    ):
        self.live, self.seats, self.link, self.verified = live, seats, link, verified
        self.tally = tally  # counts the hits of each task and stage (reports.py)

    async def check(self, data: bytes, base_url: str) -> tuple[ResultCode, dict[str, Any]]:
        try:
            client, wanted = parse(data)
        except Refused as e:
            CHECKS.labels(str(e.code.code)).inc()
            return e.code, {"resultCode": e.code.code, "resultMsg": e.code.memo}
        config = self.live.current
        if config.apps.resolve(f"{client.app_id}/{client.workspace_id}") is None:
            CHECKS.labels(str(codes.UNKNOWN_APP.code)).inc()
            return codes.UNKNOWN_APP, {"resultCode": codes.UNKNOWN_APP.code, "resultMsg": codes.UNKNOWN_APP.memo}
        now = time.time()
        items = []
        for asked in wanted:
            kind = asked.kind
            try:
                if kind == ResourceType.SWITCH:
                    items.append(await self._switches(config.catalog, client, now))
                elif asked.apps is not None or kind in PER_OFFLINE_APP:
                    items.append(await self._offline_apps(config.catalog, client, asked, now, base_url))
                else:
                    asking = _with_installed(client, asked.installed)
                    items.append(await self._package(config.catalog, asking, kind, now, base_url))
            except Exception:  # one resource's failure must not cost the client the others' answers
                log.exception("update check of %s failed for %s/%s", kind, client.app_id, client.workspace_id)
                items.append({"type": kind, "update": False})
        CHECKS.labels(str(codes.SUCCESS.code)).inc()
        return codes.SUCCESS, {"resultCode": codes.SUCCESS.code, "resultMsg": codes.SUCCESS.memo, "items": items}

    async def _package(self, catalog: Catalog, client: Client, kind: str, now: float, base: str) -> dict[str, Any]:
        release = await choose(catalog, self.seats, client, kind, now, self.verified)
        if release is not None:
            assert release.spec.package is not None
            url = await self.link(release.spec.package, base)
            if url is None:
                NOT_OFFERED.labels(client.app_id, kind).inc()
            else:
                spec, package = release.spec, release.spec.package
                assert package is not None
                OFFERS.labels(client.app_id, kind, package.version, str(release.stage)).inc()
                if self.tally is not None:
                    self.tally.hit(release)
                offer: dict[str, Any] = {
                    "type": kind,
                    "update": True,
                    "task": f"{release.namespace}/{release.name}",
                    "version": package.version,
                    "upgradeMode": str(spec.upgrade_mode),
                    "package": {"url": url, "sha256": package.sha256, "sizeBytes": package.size_bytes},
                }
                if package.signature:
                    offer["package"]["signature"] = package.signature
                installed = client.app_version if kind == ResourceType.APP_UPGRADE else client.installed_version
                diff = release.diff_for(client.installed_sha256, installed, (diffs.HDIFFPATCH, diffs.FILES))
                diff_url = await self.link(diff.package, base) if diff is not None else None
                if diff is not None and diff_url is not None:
                    offer["diff"] = {
                        "url": diff_url,
                        "sha256": diff.package.sha256,
                        "sizeBytes": diff.package.size_bytes,
                        "format": diff.format,
                        "fromVersion": diff.package.version,
                        "fromSha256": diff.from_sha256,
                    }
                if spec.description:
                    offer["description"] = spec.description
                if spec.payload:
                    offer["payload"] = spec.payload
                return offer
        answer: dict[str, Any] = {"type": kind, "update": False}
        installed = client.app_version if kind == ResourceType.APP_UPGRADE else client.installed_version
        withdrawn = _withdrawn(catalog, client, kind, installed)
        if withdrawn is not None:  # the client runs a release that was rolled back: it should go back
            answer |= {"rollback": True, "task": f"{withdrawn.namespace}/{withdrawn.name}"}
        return answer

    async def _offline_apps(
        self, catalog: Catalog, client: Client, asked: Asked, now: float, base: str
    ) -> dict[str, Any]:
        """An answer per offline app asked about (or, without `apps`, per one released), each as a package's."""
        kind = asked.kind
        apps = asked.apps
        if apps is None:
            released = catalog.offline_apps.get((client.app_id, client.workspace_id, client.platform, kind), ())
            apps = tuple(Installed(offline_app_id=a) for a in released[:MAX_OFFLINE_APPS])
        answers = []
        for app in apps:
            offer = await self._package(catalog, _with_installed(client, app), kind, now, base)
            offer.pop("type")
            answers.append({"id": app.offline_app_id, **offer})
        return {"type": kind, "apps": answers}

    async def _switches(self, catalog: Catalog, client: Client, now: float) -> dict[str, Any]:
        """Every switch release that applies, merged oldest first: a newer one's values win."""
        values: dict[str, Any] = {}
        tasks = []
        for release in reversed(catalog.candidates(client, ResourceType.SWITCH, now, self.verified)):
            if release.listed(client) or await self.seats.admit(release, client.device_id):
                values |= release.spec.payload or {}
                tasks.append(f"{release.namespace}/{release.name}")
        return {"type": ResourceType.SWITCH.value, "update": bool(tasks), "values": values, "tasks": tasks}


def _with_installed(client: Client, installed: Installed) -> Client:
    if installed == Installed():
        return client
    return dataclasses.replace(
        client,
        installed_version=installed.version,
        installed_sha256=installed.sha256,
        offline_app_id=installed.offline_app_id,
    )


def _withdrawn(catalog: Catalog, client: Client, kind: str, installed: str) -> Release | None:
    if not installed:
        return None
    have = version_key(installed)  # by number, as versions compare elsewhere: "3.1" is "3.1.0"
    for release in catalog.releases(client, kind):
        if release.withdrawn and release.spec.package is not None and have is not None and release.version == have:
            return release
    return None
