"""Expo Updates protocol v1 (and 0): Expo apps whose `updates.url` is the platform get their updates from the same
DeliveryTasks and targeting as every other client (docs/delivery.md, "Expo Updates").

    GET /v1/delivery/expo/{appId}/{workspaceId}          the manifest, or a directive
    GET /v1/delivery/expo/assets/{package}/{asset}       an asset, by the sha256 of its package and its own

An update is a Hotfix task whose package is an `expo export` dist (zipped by `mpaas delivery publish`). Its
manifest is built from the package's metadata.json the first time a replica needs it: the bundle and assets are
extracted into a local folder under their sha256 (so asset URLs never change content), and every replica builds
the same manifest (its id derives from the package's sha256).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from prometheus_client import Counter

from ..api.delivery import Package, ResourceType
from ..apps import AppDirectory
from ..http1 import FileBody, Request
from ..stores import ObjectStore
from . import diffs
from .answer import Answer
from .check import OFFERS
from .packages import bucket_of, locate
from .targeting import Catalog, Client, Release, Seats, choose

if TYPE_CHECKING:
    from .reports import Tally

log = logging.getLogger("mpaas.delivery")

PREFIX = "/v1/delivery/expo/"
ASSETS = PREFIX + "assets/"
PLATFORMS = {"ios": "IOS", "android": "Android"}
EXPO_NAMES = {v: k for k, v in PLATFORMS.items()}
DEVICE_HEADER = "mpaas-device"  # a server-defined header: the client sends it back, so the cohort is sticky
MAX_ENTRIES = 20_000
MAX_INFLATED = 1 << 30
MAX_PACKAGES = 32  # manifests kept in memory
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EXT = re.compile(r"[A-Za-z0-9]{1,16}")

UPDATES = Counter("mpaas_delivery_expo_answers_total", "Expo update requests, by answer", ["answer"])


class ExpoError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- Expo structured field values (a subset of RFC 8941: dictionaries of strings, integers, decimals) -------

_SFV_MEMBER = re.compile(
    r'\s*([a-z*][a-z0-9_\-.*]{0,63})(?:=(?:"((?:[^"\\\x00-\x1f\x7f]|\\["\\])*)"|(-?[0-9]{1,15}(?:\.[0-9]{1,3})?)))?\s*(?:,|$)'
)


def parse_sfv(text: str) -> dict[str, str | int | float | bool]:
    """An Expo SFV dictionary; ExpoError (400) for one that is not."""
    if len(text) > 1024:
        raise ExpoError(400, "a structured header longer than 1024 characters")
    out: dict[str, str | int | float | bool] = {}
    pos = 0
    while pos < len(text) and text[pos:].strip():
        m = _SFV_MEMBER.match(text, pos)
        if not m or m.end() == pos or len(out) >= 32:
            raise ExpoError(400, f"not a structured-field dictionary: {text[:80]!r}")
        key, string, number = m.group(1), m.group(2), m.group(3)
        if string is not None:
            out[key] = re.sub(r"\\(.)", r"\1", string)
        elif number is not None:
            out[key] = float(number) if "." in number else int(number)
        else:
            out[key] = True
        pos = m.end()
    return out


def serialize_sfv(values: dict[str, str]) -> str:
    return ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in values.items()
    )


# --- accept ---------------------------------------------------------------------------------------------


def negotiate(accept: str) -> str | None:
    """multipart/mixed, application/expo+json or application/json: the one the client prefers (q values), or
    None when it takes none of them."""
    offered = ("multipart/mixed", "application/expo+json", "application/json")
    best: tuple[float, int, str] | None = None
    for part in accept.split(",")[:32]:
        fields = [f.strip() for f in part.split(";")]
        kind, q = fields[0].lower(), 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:]) if re.fullmatch(r"[01](?:\.[0-9]{0,3})?", f[2:]) else 0.0
                except ValueError:
                    q = 0.0
        matches = [o for o in offered if kind in (o, "*/*") or (kind.endswith("/*") and o.startswith(kind[:-1]))]
        for o in matches:
            rank = (q, -offered.index(o), o)  # ties: the order above (multipart can carry directives)
            if q > 0 and (best is None or rank[:2] > best[:2]):
                best = rank
    return best[2] if best else None


def accepts_bsdiff(header: str) -> bool:
    """Whether an A-IM header (RFC 3229: instance manipulations, each with an optional q value) accepts bsdiff;
    `bsdiff;q=0` and a q that does not parse refuse it."""
    for item in header.split(",")[:16]:
        name, _, params = item.partition(";")
        if name.strip().lower() == "bsdiff":
            params = params.strip().lower()
            if not params:
                return True
            q = _QVALUE.fullmatch(params)
            return q is not None and float(q.group(1)) > 0
    return False


_QVALUE = re.compile(r"q\s*=\s*([01](?:\.[0-9]{0,3})?)")


# --- packages: expo export dist -> manifest --------------------------------------------------------------


@dataclass(frozen=True)
class Asset:
    sha256: str  # hex
    hash: str  # base64url sha256, as the manifest gives it
    key: str  # md5 hex, as Expo's tools key assets
    content_type: str
    extension: str  # ".png"; the launch asset: ".bundle"


@dataclass(frozen=True)
class Bundle:
    """One package's update for one platform."""

    id: str
    launch: Asset
    assets: tuple[Asset, ...]


T = TypeVar("T")


async def _once(pending: dict[str, asyncio.Future[T]], key: str, work: Callable[[], Awaitable[T]]) -> T:
    """`work` run once for `key` however many ask at the same time: the others wait for its result."""
    running = pending.get(key)
    if running is not None:
        return await asyncio.shield(running)
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    pending[key] = future
    try:
        result = await work()
        future.set_result(result)
        return result
    except Exception as e:
        future.set_exception(e)
        future.exception()  # retrieved: a failure nobody else waited for is not logged as lost
        raise
    except BaseException:
        future.cancel()
        raise
    finally:
        del pending[key]


def update_id(package_sha256: str, platform: str) -> str:
    """The manifest id every replica derives alike: a UUID from the package's sha256 and the platform."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mpaas-expo:{package_sha256}:{platform}"))


class Bundles:
    """Expo packages fetched from the object store and extracted, once per package, into `folder/files/`
    under each file's sha256; their manifests kept in memory (a few)."""

    def __init__(self, objects: ObjectStore | None, folder: str | Path | None = None):
        self.objects = objects
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="mpaas-expo-"))
        self.files = self.folder / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._manifests: OrderedDict[tuple[str, str], Bundle] = OrderedDict()
        self._loading: dict[str, asyncio.Future[dict[str, Bundle]]] = {}
        self._patching: dict[str, asyncio.Future[Path]] = {}
        self.launch_assets: set[str] = set()  # sha256 of launch bundles: their URLs may answer a patch

    async def bundle(self, release: Release, platform: str) -> Bundle:
        package = release.spec.package
        assert package is not None
        found = self._manifests.get((package.sha256, platform))
        if found is not None:
            self._manifests.move_to_end((package.sha256, platform))
            return found
        loaded = await self.load(release)
        if platform not in loaded:
            raise ExpoError(404, f"the update {release.name} has no {platform} bundle")
        return loaded[platform]

    async def load(self, release: Release) -> dict[str, Bundle]:
        package = release.spec.package
        assert package is not None

        async def extract() -> dict[str, Bundle]:
            zipped = await self._fetch(package.uri, package.sha256, package.size_bytes)
            try:
                bundles = await asyncio.to_thread(self._extract, zipped, package.sha256)
            finally:
                zipped.unlink(missing_ok=True)
            for platform, b in bundles.items():
                self._manifests[(package.sha256, platform)] = b
                self.launch_assets.add(b.launch.sha256)
            while len(self._manifests) > MAX_PACKAGES:
                self._manifests.popitem(last=False)
            return bundles

        return await _once(self._loading, package.sha256, extract)

    async def _fetch(self, uri: str, sha256: str, size: int) -> Path:
        where = locate(uri)
        if not where.bucket or self.objects is None:
            raise ExpoError(503, "Expo updates are served from packages in the platform's object store")
        if where.bucket != bucket_of(self.objects):
            raise ExpoError(503, f"{uri} is not in the platform's object store")
        part = self.folder / f".{secrets.token_hex(8)}.zip"
        digest = hashlib.sha256()
        kept = False
        try:
            with part.open("wb") as f:
                done = 0
                while done < size:
                    chunk = await self.objects.get(where.key, start=done, length=min(8 << 20, size - done))
                    if not chunk:
                        break
                    digest.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
                    done += len(chunk)
            if done != size or digest.hexdigest() != sha256:
                raise ExpoError(503, f"{uri} is not the package its task names")
            kept = True
            return part
        finally:
            if not kept:  # a failed or cancelled fetch leaves nothing behind
                part.unlink(missing_ok=True)

    def _extract(self, zipped: Path, package_sha256: str) -> dict[str, Bundle]:
        try:
            z = zipfile.ZipFile(zipped)
        except zipfile.BadZipFile:
            raise ExpoError(404, "the update's package is not a zip (an expo export dist)") from None
        with z:
            entries = z.infolist()
            if len(entries) > MAX_ENTRIES or sum(e.file_size for e in entries) > MAX_INFLATED:
                raise ExpoError(404, "the update's package is larger than an Expo update may be")
            names = {e.filename: e for e in entries}
            if "metadata.json" not in names:
                raise ExpoError(404, "no metadata.json in the update's package: is it an expo export dist?")
            try:
                metadata = json.loads(z.read("metadata.json"))
                platforms = metadata["fileMetadata"]
            except (ValueError, KeyError, TypeError):
                raise ExpoError(404, "the update's metadata.json is not expo export's") from None
            out: dict[str, Bundle] = {}
            for platform in PLATFORMS:
                meta = platforms.get(platform) if isinstance(platforms, dict) else None
                if not isinstance(meta, dict) or not isinstance(meta.get("bundle"), str):
                    continue
                launch = self._file(z, names, meta["bundle"], "bundle", launch=True)
                assets = []
                for a in meta.get("assets") or []:
                    if isinstance(a, dict) and isinstance(a.get("path"), str):
                        ext = str(a.get("ext") or "")
                        assets.append(self._file(z, names, a["path"], ext if _EXT.fullmatch(ext) else ""))
                out[platform] = Bundle(update_id(package_sha256, platform), launch, tuple(assets))
            if not out:
                raise ExpoError(404, "the update's metadata.json names no ios or android bundle")
            return out

    def _file(
        self, z: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo], name: str, ext: str, launch: bool = False
    ) -> Asset:
        info = names.get(name)
        if info is None or info.is_dir():
            raise ExpoError(404, f"the update's metadata.json names {name[:100]!r}, which its package lacks")
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        part = self.files / f".{secrets.token_hex(8)}"
        with z.open(info) as src, part.open("wb") as dst:
            while chunk := src.read(1 << 20):
                sha.update(chunk)
                md5.update(chunk)
                dst.write(chunk)
        digest = sha.hexdigest()
        os.replace(part, self.files / digest)
        content_type = (
            "application/javascript" if launch else (mimetypes.types_map.get(f".{ext}") or "application/octet-stream")
        )
        (self.files / f"{digest}.type").write_text(content_type)  # what the asset route answers it as
        hash64 = base64.urlsafe_b64encode(sha.digest()).decode().rstrip("=")
        return Asset(digest, hash64, md5.hexdigest(), content_type, f".{ext}" if ext else "")

    async def patch(self, diff: Package) -> Path:
        """A diff package (a bsdiff patch of a launch bundle), fetched once into `files/` under its sha256, however
        many ask for it at once."""
        path = self.files / diff.sha256
        if path.is_file():
            return path

        async def fetch() -> Path:
            os.replace(await self._fetch(diff.uri, diff.sha256, diff.size_bytes), path)
            return path

        return await _once(self._patching, diff.sha256, fetch)

    def has(self, asset_sha256: str) -> tuple[Path, str] | None:
        """The asset's file and content type, once extracted here."""
        path = self.files / asset_sha256
        kind = self.files / f"{asset_sha256}.type"
        if not _HEX64.fullmatch(asset_sha256) or not path.is_file() or not kind.is_file():
            return None
        return path, kind.read_text()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# --- the protocol ---------------------------------------------------------------------------------------


class Expo:
    """The protocol's two routes. `catalog` and `apps` give the live config's; `verified` says whether a
    release's package was checked (as for the platform's own check)."""

    def __init__(
        self,
        catalog: Callable[[], Catalog],
        apps: Callable[[], AppDirectory],
        seats: Seats,
        bundles: Bundles,
        verified: Callable[[Release], bool],
        signing_key: bytes | None = None,
        key_id: str = "main",
        tally: Tally | None = None,
    ):
        self.catalog, self.apps, self.seats, self.bundles = catalog, apps, seats, bundles
        self.verified, self.key_id = verified, key_id
        self.tally = tally  # counts each manifest offered as a hit of its task and stage (reports.py)
        self.key = self.load_key(signing_key) if signing_key is not None else None

    @staticmethod
    def load_key(pem: bytes) -> rsa.RSAPrivateKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the Expo code-signing key must be an RSA private key (rsa-v1_5-sha256)")
        return key

    def handles(self, path: str) -> bool:
        return path.startswith(PREFIX)

    async def __call__(self, req: Request, base_url: str) -> Answer:
        try:
            if req.method not in ("GET", "HEAD"):
                raise ExpoError(405, "GET")
            if req.path.startswith(ASSETS):
                return await self._asset(req)
            answer = await self._update(req, base_url)
        except ExpoError as e:
            UPDATES.labels(f"error-{e.status}").inc()
            return Answer(e.status, {"Content-Type": "text/plain", "expo-protocol-version": "1"}, str(e).encode())
        return answer

    async def _update(self, req: Request, base: str) -> Answer:
        parts = req.path[len(PREFIX) :].split("/")
        if len(parts) != 2 or not all(parts):
            raise ExpoError(404, "the updates URL is /v1/delivery/expo/{appId}/{workspaceId}")
        app_id, workspace_id = parts
        catalog = self.catalog()
        if self.apps().resolve(f"{app_id}/{workspace_id}") is None:
            raise ExpoError(404, f"no MpaasGateway registers the app {app_id[:64]}/{workspace_id[:64]}")
        h = req.headers
        if len(h.repeated() & {"expo-platform", "expo-runtime-version", "expo-protocol-version", DEVICE_HEADER}):
            raise ExpoError(400, "an expo- header is repeated")
        protocol = h.get("expo-protocol-version", "0")
        if protocol not in ("0", "1"):
            raise ExpoError(400, "expo-protocol-version: 0 or 1")
        platform = PLATFORMS.get(h.get("expo-platform", "").lower())
        if platform is None:
            raise ExpoError(400, "expo-platform must be ios or android")
        runtime = h.get("expo-runtime-version", "")
        if not runtime or len(runtime) > 200:
            raise ExpoError(400, "expo-runtime-version is required (at most 200 characters)")
        kind = negotiate(h.get("accept", "application/expo+json, application/json, multipart/mixed"))
        if kind is None:
            raise ExpoError(406, "this server answers multipart/mixed, application/expo+json or application/json")
        expects = parse_sfv(h["expo-expect-signature"]) if "expo-expect-signature" in h else None
        if expects is not None and self.key is None:
            raise ExpoError(400, "code signing was asked for, but no signing key is configured for Expo updates")
        device = h.get(DEVICE_HEADER) or h.get("eas-client-id") or ""
        if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", device):
            device = str(uuid.uuid4())  # a new cohort member: told to send it back (server-defined headers)
        client = Client(
            app_id,
            workspace_id,
            platform,
            device,
            app_version=runtime,
            channel=h.get("expo-channel-name", "")[:200],
        )
        current = h.get("expo-current-update-id", "").lower()
        release = await self._choose(catalog, client, runtime)
        headers = {
            "expo-protocol-version": protocol,
            "expo-sfv-version": "0",
            "expo-manifest-filters": "",
            "expo-server-defined-headers": serialize_sfv({DEVICE_HEADER: device}),
            "Cache-Control": "private, max-age=0",
        }
        if release is not None:
            bundle = await self.bundles.bundle(release, EXPO_NAMES[platform])
            if bundle.id != current:
                manifest = self._manifest(release, bundle, runtime, base)
                UPDATES.labels("manifest").inc()
                version = release.spec.package.version if release.spec.package else ""
                OFFERS.labels(app_id, ResourceType.HOTFIX.value, version, str(release.stage)).inc()
                if self.tally is not None:
                    self.tally.hit(release)
                return self._respond(kind, headers, ("manifest", manifest), expects)
        withdrawn = await self._withdrawn(catalog, client, current)
        if withdrawn:
            if kind != "multipart/mixed" or protocol == "0":
                raise ExpoError(406, "the answer is a directive (rollBackToEmbedded): ask for multipart/mixed")
            directive = {"type": "rollBackToEmbedded", "parameters": {"commitTime": _now()}}
            UPDATES.labels("rollBackToEmbedded").inc()
            return self._respond(kind, headers, ("directive", directive), expects)
        UPDATES.labels("none").inc()
        if protocol == "0" or kind != "multipart/mixed":
            if kind != "multipart/mixed" and protocol == "1":
                raise ExpoError(
                    406, "no update: the answer is a directive (noUpdateAvailable), ask for multipart/mixed"
                )
            return Answer(204, headers)
        return self._respond(kind, headers, ("directive", {"type": "noUpdateAvailable"}), expects)

    async def _choose(self, catalog: Catalog, client: Client, runtime: str) -> Release | None:
        """A release names its runtime in payload.runtimeVersion (exactly), else by filters.appVersion."""

        def offerable(release: Release) -> bool:
            wanted = (release.spec.payload or {}).get("runtimeVersion")
            return (wanted is None or str(wanted) == runtime) and self.verified(release)

        return await choose(catalog, self.seats, client, ResourceType.HOTFIX, time.time(), offerable)

    async def _withdrawn(self, catalog: Catalog, client: Client, current: str) -> bool:
        if not current:
            return False
        for release in catalog.releases(client, ResourceType.HOTFIX):
            p = release.spec.package
            if release.withdrawn and p is not None:
                if current in (update_id(p.sha256, "ios"), update_id(p.sha256, "android")):
                    return True
        return False

    def _manifest(self, release: Release, bundle: Bundle, runtime: str, base: str) -> dict[str, Any]:
        package = release.spec.package
        assert package is not None

        def asset(a: Asset, launch: bool = False) -> dict[str, Any]:
            out = {
                "hash": a.hash,
                "key": a.key,
                "contentType": a.content_type,
                "url": f"{base}{ASSETS}{package.sha256}/{a.sha256}",
            }
            if not launch and a.extension:
                out["fileExtension"] = a.extension
            return out

        return {
            "id": bundle.id,
            "createdAt": release.created or _now(),
            "runtimeVersion": runtime,
            "launchAsset": asset(bundle.launch, launch=True),
            "assets": [asset(a) for a in bundle.assets],
            "metadata": {},
            "extra": dict((release.spec.payload or {}).get("extra") or {}),
        }

    def _respond(self, kind: str, headers: dict[str, str], part: tuple[str, dict[str, Any]], expects: Any) -> Answer:
        name, body = part
        raw = json.dumps(body, separators=(",", ":")).encode()
        signature = self._sign(raw) if expects is not None else None
        if kind != "multipart/mixed":
            if signature:
                headers["expo-signature"] = signature
            return Answer(200, {**headers, "Content-Type": kind}, raw)
        boundary = secrets.token_hex(16)
        lines = [f"--{boundary}", f'Content-Disposition: inline; name="{name}"', "Content-Type: application/json"]
        if signature:
            lines.append(f"expo-signature: {signature}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + raw + f"\r\n--{boundary}--\r\n".encode()
        return Answer(200, {**headers, "Content-Type": f"multipart/mixed; boundary={boundary}"}, payload)

    def _sign(self, raw: bytes) -> str:
        assert self.key is not None
        sig = self.key.sign(raw, padding.PKCS1v15(), hashes.SHA256())
        return serialize_sfv({"sig": base64.b64encode(sig).decode(), "keyid": self.key_id})

    def _releases(self, package_sha: str) -> list[Release]:
        return [
            r
            for s in self.catalog().shelves.values()
            for r in s
            if r.spec.package and r.spec.package.sha256 == package_sha
        ]

    async def _asset(self, req: Request) -> Answer:
        parts = req.path[len(ASSETS) :].split("/")
        if len(parts) != 2 or not all(_HEX64.fullmatch(p) for p in parts):
            raise ExpoError(404, "no such asset")
        package_sha, asset_sha = parts
        found = self.bundles.has(asset_sha)
        if found is None:  # extracted by another replica: extract the package it names here too
            named = self._releases(package_sha)
            if not named:
                raise ExpoError(404, "no such asset")
            await self.bundles.load(named[0])
            found = self.bundles.has(asset_sha)
            if found is None:
                raise ExpoError(404, "no such asset")
        launch = asset_sha in self.bundles.launch_assets
        if launch and req.method == "GET" and accepts_bsdiff(req.headers.get("a-im", "")):
            try:
                patched = await self._patch(req, package_sha, asset_sha)
            except Exception as e:  # whatever fails here, the client still gets the whole bundle
                log.warning("Expo patch for %s not served: %r", asset_sha, e)
                patched = None
            if patched is not None:
                return patched
        path, content_type = found
        f = await asyncio.to_thread(path.open, "rb")
        size = os.fstat(f.fileno()).st_size
        headers = {
            "Content-Type": content_type,
            "Cache-Control": "public, max-age=31536000, immutable",
            "ETag": f'"{asset_sha}"',
            "X-Content-Type-Options": "nosniff",
        }
        if launch:  # a cache must not give a client that asked for a patch the whole file, nor the reverse
            headers["Vary"] = "A-IM, Expo-Current-Update-ID"
        UPDATES.labels("asset").inc()
        return Answer(200, headers, file=FileBody(f, 0, size))

    async def _patch(self, req: Request, package_sha: str, asset_sha: str) -> Answer | None:
        """The launch bundle as a bsdiff patch from the update the client runs (`226 IM Used`), when the operator
        built one (DeliveryTask spec.diffs); None: the whole file."""
        h = req.headers
        if h.repeated() & {"a-im", "expo-current-update-id", "expo-requested-update-id"}:
            return None
        current = h.get("expo-current-update-id", "").lower()
        requested = h.get("expo-requested-update-id", "").lower()
        if not current:
            return None
        for release in self._releases(package_sha):  # an Android and an IOS task may release one dist
            platform = EXPO_NAMES.get(release.spec.platform)
            if platform is None or not self.verified(release):
                continue
            diff = next(
                (
                    d
                    for d in release.diffs
                    if d.format == diffs.EXPO_BSDIFF and update_id(d.from_sha256, platform) == current
                ),
                None,
            )
            if diff is None:
                continue
            bundle = await self.bundles.bundle(release, platform)
            if bundle.launch.sha256 == asset_sha and (not requested or requested == bundle.id):
                return await self._patched(diff.package, current)
        return None

    async def _patched(self, diff: Package, current: str) -> Answer:
        path = await self.bundles.patch(diff)
        f = await asyncio.to_thread(path.open, "rb")
        size = os.fstat(f.fileno()).st_size
        headers = {
            "Content-Type": "application/octet-stream",
            "IM": "bsdiff",
            "expo-base-update-id": current,
            "Cache-Control": "private, no-store",
            "Vary": "A-IM, Expo-Current-Update-ID",
            "X-Content-Type-Options": "nosniff",
        }
        UPDATES.labels("patch").inc()
        return Answer(226, headers, file=FileBody(f, 0, size))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
