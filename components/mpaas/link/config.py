"""What the link pods serve, compiled from the Link PushChannels and the Secrets holding their token keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..api.push import ChannelType, PushChannelSpec
from ..config import Key, Resources
from ..keyring import SECRET, KeyRing, secret_data
from .heartbeat import Bounds
from .tokens import TokenKey

KIND = "PushChannel"
KEY_OVERLAP_SECONDS = 86400  # a rotated token key stays valid this long: devices get new tokens meanwhile


@dataclass(frozen=True)
class AppLink:
    """One app's Link channel."""

    app_id: str
    workspace_id: str | None  # None: every workspace of the app
    channel: tuple[str, str]  # the PushChannel's namespace and name
    bounds: Bounds
    keys: tuple[TokenKey, ...]  # the current key first, then rotated ones in their overlap
    problem: str | None = None  # why no key is usable, when none is


@dataclass(frozen=True)
class LinkConfig:
    apps: dict[tuple[str, str | None], AppLink] = field(default_factory=dict)

    def find(self, app_id: str, workspace_id: str) -> AppLink | None:
        return self.apps.get((app_id, workspace_id)) or self.apps.get((app_id, None))

    def key_ids(self) -> set[str]:
        return {k.id for a in self.apps.values() for k in a.keys}


EMPTY = LinkConfig()


def token_secrets(resources: Resources) -> set[Key]:
    """The Secrets the Link channels name (watched one by one)."""
    out = set()
    for (namespace, _), res in resources.get(KIND, {}).items():
        spec: PushChannelSpec = res.spec
        if spec.type == ChannelType.LINK and spec.link is not None and spec.link.token_secret_ref is not None:
            out.add((namespace, spec.link.token_secret_ref.name))
    return out


def compiler(keyring: KeyRing) -> Callable[[Resources], LinkConfig]:
    def compile_link(resources: Resources) -> LinkConfig:
        apps: dict[tuple[str, str | None], AppLink] = {}
        for (namespace, name), res in sorted(resources.get(KIND, {}).items()):
            spec: PushChannelSpec = res.spec
            if spec.type != ChannelType.LINK:
                continue
            link = spec.link
            bounds = Bounds(link.heartbeat.min_seconds, link.heartbeat.max_seconds) if link else Bounds()
            ref = link.token_secret_ref if link else None
            keys: tuple[TokenKey, ...] = ()
            problem: str | None = "link.tokenSecretRef is not set: no device can connect"
            if ref is not None:
                data = secret_data(resources, namespace, ref.name)
                material = (data or {}).get(ref.key)
                chain, problem = keyring.chain(
                    ("link", namespace, name), material, TokenKey, KEY_OVERLAP_SECONDS, known=data is not None
                )
                keys = tuple(k for k, _ in chain)
            apps.setdefault(
                (spec.app_id, spec.workspace_id),
                AppLink(spec.app_id, spec.workspace_id, (namespace, name), bounds, keys, problem),
            )
        return LinkConfig(apps)

    return compile_link


__all__ = ["EMPTY", "KIND", "SECRET", "AppLink", "LinkConfig", "compiler", "token_secrets"]
