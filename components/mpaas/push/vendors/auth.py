"""Shared by the vendor clients: compact JWTs signed by `cryptography` (APNs ES256 provider tokens, Google's
RS256 service-account assertions), and a cache of access tokens that refreshes them before they expire."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .base import CredentialsError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_private_key(pem: bytes, what: str) -> Any:
    """A PEM private key (PKCS#8 or traditional); CredentialsError saying what is wrong otherwise."""
    try:
        return serialization.load_pem_private_key(pem.strip() + b"\n", password=None)
    except (ValueError, TypeError) as e:
        raise CredentialsError(f"{what}: not a PEM private key without a password ({e})") from None


def jwt(key: Any, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A signed compact JWS: ES256 with a P-256 key (r||s, 64 bytes, as RFC 7518 says), RS256 with an RSA key."""
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    ).encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CredentialsError(f"ES256 needs a P-256 key, not {key.curve.name}")
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise CredentialsError(f"unsupported key type {type(key).__name__}: ES256 (P-256) or RS256 (RSA)")
    return signing_input.decode() + "." + b64url(signature)


class TokenCache:
    """One access token at a time, fetched by `fetch` (-> token, seconds it lives) and refreshed `margin`
    seconds before it expires; callers at once share one fetch. `invalidate` drops a token the vendor refused."""

    def __init__(self, fetch: Callable[[], Awaitable[tuple[str, float]]], *, margin: float = 300.0):
        self._fetch, self.margin = fetch, margin
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        if self._token is not None and time.monotonic() < self._expires - self.margin:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires - self.margin:
                return self._token
            token, lifetime = await self._fetch()
            self._token, self._expires = token, time.monotonic() + max(lifetime, 0.0)
            return token

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token (only if it is still `token`, when given: a newer one stays)."""
        if token is None or token == self._token:
            self._token, self._expires = None, 0.0
