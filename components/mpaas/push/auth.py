"""Who may call the push API (docs/push.md, "Authentication").

- A backend signs each call with its app's server key (`serverApiKey` in the app's credentials Secret):
  headers `AppId`, `WorkspaceId`, `Ts` (epoch milliseconds, within 5 minutes), `Nonce` (once only, 8-64
  characters) and `Sign`: base64 of HMAC-SHA256 over the gateway's canonical message (docs/gateway.md) with
  an empty operation type. A rotated key stays valid for the app's keyOverlapSeconds; a deleted one at once
  refuses every call.
- The gorush-compatible routes also take HTTP Basic auth, `appId/workspaceId` (or `appId` when the app has
  one workspace) and the server key as the password: a gorush user switches with only a URL.
- A device reports its own receipts and registers itself with its link token (`Authorization: Bearer v1...`,
  the token link checks, docs/link.md "Tokens"): it can touch only its own device.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..crypto.signing import canonical
from ..link import tokens as link_tokens
from ..rules import parse_uint
from ..stores import HotStore
from .config import SERVER_KEY, PushConfig
from .messages import Invalid
from .registry import valid_id

TIMESTAMP_WINDOW_MS = 300_000
_NONCE_MIN, _NONCE_MAX = 8, 64


@dataclass(frozen=True)
class Caller:
    app_id: str
    workspace_id: str
    device_id: str | None = None  # a device speaking for itself; None for the app's backend


def _refuse(message: str, code: str = "Unauthorized") -> Invalid:
    return Invalid(message, code, 401)


def _keys(config: PushConfig, app_id: str, workspace_id: str) -> list[bytes]:
    app = config.app(app_id, workspace_id)
    if app is None:
        raise _refuse(f"no app {app_id}/{workspace_id} is registered (MpaasGateway apps[])", "UnknownApp")
    now = time.time()
    keys = [k for k, until in app.keys if until is None or until > now]
    if not keys:
        # What is wrong with the Secret is logged by the config, not told to an unauthenticated caller.
        raise _refuse(f"the app has no usable {SERVER_KEY} (see the push logs)", "KeyUnavailable")
    return keys


async def signed(
    config: PushConfig,
    hot: HotStore,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Caller:
    """The app a signed call speaks for; Invalid (401) saying what is wrong otherwise."""
    app_id, workspace_id = headers.get("appid", ""), headers.get("workspaceid", "")
    if not app_id or not workspace_id:
        raise _refuse("sign the call: AppId, WorkspaceId, Ts, Nonce and Sign headers (docs/push.md)")
    keys = _keys(config, app_id, workspace_id)
    ts = headers.get("ts", "")
    ts_ms = parse_uint(ts, 15)
    if ts_ms is None or abs(time.time() * 1000 - ts_ms) > TIMESTAMP_WINDOW_MS:
        raise _refuse("Ts: epoch milliseconds within 5 minutes of the server's clock", "TimestampExpired")
    nonce = headers.get("nonce", "")
    if not (_NONCE_MIN <= len(nonce) <= _NONCE_MAX) or not nonce.isascii() or not nonce.isprintable():
        raise _refuse(f"Nonce: {_NONCE_MIN}-{_NONCE_MAX} printable ASCII characters, new for every call")
    try:
        sign = base64.b64decode(headers.get("sign", ""), validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("Sign: base64 of the HMAC-SHA256", "SignatureInvalid") from None
    message = canonical(method, path, query, "", app_id, workspace_id, ts, nonce, body)
    if not any(hmac.compare_digest(hmac.new(k, message, hashlib.sha256).digest(), sign) for k in keys):
        raise _refuse("the signature does not match (docs/push.md, Authentication)", "SignatureInvalid")
    if not await hot.set_if_absent(
        f"push:nonce:{app_id}/{workspace_id}:{nonce}", b"1", ttl_seconds=2 * TIMESTAMP_WINDOW_MS / 1000
    ):
        raise _refuse("the Nonce was used before: a replay", "NonceReplayed")
    return Caller(app_id, workspace_id)


def sign_headers(
    key: bytes, method: str, path: str, query: str, app_id: str, workspace_id: str, body: bytes
) -> dict[str, str]:
    """The headers of a signed call (the reference for clients; the CLI and the tests use it)."""
    ts, nonce = str(int(time.time() * 1000)), os.urandom(12).hex()
    message = canonical(method, path, query, "", app_id, workspace_id, ts, nonce, body)
    sign = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    return {"AppId": app_id, "WorkspaceId": workspace_id, "Ts": ts, "Nonce": nonce, "Sign": sign}


def basic(config: PushConfig, authorization: str, resolve: Mapping[str, tuple[str, str]]) -> Caller:
    """HTTP Basic auth with the server key (the gorush routes)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise _refuse(f"authenticate: HTTP Basic with appId/workspaceId and the app's {SERVER_KEY}")
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        raise _refuse("the Basic credentials are not base64 of user:password") from None
    app = resolve.get(user)
    if app is None:
        raise _refuse(f"no app {user!r}: give appId/workspaceId", "UnknownApp")
    keys = _keys(config, *app)
    if not any(hmac.compare_digest(k, password.encode()) for k in keys):
        raise _refuse("the server key does not match", "SignatureInvalid")
    return Caller(*app)


def device(config: PushConfig, authorization: str, app_id: str, workspace_id: str, device_id: str) -> Caller:
    """A device with its link token, for itself only."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _refuse("authenticate: Authorization: Bearer with the device's link token, or sign as the backend")
    if not valid_id(device_id):
        raise Invalid("deviceId: 1-128 characters without spaces, controls or braces")
    link = config.link.find(app_id, workspace_id)
    if link is None or not link.keys:
        raise _refuse("the app has no Link channel with a token key: devices cannot authenticate", "KeyUnavailable")
    checked = link_tokens.check(token.encode(), list(link.keys), app_id, workspace_id, device_id, time.time())
    if isinstance(checked, str):
        raise _refuse(f"the link token is refused: {checked}", "SignatureInvalid")
    return Caller(app_id, workspace_id, device_id)
