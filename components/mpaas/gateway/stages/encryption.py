"""Stage `encryption` — `spec.apps[].encryption` (mode, keyWraps, cipher) with the gateway's private keys from
`credentialsSecretRef`: open a sealed request body, and seal the answer with the same session key.

The client wraps a fresh session key for the gateway (`Mgw-Key-Type`, `Mgw-Key`) and seals the body with it;
the answer is sealed with that key, its additional data naming the app and operation type (docs/gateway.md).
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from dataclasses import dataclass

from ...api.gateway import GatewayApp
from ...config import Resources
from ...crypto import envelope
from ...http1 import Request
from ...keyring import KeyChain, KeyRing, secret_data
from .. import codes
from ..codes import ResultCode
from ..outcome import Outcome

log = logging.getLogger("mpaas.gateway")


@dataclass(frozen=True)
class Encryption:
    required: bool  # Required; else Optional: plain bodies are accepted too
    cipher: str  # AesGcm | Sm4Gcm
    unwrappers: dict[str, KeyChain[envelope.Unwrap]]  # keyWrap -> unwrap keys, current first


def from_spec(app: GatewayApp, namespace: str, resources: Resources, keyring: KeyRing) -> Encryption | None:
    """None when the app's bodies are never sealed (mode Disabled)."""
    if app.encryption.mode == "Disabled":
        return None
    ref = app.credentials_secret_ref.name if app.credentials_secret_ref else None
    data = secret_data(resources, namespace, ref)
    unwrappers: dict[str, KeyChain[envelope.Unwrap]] = {}
    for wrap in map(str, app.encryption.key_wraps):
        chain, problem = keyring.chain(
            ("wrap", wrap, namespace, app.app_id, app.workspace_id),
            (data or {}).get(envelope.SECRET_KEYS[wrap]),
            functools.partial(envelope.unwrapper, wrap),
            app.key_overlap_seconds,
            known=data is not None,
        )
        if problem:
            log.warning(
                "app %s/%s: %s for %s (Secret %s/%s)", app.app_id, app.workspace_id, problem, wrap, namespace, ref
            )
        if chain:
            unwrappers[wrap] = chain
    return Encryption(
        required=app.encryption.mode == "Required", cipher=str(app.encryption.cipher), unwrappers=unwrappers
    )


def unseal(enc: Encryption, request: Request, app_id: str, op: str, body: bytes) -> ResultCode | tuple[bytes, bytes]:
    """(session key, plaintext) of a sealed body; (b"", body) for a plain one the app may send."""
    wrap, wrapped = request.headers.get("mgw-key-type"), request.headers.get("mgw-key")
    if not wrap or not wrapped:
        return codes.ENCRYPTION_REQUIRED if enc.required else (b"", body)
    chain = enc.unwrappers.get(wrap)
    if not chain:
        return codes.DECRYPTION_FAILED
    try:
        wrapped_key = base64.b64decode(wrapped, validate=True)
    except ValueError:
        return codes.DECRYPTION_FAILED
    now = time.time()
    for unwrap, until in chain:  # the current gateway key, then previous ones inside their overlap
        if until is not None and until <= now:
            continue
        try:
            key = unwrap(wrapped_key)
            return key, envelope.open_sealed(enc.cipher, key, body, envelope.aad(app_id, op))
        except Exception:  # wrong key or tampered body: try the next key, then answer the same way
            continue
    return codes.DECRYPTION_FAILED


def seal(enc: Encryption, out: Outcome, session_key: bytes, app_id: str, op: str) -> None:
    """Seal the answer's body with the request's session key; its real Content-Type goes in Mgw-Content-Type."""
    out.headers["Mgw-Content-Type"] = out.headers.get("Content-Type", "")
    out.headers["Content-Type"] = "application/octet-stream"
    out.headers["Mgw-Encrypted"] = "1"
    out.body = envelope.seal(enc.cipher, session_key, out.body, envelope.aad(app_id, op))
