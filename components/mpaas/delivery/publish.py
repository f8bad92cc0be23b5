"""`mpaas delivery publish`: put a package into the platform's object store and write the DeliveryTask that
releases it (docs/delivery.md, "Publishing").

What real tools produce is taken as it is: an APK or IPA, a CodePush release zip or bundle folder, an H5
offline zip, an `expo export` dist folder (metadata.json, bundles, assets). A folder is zipped (entries sorted,
times fixed, so the same folder gives the same package and the same sha256). The package goes to a
content-addressed key, `packages/{appId}/{workspaceId}/{type}/{sha256}{ext}`: a key never changes content, so
downloads may be cached for ever. With a signing key (a PEM file or a Secret), the package's sha256 is signed
(ECDSA P-256 with SHA-256, or RSA PKCS#1 v1.5 with SHA-256) and the base64 signature goes into the task.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..api import DELIVERY_TASK, GROUP, VERSION, InvalidResource
from ..api.delivery import Platform, ResourceType
from ..stores import ObjectStore, open_objectstore
from .packages import bucket_of

CHUNK = 8 << 20
_NAME = re.compile(r"[^a-z0-9-]+")
_ZIP_MAGIC = b"PK\x03\x04"


class PublishError(ValueError):
    """What is wrong with the package or the arguments, in words."""


def check_package(path: Path, resource_type: str, platform: str) -> str:
    """The file extension the package keeps; PublishError when it is not what its type needs."""
    ext = path.suffix.lower()
    with path.open("rb") as f:
        magic = f.read(4)
    is_zip = magic == _ZIP_MAGIC
    names: list[str] = []
    if is_zip:
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()[:100_000]
        except zipfile.BadZipFile as e:
            raise PublishError(f"{path}: a damaged zip ({e})") from None
    if resource_type == ResourceType.APP_UPGRADE:
        if platform == Platform.ANDROID and not (is_zip and "AndroidManifest.xml" in names):
            raise PublishError(f"{path}: an Android AppUpgrade is an APK (a zip with AndroidManifest.xml)")
        if platform == Platform.IOS and not (is_zip and any(n.startswith("Payload/") for n in names)):
            raise PublishError(f"{path}: an iOS AppUpgrade is an IPA (a zip with a Payload/ folder)")
        return ext if ext in (".apk", ".ipa", ".hap", ".app") else (".apk" if platform == Platform.ANDROID else "")
    if resource_type in (ResourceType.H5_OFFLINE, ResourceType.MINI_PROGRAM):
        if not is_zip:
            raise PublishError(f"{path}: an {resource_type} package is a zip of the app's files")
        if not any(n.endswith((".html", ".htm", ".js", ".json")) for n in names):
            raise PublishError(f"{path}: no .html, .js or .json file in the zip: is it an offline package?")
        return ".zip"
    return ".zip" if is_zip else ext


def zip_folder(folder: Path, out: Path) -> None:
    """The folder as a zip whose bytes depend on the files alone (sorted entries, fixed times)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise PublishError(f"{folder}: an empty folder")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, p.read_bytes())


def digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def sign(sha256_hex: str, private_pem: bytes) -> str:
    """Base64 signature over the package's sha256 (its 32 bytes) with the app's delivery key."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise PublishError(f"the signing key is not an unencrypted PEM private key ({e})") from None
    message = bytes.fromhex(sha256_hex)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise PublishError("the signing key must be an ECDSA (P-256) or RSA key")
    return base64.b64encode(signature).decode()


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


async def upload(objects: ObjectStore, path: Path, key: str, sha256: str) -> None:
    await objects.ensure_bucket()
    found = await objects.stat(key)
    if found is not None and found.sha256 == sha256:
        return  # content-addressed: already there
    await objects.put_stream(key, _chunks(path), sha256=sha256)


def task_name(app: str, resource_type: str, version: str, offline_app_id: str = "") -> str:
    of = f"-{offline_app_id}" if offline_app_id else ""
    name = _NAME.sub("-", f"{app}-{resource_type}{of}-{version}".lower()).strip("-")
    return name[:63].rstrip("-")


def delivery_task(args: argparse.Namespace, uri: str, sha256: str, size: int, signature: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "appId": args.app,
        "workspaceId": args.workspace,
        "platform": args.platform,
        "resourceType": args.type,
        "package": {"uri": uri, "version": args.version, "sha256": sha256, "sizeBytes": size},
    }
    if signature:
        spec["package"]["signature"] = signature
    if args.offline_app_id:
        spec["offlineAppId"] = args.offline_app_id
    if args.upgrade_mode:
        spec["upgradeMode"] = args.upgrade_mode
    if args.description:
        spec["description"] = args.description
    if args.percent is not None:
        spec["targeting"] = {"percent": args.percent}
    if args.stages:
        stages = []
        for part in args.stages.split(","):
            percent, _, seconds = part.strip().partition(":")
            stage: dict[str, Any] = {"percent": _number(percent, "--stages percent")}
            if seconds:
                stage["durationSeconds"] = _number(seconds, "--stages seconds")
            stages.append(stage)
        spec["stages"] = stages
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeliveryTask",
        "metadata": {
            "name": args.name or task_name(args.app, args.type, args.version, args.offline_app_id or ""),
            "namespace": args.namespace,
        },
        "spec": spec,
    }
    try:
        DELIVERY_TASK.parse_spec(body)  # what the API server would refuse is refused here, with the same words
    except InvalidResource as e:
        raise PublishError(str(e)) from None
    return body


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise PublishError(f"{what}: {text!r} is not a whole number")
    return int(text)


async def _secret_key(spec: str) -> bytes:
    """`namespace/name[:key]` of a Secret holding the PEM (key default `signingKey`)."""
    from ..kube import SECRETS, KubeClient

    ref, _, field = spec.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise PublishError("--signing-key-secret: namespace/name[:key]")
    async with KubeClient() as client:
        secret = await client.get(SECRETS, namespace, name)
    data = (secret or {}).get("data") or {}
    value = data.get(field or "signingKey")
    if value is None:
        raise PublishError(f"Secret {namespace}/{name} has no key {field or 'signingKey'}")
    return base64.b64decode(value)


def publish(args: argparse.Namespace) -> dict[str, Any]:
    """Check, digest, sign and upload the package; returns the DeliveryTask (applied with --apply)."""
    source = Path(args.file)
    if not source.exists():
        raise PublishError(f"{source}: no such file or folder")
    url = args.objects_url or os.environ.get("MPAAS_OBJECTS_URL", "")
    if not url:
        raise PublishError(
            "no object store: give --objects-url or set MPAAS_OBJECTS_URL (s3://bucket?endpoint=... or file:///path)"
        )
    objects = open_objectstore(
        url,
        access_key=os.environ.get("MPAAS_OBJECTS_ACCESS_KEY", ""),
        secret_key=os.environ.get("MPAAS_OBJECTS_SECRET_KEY", ""),
    )
    with tempfile.TemporaryDirectory(prefix="mpaas-publish-") as tmp:
        path = source
        if source.is_dir():
            path = Path(tmp) / "package.zip"
            zip_folder(source, path)
        ext = check_package(path, args.type, args.platform)
        sha256, size = digest(path)
        pem = Path(args.signing_key).read_bytes() if args.signing_key else None
        if args.signing_key_secret:
            pem = asyncio.run(_secret_key(args.signing_key_secret))
        signature = sign(sha256, pem) if pem else None
        key = f"packages/{args.app}/{args.workspace}/{args.type}/{sha256}{ext}"
        body = delivery_task(args, f"s3://{bucket_of(objects)}/{key}", sha256, size, signature)
        asyncio.run(_store(objects, path, key, sha256, body if args.apply else None))
    return body


async def _store(objects: ObjectStore, path: Path, key: str, sha256: str, apply: dict[str, Any] | None) -> None:
    await upload(objects, path, key, sha256)
    if apply is not None:
        from ..kube import KubeClient

        async with KubeClient() as client:
            await client.apply(DELIVERY_TASK.resource, apply, field_manager="mpaas-publish")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("publish", help="upload a package and write the DeliveryTask that releases it")
    p.add_argument("file", help="an APK, IPA, zip, bundle, or a folder (expo export dist, CodePush bundle)")
    p.add_argument("--app", required=True, help="appId")
    p.add_argument("--workspace", default="default", help="workspaceId")
    p.add_argument("--platform", required=True, choices=[p.value for p in Platform])
    p.add_argument("--type", required=True, choices=[t.value for t in ResourceType if t != ResourceType.SWITCH])
    p.add_argument("--version", required=True, help="the package's version, dotted numbers")
    p.add_argument("--offline-app-id", help="the H5 offline app's or mini program's id (H5Offline, MiniProgram)")
    p.add_argument("--name", help="the DeliveryTask's name (default: app-type-version)")
    p.add_argument("--namespace", default="default")
    p.add_argument("--upgrade-mode", choices=["Silent", "Remind", "Force"])
    p.add_argument("--description", help="release notes shown to the user")
    p.add_argument("--percent", type=int, help="targeting.percent (without --stages)")
    p.add_argument("--stages", help="percent:seconds,...,percent (e.g. 5:3600,20:3600,100)")
    p.add_argument("--signing-key", help="a PEM private key file (ECDSA P-256 or RSA) to sign the package with")
    p.add_argument("--signing-key-secret", help="namespace/name[:key] of a Secret holding that PEM")
    p.add_argument("--objects-url", help="the object store (default: MPAAS_OBJECTS_URL)")
    p.add_argument("--apply", action="store_true", help="apply the DeliveryTask to the cluster (server-side apply)")


def run(args: argparse.Namespace) -> int:
    try:
        body = publish(args)
    except PublishError as e:
        print(f"mpaas delivery publish: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
    if args.apply:
        print(f"applied deliverytask/{body['metadata']['name']} in {body['metadata']['namespace']}", file=sys.stderr)
    return 0
