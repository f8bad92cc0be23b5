"""Device tokens: what a device shows in HELLO to prove it may hold the connection of its device id.

    v1.{expires}.{mac}

`expires` is a Unix time in seconds (ASCII digits), `mac` the unpadded base64url HMAC-SHA256, under the app's
link token key, of `mpaas-link-v1\\n{appId}\\n{workspaceId}\\n{deviceId}\\n{expires}`. The app's backend (or
device registration) holds the key and issues tokens; the key is `tokenKey` in the Secret the Link PushChannel
names (`link.tokenSecretRef`), at least 32 bytes. A rotated key keeps the previous one valid for the overlap;
a deleted one is revoked at once, and the connections it authenticated are closed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

PREFIX = b"v1."
MIN_KEY_BYTES = 32
_TOKEN = re.compile(rb"v1\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


class TokenKey:
    """One HMAC key; built from the Secret's bytes (ValueError when too short)."""

    def __init__(self, material: bytes):
        if len(material) < MIN_KEY_BYTES:
            raise ValueError(f"the link token key must be at least {MIN_KEY_BYTES} bytes")
        self._key = material
        self.id = hashlib.sha256(b"mpaas-link-key\n" + material).hexdigest()[:16]  # names it in logs, not secret

    def mac(self, app_id: str, workspace_id: str, device_id: str, expires: int) -> bytes:
        msg = f"mpaas-link-v1\n{app_id}\n{workspace_id}\n{device_id}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def issue(self, app_id: str, workspace_id: str, device_id: str, *, ttl_seconds: int = 30 * 86400) -> bytes:
        expires = int(time.time()) + ttl_seconds
        mac = base64.urlsafe_b64encode(self.mac(app_id, workspace_id, device_id, expires)).rstrip(b"=")
        return PREFIX + str(expires).encode() + b"." + mac


def check(
    token: bytes, keys: list[TokenKey], app_id: str, workspace_id: str, device_id: str, now: float
) -> TokenKey | str:
    """The key that signed `token` for this device, or why it is refused."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return "the token is not v1.{expires}.{mac}"
    expires = int(m.group(1))
    if expires <= now:
        return "the token has expired"
    try:
        given = base64.urlsafe_b64decode(m.group(2) + b"=")
    except ValueError:
        return "the token is not v1.{expires}.{mac}"
    for key in keys:
        if hmac.compare_digest(key.mac(app_id, workspace_id, device_id, expires), given):
            return key
    return "the token's signature does not match (another key, or another device)"
