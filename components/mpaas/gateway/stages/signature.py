"""Stage `signature` — `spec.apps[].signature` (algorithm, timestampWindowSeconds, requireNonce) with the key
from `credentialsSecretRef` (rotated with `keyOverlapSeconds`): is the request signed by the app, fresh, and
not a replay?

The signature covers the request as sent (a sealed body stays sealed); the canonical message is in
docs/gateway.md. A nonce is remembered in the hot store for twice the timestamp window, so a request cannot be
replayed while its timestamp would still pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass

from ...api.gateway import GatewayApp
from ...config import Resources
from ...crypto import signing
from ...crypto.signing import canonical
from ...http1 import Request
from ...keyring import KeyChain, KeyRing, secret_data
from ...rules import parse_uint
from ...stores import HotStore
from .. import codes
from ..codes import ResultCode

_NONCE_KEPT_AS_IS = 64  # characters; longer nonces are stored as their SHA-256
log = logging.getLogger("mpaas.gateway")


@dataclass(frozen=True)
class Signature:
    algorithm: str
    verifiers: KeyChain[signing.Verify]  # current key first, then previous ones inside their overlap
    key_problem: str | None
    timestamp_window_ms: int
    require_nonce: bool


def from_spec(app: GatewayApp, namespace: str, resources: Resources, keyring: KeyRing) -> Signature | None:
    """None for an app whose requests are not signed."""
    if app.signature.algorithm == "None":
        return None
    algorithm = str(app.signature.algorithm)
    ref = app.credentials_secret_ref.name if app.credentials_secret_ref else None
    algo = signing.ALGORITHMS[algorithm]
    secret = secret_data(resources, namespace, ref)
    verifiers, problem = keyring.chain(
        ("sign", algorithm, namespace, app.app_id, app.workspace_id),
        (secret or {}).get(algo.secret_key),
        algo.make_verifier,
        app.key_overlap_seconds,
        known=secret is not None,
    )
    if problem:
        log.warning("app %s/%s: %s (Secret %s/%s)", app.app_id, app.workspace_id, problem, namespace, ref)
    return Signature(
        algorithm=algorithm,
        verifiers=verifiers,
        key_problem=problem,
        timestamp_window_ms=app.signature.timestamp_window_seconds * 1000,
        require_nonce=app.signature.require_nonce,
    )


async def check(
    sig: Signature, request: Request, app_id: str, workspace_id: str, op: str, body: bytes, hot: HotStore
) -> ResultCode | None:
    """None when the request passes; else the code to refuse it with."""
    h = request.headers
    sign = h.get("sign")
    if not sign:
        return codes.SIGNATURE_MISSING
    ts = h.get("ts", "")
    ts_ms = parse_uint(ts, 15)  # epoch milliseconds: 13 digits until the year 2286
    if ts_ms is None:
        return codes.TIMESTAMP_MISSING
    now = time.time()
    if abs(now * 1000 - ts_ms) > sig.timestamp_window_ms:
        return codes.TIMESTAMP_EXPIRED
    nonce = h.get("nonce", "")
    if sig.require_nonce and not nonce:
        return codes.NONCE_MISSING
    if not sig.verifiers:
        return codes.KEY_UNAVAILABLE
    try:
        signature = base64.b64decode(sign, validate=True)
    except (binascii.Error, ValueError):
        return codes.SIGNATURE_INVALID
    message = canonical(request.method, request.path, request.query, op, app_id, workspace_id, ts, nonce, body)
    if not any(verify(signature, message) for verify, until in sig.verifiers if until is None or until > now):
        return codes.SIGNATURE_INVALID
    if nonce:
        # Remember the nonce as long as its timestamp could still pass the window check.
        # A long nonce (a client chooses its length, up to the head limit) is kept as its digest, so every
        # stored key, in Redis and in the outage memory, has a bounded size.
        if len(nonce) > _NONCE_KEPT_AS_IS:
            nonce = "#" + hashlib.sha256(nonce.encode("latin-1", "replace")).hexdigest()
        key = f"nonce:{app_id}:{workspace_id}:{nonce}"
        if not await hot.set_if_absent(key, b"1", ttl_seconds=2 * sig.timestamp_window_ms / 1000):
            return codes.NONCE_REPLAYED
    return None
