"""Payload encryption of whole request and response bodies (envelope encryption).

The client makes a 16-byte session key, wraps it for the gateway and sends:

    Mgw-Key-Type: RsaOaep | EciesP256 | Sm2
    Mgw-Key:      base64(wrapped session key)
    body:         nonce (12 bytes) || cipher(body) || tag (16 bytes)

with cipher AES-128-GCM or SM4-GCM (the app's `encryption.cipher`) and
associated data `AppId \\n Operation-Type`, so a body cannot be replayed
against another API. The response body is sealed the same way with the same
session key and marked `Mgw-Encrypted: 1`.

Wrapping, with the gateway's key from the app's Secret:

| keyWrap     | Secret key            | wrapped session key                                       |
|-------------|-----------------------|-----------------------------------------------------------|
| `RsaOaep`   | `rsaPrivateKey` (PEM) | RSA-OAEP, SHA-256, empty label; MGF1 SHA-256 or SHA-1     |
| `EciesP256` | `ecPrivateKey` (PEM)  | ephemeral P-256 point (65 B) || nonce (12 B) || sealed    |
| `Sm2`       | `sm2PrivateKey` (PEM) | SM2 encryption (C1C3C2, ASN.1)                            |

ECIES seals the session key with AES-128-GCM under HKDF-SHA256(ECDH secret, info "mpaas-ecies").
RSA-OAEP takes MGF1 with SHA-256 (what OpenSSL, BouncyCastle, iOS and WebCrypto mean by OAEP with SHA-256) and
with SHA-1 (what Java's "RSA/ECB/OAEPWithSHA-256AndMGF1Padding" makes by default, SunJCE and Android alike);
the reference client wraps with SHA-256. Test vectors: docs/gateway.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import sm2

SECRET_KEYS = {"RsaOaep": "rsaPrivateKey", "EciesP256": "ecPrivateKey", "Sm2": "sm2PrivateKey"}
KEY_BYTES, NONCE_BYTES, TAG_BYTES = 16, 12, 16
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
# Java's OAEPWithSHA-256AndMGF1Padding without an OAEPParameterSpec: SHA-256 for the label, SHA-1 in MGF1.
_OAEP_MGF1_SHA1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA256(), label=None)

Unwrap = Callable[[bytes], bytes]


class EnvelopeError(ValueError):
    pass


def _hkdf(shared: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"mpaas-ecies").derive(shared)


def unwrapper(key_wrap: str, private_pem: bytes) -> Unwrap:
    """The gateway side: unwrap session keys with its private key (raises EnvelopeError on a bad key)."""
    if key_wrap == "Sm2":
        try:
            k = sm2.PrivateKey.from_pem(private_pem)
        except sm2.Sm2Error as e:
            raise EnvelopeError(f"{SECRET_KEYS[key_wrap]}: {e}") from None
        return k.decrypt
    try:
        private = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as e:
        raise EnvelopeError(f"{SECRET_KEYS[key_wrap]} is not a PEM private key ({e})") from None
    if key_wrap == "RsaOaep":
        if not isinstance(private, rsa.RSAPrivateKey) or private.key_size < 2048:
            raise EnvelopeError("rsaPrivateKey must be an RSA key of at least 2048 bits")
        rsa_key = private

        def unwrap_rsa(wrapped: bytes) -> bytes:
            try:
                return rsa_key.decrypt(wrapped, _OAEP)
            except ValueError:  # not MGF1-SHA-256: perhaps Java's default, MGF1-SHA-1 (the same error if not)
                return rsa_key.decrypt(wrapped, _OAEP_MGF1_SHA1)

        return unwrap_rsa
    if key_wrap == "EciesP256":
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            raise EnvelopeError("ecPrivateKey must be an EC P-256 key")
        ec_key = private

        def unwrap(wrapped: bytes) -> bytes:
            point, nonce, sealed = wrapped[:65], wrapped[65:77], wrapped[77:]
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            return AESGCM(_hkdf(ec_key.exchange(ec.ECDH(), peer))).decrypt(nonce, sealed, None)

        return unwrap
    raise EnvelopeError(f"unknown key wrap {key_wrap!r}")


def wrap(key_wrap: str, public_pem: bytes, session_key: bytes, *, mgf1_sha1: bool = False) -> bytes:
    """The client side: wrap a session key for the gateway's public key (`mgf1_sha1`: RSA-OAEP as Java's
    default makes it)."""
    if key_wrap == "Sm2":
        return sm2.PublicKey.from_pem(public_pem).encrypt(session_key)
    public = serialization.load_pem_public_key(public_pem)
    if key_wrap == "RsaOaep" and isinstance(public, rsa.RSAPublicKey):
        return public.encrypt(session_key, _OAEP_MGF1_SHA1 if mgf1_sha1 else _OAEP)
    if key_wrap == "EciesP256" and isinstance(public, ec.EllipticCurvePublicKey):
        eph = ec.generate_private_key(ec.SECP256R1())
        nonce = os.urandom(NONCE_BYTES)
        point = eph.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return point + nonce + AESGCM(_hkdf(eph.exchange(ec.ECDH(), public))).encrypt(nonce, session_key, None)
    raise EnvelopeError(f"key does not fit {key_wrap}")


def _sm4_gcm(key: bytes, nonce: bytes, data: bytes, aad: bytes, *, encrypt: bool) -> bytes:
    if encrypt:
        enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        return enc.update(data) + enc.finalize() + enc.tag
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, data[-TAG_BYTES:])).decryptor()
    dec.authenticate_additional_data(aad)
    return dec.update(data[:-TAG_BYTES]) + dec.finalize()


def seal(cipher: str, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    if cipher == "Sm4Gcm":
        return nonce + _sm4_gcm(key, nonce, plaintext, aad, encrypt=True)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(cipher: str, key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt and authenticate; raises EnvelopeError on any tampering or a wrong key."""
    if len(key) != KEY_BYTES or len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError("sealed body or session key has the wrong size")
    nonce, data = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        if cipher == "Sm4Gcm":
            return _sm4_gcm(key, nonce, data, aad, encrypt=False)
        return AESGCM(key).decrypt(nonce, data, aad)
    except Exception as e:  # InvalidTag and friends
        raise EnvelopeError("body does not decrypt") from e


def aad(app_id: str, operation_type: str) -> bytes:
    return f"{app_id}\n{operation_type}".encode()


def generate_gateway_key(key_wrap: str) -> tuple[bytes, bytes]:
    """(private PEM for the Secret, public PEM for the app) of a new gateway key."""
    if key_wrap == "Sm2":
        k = sm2.PrivateKey.generate()
        return k.pem(), k.public_key().pem()
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_wrap == "RsaOaep"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return (
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
