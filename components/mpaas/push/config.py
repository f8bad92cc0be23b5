"""What push serves, compiled from the resources: the apps and their server API keys (MpaasGateway
`apps[]` and their credentials Secrets), each app's channels (PushChannel) with a vendor client each, and the
Link channels' token keys (devices authenticate with their link token).

A vendor client is built once per channel and kept while its spec and Secret stay the same, so its
connections and access tokens survive unrelated config changes; a replaced client is closed a minute later,
when sends in flight on it are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..api.gateway import GatewaySpec
from ..api.push import ChannelType, PushChannelSpec, missing_secret_keys
from ..config import Key, Resources
from ..keyring import SECRET, KeyChain, KeyRing, secret_data
from ..link.config import LinkConfig
from ..link.config import compiler as link_compiler
from ..link.config import token_secrets as link_token_secrets
from .receipts import MAX_URL, RECEIPT_TOKEN, receipt_address, valid_receipt_token
from .vendors import build_client
from .vendors.base import CredentialsError, VendorClient

log = logging.getLogger("mpaas.push")

GATEWAY = "MpaasGateway"
CHANNEL = "PushChannel"
CA_BUNDLE = "caBundle"  # optional entry of a vendor channel's Secret: PEM CAs to trust for its endpoint
PENDING = "credentials Secret not readable yet"  # the channel's Secret is not listed yet: wait, do not fail
SERVER_KEY = "serverApiKey"  # the entry of an app's credentials Secret that signs its server API calls
MIN_SERVER_KEY_BYTES = 32


@dataclass(frozen=True)
class AppKeys:
    app_id: str
    workspace_id: str
    keys: KeyChain[bytes]  # HMAC keys of the server API: the current first, then rotated ones in their overlap
    problem: str | None  # why no key is usable, when none is


@dataclass(frozen=True)
class VendorChannel:
    namespace: str
    name: str
    type: ChannelType
    app_id: str
    workspace_id: str | None  # None: every workspace of the app
    client: VendorClient | None
    problem: str | None  # why there is no client (missing Secret, a key that does not parse)
    messages_per_second: int | None
    feedback_url: str | None = None  # where failed tokens are posted
    priority: int = 0  # its place in the app's fallback order, lower first
    receipt_url: str | None = None  # where the vendor posts its receipts (with the token), when they are on
    receipt_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PushConfig:
    apps: dict[tuple[str, str], AppKeys] = field(default_factory=dict)
    channels: tuple[VendorChannel, ...] = ()
    link: LinkConfig = field(default_factory=LinkConfig)

    def app(self, app_id: str, workspace_id: str) -> AppKeys | None:
        return self.apps.get((app_id, workspace_id))

    def vendors(self, app_id: str, workspace_id: str) -> dict[ChannelType, VendorChannel]:
        """The app's vendor channels by type; a channel for this workspace wins over one for every workspace."""
        out: dict[ChannelType, VendorChannel] = {}
        for c in self.channels:
            if c.app_id == app_id and c.workspace_id in (workspace_id, None):
                if c.type not in out or c.workspace_id is not None:
                    out[c.type] = c
        return out

    def has_link(self, app_id: str, workspace_id: str) -> bool:
        return self.link.find(app_id, workspace_id) is not None

    @property
    def settled(self) -> bool:
        """Every channel's Secret has been read: until then a device's route may still change."""
        return not any(c.problem == PENDING and c.client is None for c in self.channels)

    def channel(self, namespace: str, name: str) -> VendorChannel | None:
        return next((c for c in self.channels if (c.namespace, c.name) == (namespace, name)), None)


EMPTY = PushConfig()


def secrets_named(resources: Resources) -> set[Key]:
    """The Secrets push reads: the apps' credentials, the vendor channels' credentials, the link token keys."""
    out = set(link_token_secrets(resources))
    for (namespace, _), res in resources.get(GATEWAY, {}).items():
        out |= {(namespace, name) for name in cast(GatewaySpec, res.spec).secret_names()}
    for (namespace, _), res in resources.get(CHANNEL, {}).items():
        spec = cast(PushChannelSpec, res.spec)
        if spec.credentials_secret_ref is not None:
            out.add((namespace, spec.credentials_secret_ref.name))
    return out


def _server_key(material: bytes) -> bytes:
    if len(material) < MIN_SERVER_KEY_BYTES:
        raise ValueError(f"{SERVER_KEY} must be at least {MIN_SERVER_KEY_BYTES} bytes")
    return material


def default_priority(channel: ChannelType) -> int:
    """APNs 10, FCM 20, Huawei 30, Honor 40, Xiaomi 50, OPPO 60, Vivo 70."""
    order = [ChannelType.APNS, ChannelType.FCM, ChannelType.HUAWEI, ChannelType.HONOR, ChannelType.XIAOMI,
             ChannelType.OPPO, ChannelType.VIVO]  # fmt: skip
    return 10 * (order.index(ChannelType(channel)) + 1)


def channel_options(spec: PushChannelSpec) -> dict[str, str]:
    """The non-secret settings a vendor client reads, from the channel's typed settings."""
    out: dict[str, str] = {}
    if spec.apns is not None:
        out.update(
            teamId=spec.apns.team_id, keyId=spec.apns.key_id, topic=spec.apns.topic, environment=spec.apns.environment
        )
    if spec.fcm is not None:
        out["projectId"] = spec.fcm.project_id
    if spec.xiaomi is not None:
        out["packageName"] = spec.xiaomi.package_name
    return out


def receipts_of(
    namespace: str, name: str, spec: PushChannelSpec, data: dict[str, bytes] | None
) -> tuple[str | None, str | None]:
    """(the receipt address, its token) of a channel whose receipts are on; (None, None), with the reason
    logged, when they cannot be."""
    if spec.receipt_url is None or data is None:
        return None, None
    raw = data.get(RECEIPT_TOKEN, b"").strip()
    token = raw.decode("ascii", "replace")
    if not valid_receipt_token(token):
        log.warning(
            "push channel %s/%s: receipts are off: the credentials Secret needs %s, 16-64 letters, digits, - or _",
            namespace, name, RECEIPT_TOKEN,
        )  # fmt: skip
        return None, None
    address = receipt_address(spec.receipt_url, namespace, name, token)
    limit = MAX_URL.get(ChannelType(spec.type))
    if limit is not None and len(address.encode()) > limit:
        log.warning(
            "push channel %s/%s: receipts are off: their address is %d bytes, %s takes at most %d (shorten "
            "receiptUrl or the receiptToken)", namespace, name, len(address.encode()), spec.type, limit,
        )  # fmt: skip
        return None, None
    return address, token


def _ca_file(pem: bytes) -> str:
    """A file holding `pem`, named by its digest (the same bundle, the same file)."""
    path = Path(tempfile.gettempdir()) / f"mpaas-push-ca-{hashlib.sha256(pem).hexdigest()}.pem"
    if not path.exists() or path.read_bytes() != pem:  # written whole under a private name, then renamed
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".mpaas-push-ca-")
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(partial, path)
    return str(path)


class Clients:
    """Vendor clients by channel, rebuilt only when what they are built from changes."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], tuple[str, VendorClient]] = {}

    def get(
        self, key: tuple[str, str], spec: PushChannelSpec, data: dict[str, bytes]
    ) -> tuple[VendorClient | None, str | None]:
        options = channel_options(spec)
        fingerprint = hashlib.sha256(
            json.dumps(
                [spec.type, spec.endpoint, options, sorted((k, v.hex()) for k, v in data.items())], sort_keys=True
            ).encode()
        ).hexdigest()
        seen = self._built.get(key)
        if seen is not None and seen[0] == fingerprint:
            return seen[1], None
        missing = missing_secret_keys(ChannelType(spec.type), data)
        if missing:
            self._retire(key)
            return None, f"the credentials Secret lacks {', '.join(missing)}"
        if CA_BUNDLE in data:  # a private or local endpoint's CA: the clients take a file
            options["caFile"] = _ca_file(data[CA_BUNDLE])
        try:
            client = build_client(spec.type, data, endpoint=spec.endpoint, options=options)
        except CredentialsError as e:
            self._retire(key)
            return None, str(e)
        self._retire(key)
        self._built[key] = (fingerprint, client)
        return client, None

    def last(self, key: tuple[str, str]) -> VendorClient | None:
        seen = self._built.get(key)
        return seen[1] if seen is not None else None

    def keep_only(self, keys: set[tuple[str, str]]) -> None:
        for key in [k for k in self._built if k not in keys]:
            self._retire(key)

    def _retire(self, key: tuple[str, str]) -> None:
        old = self._built.pop(key, None)
        if old is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(60, lambda: loop.create_task(_close(old[1])))

    async def close(self) -> None:
        for _, client in self._built.values():
            await _close(client)
        self._built.clear()


async def _close(client: VendorClient) -> None:
    with contextlib.suppress(Exception):
        await client.close()


def compiler(keyring: KeyRing, clients: Clients) -> Callable[[Resources], PushConfig]:
    compile_link = link_compiler(keyring)

    def compile_push(resources: Resources) -> PushConfig:
        apps: dict[tuple[str, str], AppKeys] = {}
        for (namespace, _), res in sorted(resources.get(GATEWAY, {}).items()):
            for a in cast(GatewaySpec, res.spec).apps:
                secret = a.credentials_secret_ref.name if a.credentials_secret_ref else None
                data = secret_data(resources, namespace, secret)
                chain, problem = keyring.chain(
                    ("push-server", namespace, a.app_id, a.workspace_id),
                    (data or {}).get(SERVER_KEY),
                    _server_key,
                    a.key_overlap_seconds,
                    known=data is not None,
                )
                if secret is None:
                    problem = f"the app has no credentialsSecretRef holding {SERVER_KEY}"
                apps.setdefault((a.app_id, a.workspace_id), AppKeys(a.app_id, a.workspace_id, chain, problem))
        channels: list[VendorChannel] = []
        for (namespace, name), res in sorted(resources.get(CHANNEL, {}).items()):
            spec = cast(PushChannelSpec, res.spec)
            if spec.type == ChannelType.LINK:
                continue
            ref = spec.credentials_secret_ref
            data = secret_data(resources, namespace, ref.name if ref else None)
            client: VendorClient | None = None
            if data is None:  # not known yet: the last client built stays in use
                client, problem = clients.last((namespace, name)), PENDING
            else:
                client, problem = clients.get((namespace, name), spec, data)
            if problem:
                log.warning("push channel %s/%s: %s", namespace, name, problem)
            receipt_url, receipt_token = receipts_of(namespace, name, spec, data)
            channels.append(
                VendorChannel(
                    namespace,
                    name,
                    ChannelType(spec.type),
                    spec.app_id,
                    spec.workspace_id,
                    client,
                    problem,
                    spec.messages_per_second,
                    spec.feedback_url,
                    spec.fallback_priority if spec.fallback_priority is not None else default_priority(spec.type),
                    receipt_url,
                    receipt_token,
                )
            )
        clients.keep_only({(c.namespace, c.name) for c in channels})
        return PushConfig(apps, tuple(channels), compile_link(resources))

    return compile_push


__all__ = ["CHANNEL", "EMPTY", "GATEWAY", "SECRET", "SERVER_KEY", "AppKeys", "Clients", "PushConfig", "VendorChannel"]
