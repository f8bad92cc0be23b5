"""Which way a message goes to a device (docs/push.md, "Routing").

A device online on link gets it over link. Otherwise the vendor channel of its brand (a Huawei phone:
Huawei Push Kit), then APNs for iOS, then the app's other channels in their fallback order (each channel's
`fallbackPriority`, lower first; by default APNs, FCM, Huawei, Honor, Xiaomi, OPPO, vivo); a channel is used
only when the app has it configured with working credentials and the device registered a token for it. A
device with none of these gets the message in its link inbox, delivered when it next connects, until the TTL
ends; an app without a Link channel cannot reach it (NoChannel).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..api.push import ChannelType
from .config import VendorChannel
from .registry import Device

LINK = "Link"
NO_CHANNEL = "None"

BRAND_CHANNEL: dict[str, ChannelType] = {
    "apple": ChannelType.APNS,
    "huawei": ChannelType.HUAWEI,
    "honor": ChannelType.HONOR,
    "xiaomi": ChannelType.XIAOMI,
    "redmi": ChannelType.XIAOMI,
    "poco": ChannelType.XIAOMI,
    "oppo": ChannelType.OPPO,
    "oneplus": ChannelType.OPPO,
    "realme": ChannelType.OPPO,
    "vivo": ChannelType.VIVO,
    "iqoo": ChannelType.VIVO,
}
FALLBACK_ORDER = (
    ChannelType.APNS,
    ChannelType.FCM,
    ChannelType.HUAWEI,
    ChannelType.HONOR,
    ChannelType.XIAOMI,
    ChannelType.OPPO,
    ChannelType.VIVO,
)


def route(
    device: Device, *, online: bool, vendors: Mapping[ChannelType, VendorChannel], has_link: bool
) -> tuple[str, VendorChannel | None, str]:
    """(channel name: Link, a vendor type or None; the vendor channel; the token to send to)."""
    if online and has_link:
        return LINK, None, ""
    order: list[ChannelType] = []
    brand = BRAND_CHANNEL.get(device.brand.lower())
    if brand is not None:
        order.append(brand)
    if device.platform == "ios":
        order.append(ChannelType.APNS)
    order += sorted(vendors, key=lambda kind: (vendors[kind].priority, FALLBACK_ORDER.index(kind)))
    for kind in dict.fromkeys(order):
        channel = vendors.get(kind)
        token = device.tokens.get(kind.value)
        if channel is not None and channel.client is not None and token:
            return kind.value, channel, token
    if has_link:
        return LINK, None, ""
    return NO_CHANNEL, None, ""
