"""Table-backed ECDSA P-256 and SM2 verification agrees with OpenSSL's own verify, on good and bad input."""

import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpaas.crypto import fixedbase, signing, sm2
from mpaas.crypto.fixedbase import P256_N, SM2_N, EcdsaP256Verifier, Sm2Verifier

pytestmark = pytest.mark.unit


def openssl_ecdsa(pub: ec.EllipticCurvePublicKey, sig: bytes, msg: bytes) -> bool:
    try:
        pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def mutations(sig: bytes, msg: bytes, n: int) -> list[tuple[bytes, bytes]]:
    r, s = decode_dss_signature(sig)
    flipped = bytearray(sig)
    flipped[len(sig) // 2] ^= 0x01
    return [
        (sig, msg),
        (sig, msg + b"x"),
        (bytes(flipped), msg),
        (encode_dss_signature(r, n - s), msg),  # the other s of the pair: valid for ECDSA, not for SM2
        (encode_dss_signature(s, r), msg),
        (encode_dss_signature(r + 1, s), msg),
        (encode_dss_signature(0, s), msg),
        (encode_dss_signature(r, 0), msg),
        (encode_dss_signature(r + n, s), msg),
        (encode_dss_signature(r, s + n), msg),
        (sig[:-1], msg),
        (b"", msg),
        (b"\x30\x00", msg),
    ]


def test_ecdsa_agrees_with_openssl() -> None:
    for i in range(12):
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key()
        fast = EcdsaP256Verifier(pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
        msg = os.urandom(i * 37)
        sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
        cases = mutations(sig, msg, P256_N)
        answers = [(fast(s, m), openssl_ecdsa(pub, s, m)) for s, m in cases]
        assert all(a == b for a, b in answers), answers
        assert answers[0] == (True, True) and answers[3] == (True, True)
        assert sum(a for a, _ in answers) == 2  # everything else is refused
        other = ec.generate_private_key(ec.SECP256R1()).sign(msg, ec.ECDSA(hashes.SHA256()))
        assert not fast(other, msg)


def test_sm2_agrees_with_openssl() -> None:
    for i in range(12):
        key = sm2.PrivateKey.generate()
        pub = key.public_key()
        uid = b"1234567812345678" if i % 2 else b"alice@example.com"
        fast = Sm2Verifier(pub.point(), uid)
        msg = os.urandom(i * 37)
        sig = key.sign(msg, uid=uid)
        answers = [(fast(s, m), pub.verify(s, m, uid=uid)) for s, m in mutations(sig, msg, SM2_N)]
        assert all(a == b for a, b in answers), answers
        assert answers[0] == (True, True) and sum(a for a, _ in answers) == 1
        assert not fast(key.sign(msg, uid=b"someone else"), msg)  # the id is part of what is signed


def test_a_point_off_the_curve_is_refused() -> None:
    point = bytearray(
        ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    point[-1] ^= 1
    with pytest.raises(ValueError):
        EcdsaP256Verifier(bytes(point))
    with pytest.raises(ValueError):
        Sm2Verifier(bytes(point))


def test_past_the_table_budget_keys_verify_the_general_way(monkeypatch: pytest.MonkeyPatch) -> None:
    for algorithm in ("EcdsaP256", "Sm2"):
        private, public = signing.generate_keypair(algorithm)
        msg = b"canonical string"
        sig = signing.signer(algorithm, private)(msg)
        with_table = signing.verifier(algorithm, {"publicKey": public})
        monkeypatch.setattr(fixedbase, "MAX_TABLES", fixedbase._Verifier.live)
        general = signing.verifier(algorithm, {"publicKey": public})
        monkeypatch.undo()
        assert isinstance(with_table, EcdsaP256Verifier | Sm2Verifier)
        assert not isinstance(general, EcdsaP256Verifier | Sm2Verifier)
        assert with_table(sig, msg) and general(sig, msg)
        assert not with_table(sig, msg + b"!") and not general(sig, msg + b"!")
