"""Table-backed ECDSA P-256 and SM2 verification agrees with OpenSSL's own verify, on good and bad input.

Both implementations are checked: the C module (mpaas.crypto._ec) and the
OpenSSL fallback. Cases no random signature reaches (x1 >= n, a digest >= n)
are built with a small reference implementation of the curve arithmetic.
"""

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpaas.crypto import fixedbase, signing, sm2
from mpaas.crypto.fixedbase import P256_N, SM2_N, EcdsaP256Verifier, Sm2Verifier

pytestmark = pytest.mark.unit


def _require_native() -> Any:
    if fixedbase._ec is None:
        if os.environ.get("MPAAS_EXPECT_COMPILED") == "1":
            pytest.fail("mpaas.crypto._ec is not built (hack/bootstrap --test builds it)")
        pytest.skip("mpaas.crypto._ec is not built here (hack/dev runs without it)")
    return fixedbase._ec


@pytest.fixture(params=["C", "OpenSSL"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The verifiers run with the C module, then with the OpenSSL fallback."""
    if request.param == "OpenSSL":
        monkeypatch.setattr(fixedbase, "_ec", None)
    else:
        _require_native()
    yield request.param


@pytest.fixture
def native() -> Any:
    """The C module itself, for cases built with a chosen digest (its verify takes the digest)."""
    return _require_native()


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
        (sig + b"\x00", msg),
        (sig[:1] + b"\x81" + sig[1:], msg),  # long-form length: not DER
        (_padded_r(sig), msg),  # a needless leading zero: not DER
        (b"", msg),
        (b"\x30\x00", msg),
        (b"\x30\x06\x02\x01\x01\x02\x01\x01", msg),
        (b"\x30\x06\x02\x01\x81\x02\x01\x01", msg),  # a negative r
        (b"\x30\x05\x02\x00\x02\x01\x01", msg),  # an empty integer
        (b"\x30\x06\x04\x01\x01\x02\x01\x01", msg),  # not an INTEGER
        (b"\x30\x80" + sig[2:] + b"\x00\x00", msg),  # indefinite length: BER, not DER
        (encode_dss_signature(r + (1 << 256), s), msg),  # 33 bytes of value
    ]


def _padded_r(sig: bytes) -> bytes:
    r, s = decode_dss_signature(sig)
    r_der = b"\x00" + r.to_bytes(32, "big")
    if r_der[1] & 0x80:
        r_der = b"\x00" + r_der  # keep it positive: then the extra zero is the needless one
    s_der = s.to_bytes(33, "big").lstrip(b"\x00")
    s_der = b"\x00" + s_der if s_der[0] & 0x80 else s_der
    body = b"\x02" + bytes([len(r_der)]) + r_der + b"\x02" + bytes([len(s_der)]) + s_der
    return b"\x30" + bytes([len(body)]) + body


def test_ecdsa_agrees_with_openssl(implementation: str) -> None:
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


def test_sm2_agrees_with_openssl(implementation: str) -> None:
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


def test_a_point_off_the_curve_is_refused(implementation: str) -> None:
    point = bytearray(
        ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    point[-1] ^= 1
    with pytest.raises(ValueError):
        EcdsaP256Verifier(bytes(point))
    with pytest.raises(ValueError):
        Sm2Verifier(bytes(point))


def test_points_that_are_not_uncompressed_points_on_the_curve_are_refused(implementation: str) -> None:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    good = pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    p = P256.p
    for bad in (
        pub.public_bytes(Encoding.X962, PublicFormat.CompressedPoint),
        b"\x00",
        b"\x04" + (int.from_bytes(good[1:33], "big") + p).to_bytes(33, "big")[1:] + good[33:],  # x + p wraps
        good[:33] + (int.from_bytes(good[33:], "big") + p).to_bytes(33, "big")[1:],
        good[:-1],
    ):
        with pytest.raises(ValueError):
            EcdsaP256Verifier(bad)
    EcdsaP256Verifier(good)


def test_past_the_table_budget_keys_verify_the_general_way(
    implementation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for algorithm in ("EcdsaP256", "Sm2"):
        private, public = signing.generate_keypair(algorithm)
        msg = b"canonical string"
        sig = signing.signer(algorithm, private)(msg)
        with_table = signing.verifier(algorithm, {"publicKey": public})
        monkeypatch.setattr(fixedbase, "MAX_TABLES", fixedbase._TableBacked.live)
        general = signing.verifier(algorithm, {"publicKey": public})
        monkeypatch.setattr(fixedbase, "MAX_TABLES", 256)
        assert isinstance(with_table, EcdsaP256Verifier | Sm2Verifier)
        assert not isinstance(general, EcdsaP256Verifier | Sm2Verifier)
        assert with_table(sig, msg) and general(sig, msg)
        assert not with_table(sig, msg + b"!") and not general(sig, msg + b"!")


def test_the_table_count_follows_the_keys(implementation: str) -> None:
    before = fixedbase._TableBacked.live
    point = sm2.PrivateKey.generate().public_key().point()
    verifiers = [Sm2Verifier(point) for _ in range(3)]
    assert fixedbase._TableBacked.live == before + 3
    with pytest.raises(ValueError):
        Sm2Verifier(point[:-1] + bytes([point[-1] ^ 1]))
    del verifiers
    assert fixedbase._TableBacked.live == before


# A reference implementation (affine coordinates, Python integers): slow and plain, for building cases.


class Curve:
    def __init__(self, p: int, n: int, b: int, gx: int, gy: int):
        self.p, self.n, self.b, self.g = p, n, b, (gx, gy)

    def add(self, a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
        if a is None or b is None:
            return a or b
        p = self.p
        if a[0] == b[0] and (a[1] + b[1]) % p == 0:
            return None
        if a == b:
            slope = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, p)
        else:
            slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, p)
        x = (slope * slope - a[0] - b[0]) % p
        return x, (slope * (a[0] - x) - a[1]) % p

    def mul(self, k: int, point: tuple[int, int] | None) -> tuple[int, int] | None:
        out = None
        for bit in bin(k % self.n)[2:]:
            out = self.add(out, out)
            if bit == "1":
                out = self.add(out, point)
        return out

    def point_with_x_above_n(self, rng: random.Random) -> tuple[int, int]:
        """A point whose x lies in [n, p): about one in 2^64 (P-256) or 2^128 (SM2) of random points."""
        p = self.p
        while True:
            x = rng.randrange(self.n + 1, p)
            rhs = (x**3 - 3 * x + self.b) % p
            y = pow(rhs, (p + 1) // 4, p)  # p = 3 mod 4 on both curves
            if y * y % p == rhs:
                return x, y

    def encode(self, point: tuple[int, int] | None) -> bytes:
        assert point is not None
        return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


P256 = Curve(
    0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    P256_N,
    0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
SM2 = Curve(
    0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    SM2_N,
    int.from_bytes(fixedbase._SM2_B, "big"),
    int.from_bytes(fixedbase._SM2_GX, "big"),
    int.from_bytes(fixedbase._SM2_GY, "big"),
)


def test_reference_curves_match_the_real_ones() -> None:
    d = random.Random(1).randrange(1, P256_N)
    key = ec.derive_private_key(d, ec.SECP256R1())
    assert P256.encode(P256.mul(d, P256.g)) == key.public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )
    priv = sm2.PrivateKey.generate()
    assert SM2.mul(SM2.n, SM2.g) is None  # G has order n on the reference curve
    x, y = int.from_bytes(priv.public_key().point()[1:33], "big"), int.from_bytes(priv.public_key().point()[33:], "big")
    assert (y * y - (x**3 - 3 * x + SM2.b)) % SM2.p == 0  # a real SM2 key lies on it


@pytest.mark.parametrize("seed", range(4))
def test_ecdsa_when_x1_is_at_least_n_and_the_digest_is_at_least_n(native: Any, seed: int) -> None:
    """R = u1·G + u2·Q with x(R) >= n, so r = x(R) - n: Q is chosen to make it so."""
    rng, c, n = random.Random(seed), P256, P256_N
    big_r = c.point_with_x_above_n(rng)
    r, s = big_r[0] - n, rng.randrange(1, n)
    e = rng.randrange(1, 2**200)  # small, so that e + n still fits the 256-bit digest
    w = pow(s, -1, n)
    u1, u2 = e * w % n, r * w % n
    neg_u1_g = c.mul(n - u1, c.g)
    q = c.mul(pow(u2, -1, n), c.add(big_r, neg_u1_g))
    point, sig = c.encode(q), encode_dss_signature(r, s)
    key = native.Key("P-256", point)
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    for digest, expected in ((e, True), (e + n, True), (e + 1, False)):
        d = digest.to_bytes(32, "big")
        assert key.verify(d, sig) is expected
        assert openssl_ecdsa_prehashed(pub, sig, d) is expected


@pytest.mark.parametrize("seed", range(4))
def test_sm2_when_x1_is_at_least_n_and_the_digest_is_at_least_n(native: Any, seed: int) -> None:
    """(x1, y1) = s·G + t·Q with x1 >= n; valid when (e + x1) mod n = r."""
    rng, c, n = random.Random(seed), SM2, SM2_N
    big_r = c.point_with_x_above_n(rng)
    e = rng.randrange(1, 2**200)  # small, so that e + n still fits the 256-bit digest
    r, s = (e + big_r[0]) % n, rng.randrange(1, n)
    q = c.mul(pow((r + s) % n, -1, n), c.add(big_r, c.mul(n - s, c.g)))
    key = native.Key("SM2", c.encode(q))
    sig = encode_dss_signature(r, s)
    for digest, expected in ((e, True), (e + n, True), (e + 1, False)):
        assert key.verify(digest.to_bytes(32, "big"), sig) is expected
    assert not key.verify(e.to_bytes(32, "big"), encode_dss_signature(r, n - r))


@pytest.mark.parametrize("case", ["doubling", "infinity", "zero digest"])
def test_ecdsa_rare_branches(native: Any, case: str) -> None:
    """Sums that meet a table point (doubling), sums that cancel, u1 = 0: the C module and OpenSSL agree."""
    c, n = P256, P256_N
    if case == "zero digest":
        key = ec.generate_private_key(ec.SECP256R1())
        digest = bytes(32)
        sig = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        expected = True
    else:
        # u1 = u2 = 1 (r = s = e): with Q = G the sum is G + G, with Q = -G it is infinity.
        d = 1 if case == "doubling" else n - 1
        key = ec.derive_private_key(d, ec.SECP256R1())
        two_g = c.mul(2, c.g)
        assert two_g is not None
        r = two_g[0] % n
        digest, sig = r.to_bytes(32, "big"), encode_dss_signature(r, r)
        expected = case == "doubling"
    pub = key.public_key()
    assert openssl_ecdsa_prehashed(pub, sig, digest) is expected
    point = pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert native.Key("P-256", point).verify(digest, sig) is expected


@pytest.mark.parametrize("case", ["doubling", "infinity"])
def test_sm2_rare_branches(native: Any, case: str) -> None:
    """s·G + t·Q with s = 2, t = 1: Q = 2G doubles at the first step of the second sum, Q = -2G cancels."""
    c, n = SM2, SM2_N
    s, r = 2, n - 1  # t = r + s = 1
    q = c.mul(2 if case == "doubling" else n - 2, c.g)
    four_g = c.mul(4, c.g)
    assert four_g is not None
    e = (r - four_g[0]) % n
    key = native.Key("SM2", c.encode(q))
    assert key.verify(e.to_bytes(32, "big"), encode_dss_signature(r, s)) is (case == "doubling")


def openssl_ecdsa_prehashed(pub: ec.EllipticCurvePublicKey, sig: bytes, digest: bytes) -> bool:
    try:
        pub.verify(sig, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False
