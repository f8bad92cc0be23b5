"""Signature algorithms and SM2 through OpenSSL, checked against the openssl command as a reference."""

import subprocess
from pathlib import Path

import pytest

from mpaas.crypto import envelope, sm2
from mpaas.crypto.signing import KeyProblem, canonical, generate_keypair, signer, verifier

pytestmark = pytest.mark.unit


def test_canonical_string_shape() -> None:
    msg = canonical("post", "/api/op", "a=1&b=2", "op", "APP", "prod", "1700000000000", "n1", b"{}")
    assert msg.decode().split("\n") == [
        "POST",
        "/api/op",
        "a=1&b=2",
        "op",
        "APP",
        "prod",
        "1700000000000",
        "n1",
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    ]


@pytest.mark.parametrize("algorithm", ["HmacSha256", "EcdsaP256", "Rsa2048", "Sm2"])
def test_round_trip_and_tamper(algorithm: str) -> None:
    private, public = generate_keypair(algorithm)
    field = "hmacKey" if algorithm == "HmacSha256" else "publicKey"
    verify = verifier(algorithm, {field: public})
    sig = signer(algorithm, private)(b"message")
    assert verify(sig, b"message")
    assert not verify(sig, b"messagE")
    assert not verify(b"\x00" * len(sig), b"message")


def test_key_problems_are_explained() -> None:
    _, ec_public = generate_keypair("EcdsaP256")
    with pytest.raises(KeyProblem, match="RSA public key"):
        verifier("Rsa2048", {"publicKey": ec_public})
    with pytest.raises(KeyProblem, match="no 'publicKey'"):
        verifier("Sm2", {})
    with pytest.raises(KeyProblem, match="at least 16 bytes"):
        verifier("HmacSha256", {"hmacKey": b"short"})
    with pytest.raises(KeyProblem, match="not an SM2 key"):
        verifier("Sm2", {"publicKey": ec_public})


def test_sm2_interoperates_with_the_openssl_command(tmp_path: Path) -> None:
    key = sm2.PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(key.pem())
    (tmp_path / "pub.pem").write_bytes(key.public_key().pem())
    (tmp_path / "msg").write_bytes(b"mobile gateway")
    (tmp_path / "ours.sig").write_bytes(key.sign(b"mobile gateway"))
    opts = ["-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678"]
    ok = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(tmp_path / "pub.pem"),
            "-in",
            str(tmp_path / "msg"),
            "-sigfile",
            str(tmp_path / "ours.sig"),
            *opts,
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stderr
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-sign",
            "-inkey",
            str(tmp_path / "key.pem"),
            "-in",
            str(tmp_path / "msg"),
            "-out",
            str(tmp_path / "theirs.sig"),
            *opts,
        ],
        check=True,
        capture_output=True,
    )
    assert key.public_key().verify((tmp_path / "theirs.sig").read_bytes(), b"mobile gateway")
    assert not key.public_key().verify((tmp_path / "theirs.sig").read_bytes(), b"mobile gateways")


def test_sm2_encryption_round_trip() -> None:
    key = sm2.PrivateKey.generate()
    ct = key.public_key().encrypt(b"0123456789abcdef")
    assert key.decrypt(ct) == b"0123456789abcdef"
    with pytest.raises(sm2.Sm2Error):
        key.decrypt(ct[:-1] + bytes([ct[-1] ^ 1]))


@pytest.mark.parametrize("wrap", ["RsaOaep", "EciesP256", "Sm2"])
@pytest.mark.parametrize("cipher", ["AesGcm", "Sm4Gcm"])
def test_envelope_round_trip(wrap: str, cipher: str) -> None:
    private, public = envelope.generate_gateway_key(wrap)
    key = b"k" * envelope.KEY_BYTES
    unwrap = envelope.unwrapper(wrap, private)
    assert unwrap(envelope.wrap(wrap, public, key)) == key
    aad = envelope.aad("APP", "op")
    sealed = envelope.seal(cipher, key, b"secret body", aad)
    assert envelope.open_sealed(cipher, key, sealed, aad) == b"secret body"
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_sealed(cipher, key, sealed, envelope.aad("APP", "other.op"))  # bound to the API
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_sealed(cipher, key, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad)


def test_sm4_gcm_matches_a_published_vector() -> None:
    """RFC 8998, appendix A.1: SM4-GCM test vector."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    pt = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    ct = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    tag = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
    assert envelope._sm4_gcm(key, nonce, pt, aad, encrypt=True) == ct + tag
    assert envelope._sm4_gcm(key, nonce, ct + tag, aad, encrypt=False) == pt
