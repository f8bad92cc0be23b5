"""Delivery (MDS): app upgrades, hot fixes, offline packages and switches, released by gray rules.

Built: the update check in the platform's JSON (`check.py`), CodePush's acquisition API (`codepush.py`) and
Expo Updates (`expo.py`), all deciding by `targeting.py` from the live DeliveryTasks; package links and the
downloads (`downloads.py`: signed, expiring, ranges, sendfile; an S3 store's through a bounded local cache,
`cache.py`); `mpaas delivery publish` (`publish.py`). A package is offered only once verified
(`packages.py`): by the operator's PackageVerified condition, or here when resources come from a folder. Hits,
downloads, installs and failures are counted per task and stage (`reports.py`: the platform's reports and
CodePush's), for the operator to put in status. Long whitelists are read from the object store
(`lists.py`). Diff packages (`diffs.py`) are built by the operator and offered by the check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..api.delivery import Package
from ..component import Component, Served
from ..config import LiveConfig
from ..http1 import AsgiRequest, Request
from ..service import component_app
from ..stores import LocalObjectStore, ObjectStore, open_objectstore
from ..stores.sets import MemoryMemberSets, RedisMemberSets
from . import codes
from .answer import Answer, send_asgi
from .cache import PackageCache
from .check import CHECK_PATH, EMPTY, KINDS, Checker, DeliveryConfig, compile_config
from .codepush import CodePush
from .downloads import PACKAGES_PATH, CachedDownloads, Downloads, Signer
from .expo import Bundles, Expo
from .lists import IdLists
from .packages import bucket_of, locate, verify
from .reports import REPORT_PATH, Reports, Tally, open_counters
from .settings import DeliverySettings
from .targeting import Release, Seats

log = logging.getLogger("mpaas.delivery")


class Links:
    """The URL a client downloads an offered package from: an https:// package as it is; an object-store one
    through this service (a local folder's route, or the cache in front of S3: `signer`), or straight from
    S3 (presigned) or a CDN (`cdn_url` + key) when downloads are redirected."""

    def __init__(
        self,
        objects: ObjectStore | None,
        expiry_seconds: int,
        public_url: str,
        signer: Signer | None = None,
        cdn_url: str = "",
    ):
        self.objects, self.expiry, self.public_url = objects, expiry_seconds, public_url.rstrip("/")
        self.signer, self.cdn_url = signer, cdn_url.rstrip("/")

    async def __call__(self, package: Package, base_url: str) -> str | None:
        where = locate(package.uri)
        if not where.bucket:
            return where.url
        if self.objects is None or where.bucket != bucket_of(self.objects):
            return None  # only the platform's own bucket is linked to
        if self.signer is not None:
            return (self.public_url or base_url) + self.signer.link(package.sha256, self.expiry)
        if self.cdn_url:
            return f"{self.cdn_url}/{quote(where.key)}"
        url = await self.objects.presign_get(where.key, expires_seconds=self.expiry)
        return (self.public_url or base_url) + url if url.startswith("/") else url


class SelfVerified:
    """Packages checked by this process (resources from a folder: no operator checks them): verified once per
    URI, size and sha256, on each config change, in the background."""

    def __init__(self, objects: ObjectStore | None):
        self.objects = objects
        self.ok: set[tuple[str, int, str]] = set()
        self.problems: dict[tuple[str, int, str], str] = {}
        self._running: asyncio.Task[None] | None = None
        self._latest: DeliveryConfig | None = None

    def __call__(self, release: Release) -> bool:
        p = release.spec.package
        return p is None or (p.uri, p.size_bytes, p.sha256) in self.ok

    def changed(self, config: DeliveryConfig) -> None:
        self._latest = config
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        while self._latest is not None:  # a change while checking is checked next
            config, self._latest = self._latest, None
            for shelf in config.catalog.shelves.values():
                for release in shelf:
                    await self._one(release)

    async def _one(self, release: Release) -> None:
        p = release.spec.package
        if p is None or (p.uri, p.size_bytes, p.sha256) in self.ok:
            return
        try:
            problem = await verify(p, self.objects)
        except Exception as e:  # the store away: looked at again on the next change
            problem = f"could not be read: {e!r}"
        if problem is None:
            self.ok.add((p.uri, p.size_bytes, p.sha256))
        elif self.problems.get((p.uri, p.size_bytes, p.sha256)) != problem:
            self.problems[(p.uri, p.size_bytes, p.sha256)] = problem
            log.warning("%s/%s is not offered: %s", release.namespace, release.name, problem)


class DeliveryASGI:
    """The check and the downloads are handlers of the lean HTTP/1.1 server (`route`; files go out with
    sendfile(2)); under an ASGI server (HTTP/2 through hypercorn, tests) the same handlers answer through
    `__call__`. Health and metrics go to FastAPI."""

    def __init__(
        self,
        checker: Checker,
        app: Any,
        settings: DeliverySettings,
        downloads: Downloads | CachedDownloads | None,
        expo: Expo | None = None,
    ):
        self.checker, self.app, self.state = checker, app, app.state
        self.settings, self.downloads, self.expo = settings, downloads, expo
        tally = checker.tally or Tally(open_counters("memory://", settings.redis_prefix))
        self.codepush = CodePush(
            checker.live, checker.seats, checker.link, checker.verified, settings.max_body_bytes, self._base_url, tally
        )
        self.reports = Reports(checker.live, tally, settings.max_body_bytes)

    def route(self, path: str) -> Callable[[Request], Awaitable[Answer]] | None:
        if path == CHECK_PATH:
            return self.check
        if path == REPORT_PATH:
            return self.reports
        if self.downloads is not None and self.downloads.handles(path):
            return self.downloads
        if self.expo is not None and self.expo.handles(path):
            return self.expo_updates
        return self.codepush.route(path)

    async def expo_updates(self, req: Request) -> Answer:
        assert self.expo is not None
        return await self.expo(req, self._base_url(req))

    def body_limit(self) -> int:
        return self.settings.max_body_bytes

    async def check(self, req: Request) -> Answer:
        if req.method != "POST":
            code = codes.METHOD_NOT_ALLOWED
            body: dict[str, Any] = {"resultCode": code.code, "resultMsg": code.memo}
        else:
            data = await req.body(self.settings.max_body_bytes)
            if data is None:
                code = codes.REQUEST_TOO_LARGE
                body = {"resultCode": code.code, "resultMsg": code.memo}
            else:
                try:
                    code, body = await self.checker.check(data, self._base_url(req))
                except Exception:
                    log.exception("update check failed")
                    code = codes.INTERNAL_ERROR
                    body = {"resultCode": code.code, "resultMsg": code.memo}
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Result-Status": str(code.code), "Cache-Control": "no-store"}
        return Answer(code.http_status, headers, raw)

    def _base_url(self, req: Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = req.headers.get("host", "")
        return f"http://{host}" if host else ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = self.route(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        await send_asgi(await handler(AsgiRequest(scope, receive)), scope["method"], send)


def _build(settings: DeliverySettings) -> Served:
    lists = IdLists(None)  # its store is set below, once opened
    live: LiveConfig[DeliveryConfig] = LiveConfig("delivery", KINDS, lambda r: compile_config(r, lists), EMPTY)

    def live_package(sha256: str) -> Package | None:
        """The package, or diff package, of a live release with this sha256, if any (a cached link serves
        nothing else)."""
        for shelf in live.current.catalog.shelves.values():
            for release in shelf:
                p = release.spec.package
                if p is None or not checker.verified(release):
                    continue
                if p.sha256 == sha256:
                    return p
                for diff in release.diffs:
                    if diff.package.sha256 == sha256:
                        return diff.package
        return None

    sets = (
        MemoryMemberSets()
        if settings.redis_url.startswith("memory://")
        else RedisMemberSets(settings.redis_url, prefix=settings.redis_prefix)
    )
    objects: ObjectStore | None = None
    downloads: Downloads | CachedDownloads | None = None
    signer = None
    if settings.objects_url:
        objects = open_objectstore(
            settings.objects_url,
            access_key=settings.objects_access_key,
            secret_key=settings.objects_secret_key,
            url_base=PACKAGES_PATH,
        )
        if isinstance(objects, LocalObjectStore):
            downloads = Downloads(objects)
        elif settings.downloads == "cache":
            signer = Signer(bytes.fromhex(settings.download_signing_key) or secrets.token_bytes(32))
            folder = settings.cache_dir or tempfile.mkdtemp(prefix="mpaas-delivery-cache-")
            downloads = CachedDownloads(PackageCache(objects, folder, settings.cache_bytes), signer, live_package)
    self_verify = settings.verify_packages
    if self_verify is None:
        self_verify = settings.config_source == "dir"
    verified = SelfVerified(objects) if self_verify else None
    tally = Tally(open_counters(settings.redis_url, settings.redis_prefix))
    checker = Checker(
        live,
        Seats(sets),
        Links(objects, settings.url_expiry_seconds, settings.public_url, signer, settings.cdn_url),
        verified if verified is not None else (lambda r: r.verified),
        tally,
    )

    lists.objects = objects

    def named_lists(config: DeliveryConfig) -> None:
        lists.want(
            {
                key
                for shelf in config.catalog.shelves.values()
                for r in shelf
                for key in (r.device_list, r.user_list)
                if key
            }
        )

    async def start() -> None:
        if verified is not None:
            live.subscribe(verified.changed)
        live.subscribe(named_lists)
        live.start(settings)

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        return True, f"{len(live.current.catalog)} releases"

    bundles = Bundles(objects, settings.expo_cache_dir or None)
    expo = Expo(
        lambda: live.current.catalog,
        lambda: live.current.apps,
        checker.seats,
        bundles,
        checker.verified,
        Path(settings.expo_signing_key_file).read_bytes() if settings.expo_signing_key_file else None,
        settings.expo_signing_key_id,
        tally,
    )

    async def close_bundles() -> None:
        bundles.close()

    app = component_app(
        "delivery",
        background={"whitelists": lists.run},
        on_start=[start, tally.start],
        on_stop=[live.stop, tally.stop, sets.close, close_bundles],
        ready=ready,
    )
    app.state.live = live
    served = DeliveryASGI(checker, app, settings, downloads, expo)
    # asyncio's loop: its sendfile(2) sends packages without copying them through Python (docs/delivery.md).
    return Served(served, router=served.route, body_limit=served.body_limit, uvloop=False)


def _check(settings: DeliverySettings) -> str | None:
    key = settings.download_signing_key
    if key and (len(key) < 64 or not all(c in "0123456789abcdefABCDEF" for c in key) or len(key) % 2):
        return "MPAAS_DOWNLOAD_SIGNING_KEY: hex digits, 32 bytes (64 digits) or more"
    if settings.expo_signing_key_file:
        try:
            Expo.load_key(Path(settings.expo_signing_key_file).read_bytes())
        except (OSError, ValueError) as e:
            return f"MPAAS_EXPO_SIGNING_KEY_FILE: {e}"
    return None


COMPONENT = Component(
    name="delivery",
    summary="update checks by gray release (DeliveryTask) and package downloads",
    kinds=KINDS,
    settings=DeliverySettings,
    build=_build,
    dev_port=8081,
    codes=codes.ALL,
    check=_check,
)
