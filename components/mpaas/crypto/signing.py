"""Request signatures: the canonical string and one verifier/signer per algorithm.

The client signs

    METHOD \\n PATH \\n QUERY \\n Operation-Type \\n AppId \\n WorkspaceId \\n Ts \\n Nonce \\n hex(SHA-256(body))

(UTF-8, `\\n` between fields, empty string for an absent Nonce) and sends the
signature base64-encoded in `Sign`. The algorithm is the app's policy in the
MpaasGateway, never a client choice, so a client cannot downgrade it.

| algorithm    | key in the app's Secret | signature                                  |
|--------------|-------------------------|--------------------------------------------|
| `HmacSha256` | `hmacKey` (shared)      | HMAC-SHA256                                |
| `EcdsaP256`  | `publicKey` (PEM)       | ECDSA P-256 with SHA-256, DER              |
| `Rsa2048`    | `publicKey` (PEM)       | RSASSA-PKCS1-v1_5 with SHA-256 (>= 2048 b) |
| `Sm2`        | `publicKey` (PEM)       | SM2 with SM3, id 1234567812345678, DER     |
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import fixedbase, sm2

Verify = Callable[[bytes, bytes], bool]  # (signature, message) -> ok
Sign = Callable[[bytes], bytes]

HMAC_KEY = "hmacKey"
PUBLIC_KEY = "publicKey"


class KeyProblem(ValueError):
    """The app's Secret lacks a usable key for its algorithm; the message says which."""


def canonical(
    method: str,
    path: str,
    query: str,
    operation_type: str,
    app_id: str,
    workspace_id: str,
    ts: str,
    nonce: str,
    body: bytes,
) -> bytes:
    return "\n".join(
        (method.upper(), path, query, operation_type, app_id, workspace_id, ts, nonce, hashlib.sha256(body).hexdigest())
    ).encode()


def _hmac(key: bytes) -> Verify:
    if len(key) < 16:
        raise KeyProblem(f"{HMAC_KEY} must be at least 16 bytes")

    def verify(sig: bytes, msg: bytes) -> bool:
        return hmac.compare_digest(hmac.new(key, msg, hashlib.sha256).digest(), sig)

    return verify


def _ecdsa(pem: bytes) -> Verify:
    key = _public(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyProblem(f"{PUBLIC_KEY} must be an EC P-256 public key")
    fast = fixedbase.ecdsa_p256(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    if fast is not None:
        return fast
    algo = ec.ECDSA(hashes.SHA256())

    def verify(sig: bytes, msg: bytes) -> bool:
        try:
            key.verify(sig, msg, algo)
            return True
        except (InvalidSignature, ValueError):
            return False

    return verify


def _rsa(pem: bytes) -> Verify:
    key = _public(pem)
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise KeyProblem(f"{PUBLIC_KEY} must be an RSA public key of at least 2048 bits")
    pad, digest = padding.PKCS1v15(), hashes.SHA256()

    def verify(sig: bytes, msg: bytes) -> bool:
        try:
            key.verify(sig, msg, pad, digest)
            return True
        except (InvalidSignature, ValueError):
            return False

    return verify


def _sm2(pem: bytes) -> Verify:
    try:
        key = sm2.PublicKey.from_pem(pem)
        fast = fixedbase.sm2(key.point())
    except (sm2.Sm2Error, ValueError) as e:
        raise KeyProblem(f"{PUBLIC_KEY}: {e}") from None
    return fast or key.verify


def _public(pem: bytes) -> object:
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise KeyProblem(f"{PUBLIC_KEY} is not a PEM public key ({e})") from None


@dataclass(frozen=True)
class Algorithm:
    name: str
    secret_key: str
    make_verifier: Callable[[bytes], Verify]


ALGORITHMS = {
    "HmacSha256": Algorithm("HmacSha256", HMAC_KEY, _hmac),
    "EcdsaP256": Algorithm("EcdsaP256", PUBLIC_KEY, _ecdsa),
    "Rsa2048": Algorithm("Rsa2048", PUBLIC_KEY, _rsa),
    "Sm2": Algorithm("Sm2", PUBLIC_KEY, _sm2),
}


def verifier(algorithm: str, secret: dict[str, bytes]) -> Verify:
    """A verifier for the app's algorithm from its Secret's (decoded) data."""
    algo = ALGORITHMS[algorithm]
    material = secret.get(algo.secret_key)
    if not material:
        raise KeyProblem(f"the Secret has no {algo.secret_key!r} for {algorithm}")
    return algo.make_verifier(material)


# --- the client side (simulator, tests, SDK reference) -----------------------------


def signer(algorithm: str, key: bytes) -> Sign:
    """Sign with the client's key: the HMAC secret, or a PEM private key."""
    if algorithm == "HmacSha256":
        return lambda msg: hmac.new(key, msg, hashlib.sha256).digest()
    if algorithm == "Sm2":
        return sm2.PrivateKey.from_pem(key).sign
    private = serialization.load_pem_private_key(key, password=None)
    if algorithm == "EcdsaP256" and isinstance(private, ec.EllipticCurvePrivateKey):
        return lambda msg: private.sign(msg, ec.ECDSA(hashes.SHA256()))
    if algorithm == "Rsa2048" and isinstance(private, rsa.RSAPrivateKey):
        return lambda msg: private.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    raise KeyProblem(f"key does not fit {algorithm}")


def generate_keypair(algorithm: str) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for a client of `algorithm` (HMAC: (secret, secret))."""
    import os

    if algorithm == "HmacSha256":
        secret = os.urandom(32).hex().encode()
        return secret, secret
    if algorithm == "Sm2":
        k = sm2.PrivateKey.generate()
        return k.pem(), k.public_key().pem()
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "EcdsaP256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    return (
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
