"""Vendor channel clients (APNs, FCM, Huawei, Xiaomi, OPPO, vivo, Honor): a `base.VendorClient` each, built
by its module's `build(secret, endpoint=, options=)` from the credentials Secret the PushChannel names."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ...api.push import ChannelType
from .base import VendorClient

MODULES: dict[ChannelType, str] = {
    ChannelType.APNS: "apns",
    ChannelType.FCM: "fcm",
    ChannelType.HUAWEI: "huawei",
    ChannelType.XIAOMI: "xiaomi",
    ChannelType.OPPO: "oppo",
    ChannelType.VIVO: "vivo",
    ChannelType.HONOR: "honor",
}


def build_client(
    channel: ChannelType, secret: Mapping[str, bytes], *, endpoint: str | None, options: Mapping[str, str]
) -> VendorClient:
    """The client of a vendor channel; CredentialsError saying what to fix when the Secret cannot make one."""
    module = importlib.import_module(f"{__name__}.{MODULES[channel]}")
    client: VendorClient = module.build(secret, endpoint=endpoint, options=options)
    return client
