"""The CodePush acquisition API, so that React Native apps built with react-native-code-push (the `code-push`
acquisition SDK) check for and report JS bundle updates here unchanged (docs/delivery.md, "CodePush").

    GET  /updateCheck                              GET  /v0.1/public/codepush/update_check
    POST /reportStatus/deploy                      POST /v0.1/public/codepush/report_status/deploy
    POST /reportStatus/download                    POST /v0.1/public/codepush/report_status/download

A client names its app by a deployment key alone: the keys listed under `codePush.deployments` of the apps in
MpaasGateways map to (appId, workspaceId, platform, deployment). A deployment serves the app's Hotfix
DeliveryTasks of that platform (`filters.channels`, when given, names the deployments a task serves), through the
platform's targeting, with the task's name as the CodePush label and the package's sha256 as its hash.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

from prometheus_client import Counter

from ..api.delivery import ResourceType, UpgradeMode
from ..api.gateway import GatewaySpec
from ..config import Resources
from ..http1 import Request
from ..rules import version_key
from . import check as _check  # partly loaded when check.py loads this module: its names are read on use
from .answer import Answer
from .packages import Link
from .targeting import Catalog, Client, Release, Seats, choose

if TYPE_CHECKING:
    from ..config import LiveConfig
    from .check import DeliveryConfig
    from .reports import Tally

log = logging.getLogger("mpaas.delivery")

CHECK_PATHS = {"/updateCheck": False, "/v0.1/public/codepush/update_check": True}  # path -> snake_case answer
DEPLOY_PATHS = ("/reportStatus/deploy", "/v0.1/public/codepush/report_status/deploy")
DOWNLOAD_PATHS = ("/reportStatus/download", "/v0.1/public/codepush/report_status/download")
MAX_FIELD_CHARS = 200
MAX_QUERY_FIELDS = 16
# Semver as the SDK sends a binary version ("1.2.3", "2.0", "7", with a pre-release or build suffix).
APP_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,3}([-+][0-9A-Za-z.+-]{0,64})?$")
STATUSES = ("DeploymentSucceeded", "DeploymentFailed")
_EVENTS = {"DeploymentSucceeded": "Install", "DeploymentFailed": "InstallFailed"}  # as reports.py counts them

REPORTS = Counter(
    "mpaas_delivery_reports_total",
    "CodePush status reports, by app, type (deploy, download), package version (binary: the app's own bundle; "
    "unknown: a label no task of the deployment has) and status",
    ["app", "type", "version", "status"],
)

_SNAKE = {
    "downloadURL": "download_url",
    "isAvailable": "is_available",
    "isMandatory": "is_mandatory",
    "appVersion": "app_version",
    "packageHash": "package_hash",
    "packageSize": "package_size",
    "updateAppVersion": "update_app_version",
    "shouldRunBinaryVersion": "should_run_binary_version",
    "isDisabled": "is_disabled",
}


@dataclass(frozen=True)
class Deployment:
    app_id: str
    workspace_id: str
    platform: str
    name: str


@dataclass(frozen=True)
class Deployments:
    """Deployment key -> deployment, and the keys left out (listed by two MpaasGateways for different apps)."""

    by_key: dict[str, Deployment] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # "namespace/name key" -> why it is ignored


EMPTY = Deployments()


def compile_deployments(resources: Resources) -> Deployments:
    """The key map. A key is unique across the cluster: one MpaasGateway listing a key twice is refused
    (api/checks.py); of two MpaasGateways listing one key for different deployments, the one created first keeps
    it (then namespace and name), so a new resource cannot take over a live app's key, and the other's is ignored
    with an error logged."""
    by_key: dict[str, Deployment] = {}
    owner: dict[str, str] = {}
    errors: dict[str, str] = {}
    gateways = sorted(
        resources.get("MpaasGateway", {}).values(),
        key=lambda r: (str((r.raw.get("metadata") or {}).get("creationTimestamp") or ""), r.namespace, r.name),
    )
    for res in gateways:
        where = f"{res.namespace}/{res.name}"
        for app in cast(GatewaySpec, res.spec).apps:
            for d in app.code_push.deployments if app.code_push is not None else ():
                deployment = Deployment(app.app_id, app.workspace_id, str(d.platform), d.name)
                held = by_key.get(d.key)
                if held is None:
                    by_key[d.key], owner[d.key] = deployment, where
                elif held != deployment:  # the same deployment in two gateways is no conflict
                    errors[f"{where} {d.key}"] = (
                        f"MpaasGateway {where}: CodePush key {d.key} of {app.app_id}/{app.workspace_id} "
                        f"{d.platform} {d.name} is ignored: MpaasGateway {owner[d.key]} gives it to "
                        f"{held.app_id}/{held.workspace_id} {held.platform} {held.name}"
                    )
    for problem in errors.values():
        log.error("%s", problem)
    return Deployments(by_key, errors)


class Invalid(Exception):
    """A request refused: its HTTP status and a message saying what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UpdateCheck:
    deployment_key: str
    app_version: str
    package_hash: str
    label: str
    client_unique_id: str
    is_companion: bool


def _field(values: dict[str, str], camel: str, snake: str, *, required: bool = False) -> str:
    value = values.get(camel) or values.get(snake) or ""
    if not value and required:
        raise Invalid(400, f"{camel} is required")
    if len(value) > MAX_FIELD_CHARS:
        raise Invalid(400, f"{camel} is longer than {MAX_FIELD_CHARS} characters")
    return value


def _app_version(value: str) -> str:
    if not APP_VERSION.match(value):
        raise Invalid(400, "appVersion must be the app's binary version in semver, e.g. 1.0.0")
    return value


def parse_check(query: str) -> UpdateCheck:
    """An update check's query string; Invalid (400) when unreadable."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise Invalid(400, f"at most {MAX_QUERY_FIELDS} query parameters") from None
    values: dict[str, str] = {}
    for k, v in pairs:
        if k in values:
            raise Invalid(400, f"{k} is given twice")
        values[k] = v
    return UpdateCheck(
        deployment_key=_field(values, "deploymentKey", "deployment_key", required=True),
        app_version=_app_version(_field(values, "appVersion", "app_version", required=True)),
        package_hash=_field(values, "packageHash", "package_hash"),
        label=_field(values, "label", "label"),
        client_unique_id=_field(values, "clientUniqueId", "client_unique_id", required=True),
        is_companion=_field(values, "isCompanion", "is_companion").lower() == "true",
    )


def _text(body: dict[str, Any], camel: str, snake: str, *, required: bool = False) -> str:
    value = body.get(camel) if body.get(camel) is not None else body.get(snake)
    if value is None or value == "":
        if required:
            raise Invalid(400, f"{camel} is required")
        return ""
    if not isinstance(value, str):
        raise Invalid(400, f"{camel} must be a string")
    if len(value) > MAX_FIELD_CHARS:
        raise Invalid(400, f"{camel} is longer than {MAX_FIELD_CHARS} characters")
    return value


@dataclass(frozen=True)
class Report:
    kind: str  # deploy or download
    deployment_key: str
    label: str  # empty: a deploy report of the app's own (binary) bundle
    status: str
    app_version: str = ""
    client_unique_id: str = ""


def parse_report(kind: str, data: bytes) -> Report:
    """A status report's JSON body (camelCase or snake_case, as the SDK's versions send it); Invalid (400)."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise Invalid(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Invalid(400, "the body is not a JSON object")
    key = _text(body, "deploymentKey", "deployment_key", required=True)
    client = _text(body, "clientUniqueId", "client_unique_id")
    if kind == "download":
        return Report(kind, key, _text(body, "label", "label", required=True), "Downloaded", client_unique_id=client)
    app_version = _text(body, "appVersion", "app_version", required=True)
    _text(body, "previousLabelOrAppVersion", "previous_label_or_app_version")
    _text(body, "previousDeploymentKey", "previous_deployment_key")
    label = _text(body, "label", "label")
    status = _text(body, "status", "status", required=bool(label))
    if status and status not in STATUSES:
        raise Invalid(400, f"status must be {' or '.join(STATUSES)}")
    return Report(kind, key, label, status or STATUSES[0], app_version, client)


def _text_answer(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, message.encode())


def _offered_by(release: Release, deployment: Deployment) -> bool:
    """Whether the deployment serves the release: its channels filter names the deployment, or is not set."""
    filters = release.spec.targeting.filters
    channels = filters.channels if filters is not None else []
    return not channels or deployment.name.casefold() in {c.casefold() for c in channels}


def _range_text(release: Release) -> str:
    filters = release.spec.targeting.filters
    vr = filters.app_version if filters is not None else None
    if vr is None:
        return "*"
    return " ".join(p for p in (f">={vr.min}" if vr.min else "", f"<={vr.max}" if vr.max else "") if p) or "*"


class CodePush:
    """The acquisition routes, answered from the live config's deployment keys and Hotfix DeliveryTasks."""

    def __init__(
        self,
        live: LiveConfig[DeliveryConfig],
        seats: Seats,
        link: Link,
        verified: Callable[[Release], bool],
        max_body_bytes: int,
        base_url: Callable[[Request], str],
        tally: Tally | None = None,
    ):
        self.live, self.seats, self.link, self.verified = live, seats, link, verified
        self.max_body_bytes, self.base_url = max_body_bytes, base_url
        self.tally = tally  # the task's counts, as the platform's check and reports keep them (reports.py)

    def route(self, path: str) -> Callable[[Request], Awaitable[Answer]] | None:
        if path in CHECK_PATHS:
            return self.update_check
        if path in DEPLOY_PATHS:
            return self.report_deploy
        if path in DOWNLOAD_PATHS:
            return self.report_download
        return None

    async def update_check(self, req: Request) -> Answer:
        if req.method != "GET":
            return _text_answer(405, "update checks are GET requests", {"Allow": "GET"})
        try:
            asked = parse_check(req.query)
            info = await self.answer(asked, self.base_url(req), time.time())
        except Invalid as e:
            return _text_answer(e.status, str(e))
        except Exception:
            log.exception("CodePush update check failed")
            return _text_answer(500, "delivery internal error")
        if CHECK_PATHS[req.path]:
            info = {_SNAKE.get(k, k): v for k, v in info.items()}
            body: dict[str, Any] = {"update_info": info}
        else:
            body = {"updateInfo": info}
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return Answer(200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, raw)

    async def answer(self, asked: UpdateCheck, base_url: str, now: float) -> dict[str, Any]:
        """The updateInfo (camelCase) for a check; Invalid (404) for an unknown deployment key."""
        config = self.live.current
        deployment = config.codepush.by_key.get(asked.deployment_key)
        if deployment is None:
            raise Invalid(404, "unknown deployment key")
        client = Client(
            app_id=deployment.app_id,
            workspace_id=deployment.workspace_id,
            platform=deployment.platform,
            device_id=asked.client_unique_id,
            app_version=asked.app_version,
            channel=deployment.name,  # matched by filters.channels
        )
        info: dict[str, Any] = {
            "downloadURL": "",
            "description": "",
            "isAvailable": False,
            "isMandatory": False,
            "appVersion": asked.app_version,
            "packageHash": "",
            "label": "",
            "packageSize": 0,
            "updateAppVersion": False,
            "shouldRunBinaryVersion": False,
        }
        shelf = config.catalog.releases(client, ResourceType.HOTFIX)
        # The release of this deployment the client runs, known by its hash (by its label when it sends no hash).
        running = next(
            (
                r
                for r in shelf
                if r.spec.package is not None
                and _offered_by(r, deployment)
                and (
                    r.spec.package.sha256 == asked.package_hash.lower()
                    if asked.package_hash
                    else bool(asked.label) and r.name == asked.label
                )
            ),
            None,
        )
        # Every release, newer or older than what runs: the hash, not the version, tells an update.
        release = await choose(config.catalog, self.seats, client, ResourceType.HOTFIX, now, self.verified)
        if release is not None and running is not None and not running.withdrawn and running.version >= release.version:
            release = None  # up to date, or on a newer live release than its targeting gives now: not taken back
        if release is not None:
            assert release.spec.package is not None
            url = await self.link(release.spec.package, base_url)
            package = release.spec.package
            assert package is not None
            if url is not None:
                _check.OFFERS.labels(
                    deployment.app_id, ResourceType.HOTFIX.value, package.version, str(release.stage)
                ).inc()
                if self.tally is not None:
                    self.tally.hit(release)
                info |= {
                    "downloadURL": url,
                    "description": release.spec.description or "",
                    "isAvailable": True,
                    "isMandatory": release.spec.upgrade_mode == UpgradeMode.FORCE,
                    "packageHash": package.sha256,
                    "label": release.name,
                    "packageSize": package.size_bytes,
                }
                info["target_binary_range"] = info["appVersion"]
                return info
            _check.NOT_OFFERED.labels(deployment.app_id, ResourceType.HOTFIX.value).inc()
        if running is not None and running.withdrawn:  # rolled back, and nothing else to go to: the binary's bundle
            info |= {"shouldRunBinaryVersion": True, "isDisabled": True, "label": running.name}
        else:
            newer_binary = self._newer_binary(config.catalog, client, deployment, now)
            if newer_binary is not None:  # the newest release needs a newer binary: a store update
                info |= {"updateAppVersion": True, "appVersion": _range_text(newer_binary)}
        info["target_binary_range"] = info["appVersion"]
        return info

    def _newer_binary(self, catalog: Catalog, client: Client, deployment: Deployment, now: float) -> Release | None:
        for release in catalog.releases(client, ResourceType.HOTFIX):
            filters = release.spec.targeting.filters
            vr = filters.app_version if filters is not None else None
            if release.withdrawn or vr is None or not vr.min or not _offered_by(release, deployment):
                continue
            if release.window is not None and not release.window[0] <= now < release.window[1]:
                continue
            low, have = version_key(vr.min), version_key(client.app_version)
            if low is not None and have is not None and have < low and self.verified(release):
                return release
        return None

    async def report_deploy(self, req: Request) -> Answer:
        return await self._report("deploy", req)

    async def report_download(self, req: Request) -> Answer:
        return await self._report("download", req)

    async def _report(self, kind: str, req: Request) -> Answer:
        if req.method != "POST":
            return _text_answer(405, "status reports are POSTed", {"Allow": "POST"})
        data = await req.body(self.max_body_bytes)
        if data is None:
            return _text_answer(413, f"the report is over {self.max_body_bytes} bytes")
        try:
            report = parse_report(kind, data)
        except Invalid as e:
            return _text_answer(e.status, str(e))
        config = self.live.current
        deployment = config.codepush.by_key.get(report.deployment_key)
        if deployment is None:
            return _text_answer(404, "unknown deployment key")
        version = "binary"
        release = None
        if report.label:
            client = Client(deployment.app_id, deployment.workspace_id, deployment.platform, "")
            release = next(
                (r for r in config.catalog.releases(client, ResourceType.HOTFIX) if r.name == report.label), None
            )
            # Only known versions become label values: what clients send cannot grow the series.
            version = release.spec.package.version if release is not None and release.spec.package else "unknown"
        # The task's counts, as the platform's reports make them; a report without a device id cannot be
        # counted once per device, so it is left out of them.
        if release is not None and report.client_unique_id and self.tally is not None:
            event = "Download" if kind == "download" else _EVENTS[report.status]
            try:
                await self.tally.report(release, event, report.client_unique_id)
            except Exception as e:
                log.warning("CodePush report on %s/%s not counted: %r", release.namespace, release.name, e)
                return _text_answer(503, "the report could not be counted now: send it again later")
        REPORTS.labels(deployment.app_id, kind, version, report.status).inc()
        return _text_answer(200, "OK")
