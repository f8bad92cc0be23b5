"""ECDSA P-256 and SM2 verification with a precomputed table for each app's public key.

Both verifications compute u1·G + u2·Q, where G is the curve's generator and Q
the app's public key; both points are fixed for as long as the key is, so each
gets a table of precomputed multiples. Two implementations:

- `mpaas.crypto._ec` (C, built with the compiled hot path, components/mpaas/compiled.py):
  its own field arithmetic and tables of signed multiples, ~30 µs per
  verification for either curve. OpenSSL 3.0 has no SM2-specific arithmetic
  on x86-64, so this is what makes SM2 signatures affordable.
- the fallback, when that module is not built (`hack/dev`): OpenSSL's own EC
  arithmetic (libcrypto 3, through ctypes). Each key gets its own copy of the
  curve whose "generator" is Q, and OpenSSL precomputes multiples of it once
  (EC_GROUP_precompute_mult). ECDSA ~60 µs, SM2 ~105 µs per verification.

The scalar steps mod n and the checks of r and s follow SEC 1 §4.1.4 (ECDSA)
and GB/T 32918.2 §7 (SM2). Tests compare both implementations' answers with
OpenSSL's own verify. A fallback verifier keeps scratch space: use one per
thread (the gateway runs one event loop). Measured figures: docs/benchmarks.md.

Tables cost memory (C: 86 KiB per key; OpenSSL P-256: ~150 KiB and ~40 ms to
build, SM2 ~40 KiB, ~1.5 ms): at most `MAX_TABLES` keys get one, the rest
verify the general way.

`MPAAS_CRYPTO_BACKEND=openssl` (read once, at import) keeps the C module out
even when it is built: it is not imported, and every key verifies with the
OpenSSL fallback, for when the C code is suspect. `auto` (the default) takes
the C module when it is built from the source here. `backend()` says which
one verifies.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from ctypes import c_char_p, c_int, c_size_t, c_void_p
from functools import cache
from types import ModuleType

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..compiled import extension
from .sm2 import DEFAULT_ID, _lib

BACKEND_ENV = "MPAAS_CRYPTO_BACKEND"
BACKENDS = ("auto", "openssl")
log = logging.getLogger("mpaas.crypto")


def _native(setting: str | None) -> ModuleType | None:
    """The C module for `setting` (the value of MPAAS_CRYPTO_BACKEND): None for `openssl`, which never imports it."""
    choice = (setting or "auto").strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={setting!r}: expected one of {', '.join(BACKENDS)}")
    if choice == "openssl":
        log.warning("%s=openssl: signatures are verified by OpenSSL, the C module is not used", BACKEND_ENV)
        return None
    return extension("mpaas.crypto._ec")


_ec = _native(os.environ.get(BACKEND_ENV))  # None: the OpenSSL fallback below


def backend() -> str:
    """Which implementation verifies ECDSA P-256 and SM2 signatures: "C" or "OpenSSL"."""
    return "C" if _ec is not None else "OpenSSL"


NID_P256 = 415  # NID_X9_62_prime256v1
NID_SM2 = 1172
_UNCOMPRESSED = 4

# SM2 curve parameters (GB/T 32918.5), for the signer's Z value.
_SM2_A = bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC")
_SM2_B = bytes.fromhex("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93")
_SM2_GX = bytes.fromhex("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7")
_SM2_GY = bytes.fromhex("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")


@cache
def _bind() -> ctypes.CDLL:
    lib = _lib()
    sigs: dict[str, tuple[object, list[object]]] = {
        "EC_GROUP_new_by_curve_name": (c_void_p, [c_int]),
        "EC_GROUP_free": (None, [c_void_p]),
        "EC_GROUP_set_generator": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p]),
        "EC_GROUP_get0_order": (c_void_p, [c_void_p]),
        "EC_GROUP_get0_cofactor": (c_void_p, [c_void_p]),
        "EC_GROUP_precompute_mult": (c_int, [c_void_p, c_void_p]),
        "EC_POINT_new": (c_void_p, [c_void_p]),
        "EC_POINT_free": (None, [c_void_p]),
        "EC_POINT_oct2point": (c_int, [c_void_p, c_void_p, c_char_p, c_size_t, c_void_p]),
        "EC_POINT_point2oct": (c_size_t, [c_void_p, c_void_p, c_int, c_char_p, c_size_t, c_void_p]),
        "EC_POINT_mul": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
        "EC_POINT_add": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
        "EC_POINT_is_at_infinity": (c_int, [c_void_p, c_void_p]),
        "BN_new": (c_void_p, []),
        "BN_free": (None, [c_void_p]),
        "BN_bin2bn": (c_void_p, [c_char_p, c_int, c_void_p]),
        "BN_bn2binpad": (c_int, [c_void_p, c_char_p, c_int]),
        "BN_mod_inverse": (c_void_p, [c_void_p, c_void_p, c_void_p, c_void_p]),
        "BN_CTX_new": (c_void_p, []),
        "BN_CTX_free": (None, [c_void_p]),
    }
    for fn, (restype, argtypes) in sigs.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes
    return lib


class _Curve:
    """A curve group with precomputed multiples of its generator; optionally with another generator."""

    def __init__(self, nid: int, generator: bytes | None = None):
        lib = _bind()
        self.lib, self.ctx = lib, lib.BN_CTX_new()
        self.group = lib.EC_GROUP_new_by_curve_name(nid)
        if not self.group or not self.ctx:
            raise ValueError(f"curve {nid} is not available in libcrypto")
        if generator is not None:
            point = self.point(generator)
            try:
                ok = lib.EC_GROUP_set_generator(
                    self.group, point, lib.EC_GROUP_get0_order(self.group), lib.EC_GROUP_get0_cofactor(self.group)
                )
            finally:
                lib.EC_POINT_free(point)
            if ok != 1:
                raise ValueError("the public key cannot serve as a generator")
        if lib.EC_GROUP_precompute_mult(self.group, self.ctx) != 1:
            raise ValueError("precomputation failed")

    def point(self, encoded: bytes) -> int:
        """A new EC_POINT from its encoding; raises unless the point is on the curve and not infinity."""
        lib = self.lib
        p = lib.EC_POINT_new(self.group)
        if lib.EC_POINT_oct2point(self.group, p, encoded, len(encoded), self.ctx) != 1 or lib.EC_POINT_is_at_infinity(
            self.group, p
        ):
            lib.EC_POINT_free(p)
            lib.ERR_clear_error()
            raise ValueError("not a point on the curve")
        return int(p)

    def __del__(self) -> None:
        lib = getattr(self, "lib", None)
        if lib is not None:
            lib.EC_GROUP_free(self.group)
            lib.BN_CTX_free(self.ctx)


MAX_TABLES = 256


class _Verifier:
    """u1·G + u2·Q with both tables precomputed; returns the x coordinate of the sum (None at infinity)."""

    _generators: dict[int, _Curve] = {}

    def __init__(self, nid: int, order: int, public_point: bytes, *, wnaf: bool):
        base = self._generators.get(nid)
        if base is None:
            base = self._generators[nid] = _Curve(nid)
        self.base, self.key, self.order = base, _Curve(nid, public_point), order
        lib = self.lib = base.lib
        self.q = base.point(public_point)  # Q on the standard group: checks the key is a valid point
        self.a, self.b, self.sum = (
            lib.EC_POINT_new(base.group),
            lib.EC_POINT_new(base.group),
            lib.EC_POINT_new(base.group),
        )
        self.bn1, self.bn2, self.zero = lib.BN_new(), lib.BN_new(), lib.BN_new()  # BN_new() is zero
        self.out = ctypes.create_string_buffer(65)
        self.n = lib.EC_GROUP_get0_order(base.group)
        self.inv = lib.BN_new()
        self.inv_out = ctypes.create_string_buffer(32)
        # OpenSSL multiplies a generator alone with a constant-time ladder that ignores the table, except
        # on curves with their own tables (P-256). Adding 0·Q makes the generic code take the table.
        self.extra = self.q if wnaf else None

    def x_of(self, u1: int, u2: int) -> int | None:
        lib, base, ctx = self.lib, self.base, self.base.ctx
        lib.BN_bin2bn(u1.to_bytes(32, "big"), 32, self.bn1)
        lib.BN_bin2bn(u2.to_bytes(32, "big"), 32, self.bn2)
        if (
            lib.EC_POINT_mul(base.group, self.a, self.bn1, self.extra, self.zero, ctx) != 1
            or lib.EC_POINT_mul(self.key.group, self.b, self.bn2, self.extra, self.zero, self.key.ctx) != 1
            or lib.EC_POINT_add(base.group, self.sum, self.a, self.b, ctx) != 1
        ):
            lib.ERR_clear_error()
            return None
        if lib.EC_POINT_is_at_infinity(base.group, self.sum):
            return None
        if lib.EC_POINT_point2oct(base.group, self.sum, _UNCOMPRESSED, self.out, 65, ctx) != 65:
            lib.ERR_clear_error()
            return None
        return int.from_bytes(self.out.raw[1:33], "big")

    def inverse(self, s: int) -> int | None:
        """s⁻¹ mod n (s is public: no constant-time need). Measured: OpenSSL ~11 µs, Python's pow(s, -1, n) ~14."""
        lib = self.lib
        lib.BN_bin2bn(s.to_bytes(32, "big"), 32, self.bn1)
        if not lib.BN_mod_inverse(self.inv, self.bn1, self.n, self.base.ctx):
            lib.ERR_clear_error()
            return None
        lib.BN_bn2binpad(self.inv, self.inv_out, 32)
        return int.from_bytes(self.inv_out.raw, "big")

    def __del__(self) -> None:
        lib = getattr(self, "lib", None)
        if lib is not None:
            for p in (self.q, self.a, self.b, self.sum):
                lib.EC_POINT_free(p)
            for bn in (self.bn1, self.bn2, self.zero, self.inv):
                lib.BN_free(bn)


P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123


def _scalars(signature: bytes, n: int) -> tuple[int, int] | None:
    """(r, s) of a DER signature when both are in [1, n-1], as both ECDSA and SM2 require."""
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        return None
    return (r, s) if 0 < r < n and 0 < s < n else None


class _TableBacked:
    """Counts the keys holding a table (either implementation), against `MAX_TABLES`."""

    live = 0
    _counted = False

    @staticmethod
    def _uncompressed(point: bytes) -> bytes:
        """Both implementations take exactly this form (and SM2's Z hashes x and y from it)."""
        if len(point) != 65 or point[0] != _UNCOMPRESSED:
            raise ValueError("the public key must be an uncompressed point (65 bytes, 0x04 || x || y)")
        return bytes(point)

    def _count(self) -> None:
        """Called once the table exists."""
        _TableBacked.live += 1
        self._counted = True

    def __del__(self) -> None:
        if self._counted:
            _TableBacked.live -= 1


class EcdsaP256Verifier(_TableBacked):
    """ECDSA with SHA-256 over P-256 for one public key (uncompressed point, 65 bytes)."""

    def __init__(self, public_point: bytes):
        public_point = self._uncompressed(public_point)
        self._key = _ec.Key("P-256", public_point) if _ec is not None else None
        if self._key is None:
            self._v = _Verifier(NID_P256, P256_N, public_point, wnaf=False)
        self._count()

    def __call__(self, signature: bytes, message: bytes) -> bool:
        digest = hashlib.sha256(message).digest()  # 256-bit hash, 256-bit n: no truncation
        if self._key is not None:
            return bool(self._key.verify(digest, signature))
        n = P256_N
        rs = _scalars(signature, n)
        if rs is None:
            return False
        r, s = rs
        w = self._v.inverse(s)
        if w is None:
            return False
        x = self._v.x_of(int.from_bytes(digest, "big") * w % n, r * w % n)
        return x is not None and x % n == r


class Sm2Verifier(_TableBacked):
    """SM2 signatures (SM3, signer id `uid`) for one public key (uncompressed point, 65 bytes)."""

    def __init__(self, public_point: bytes, uid: bytes = DEFAULT_ID):
        public_point = self._uncompressed(public_point)
        self._key = _ec.Key("SM2", public_point) if _ec is not None else None
        if self._key is None:
            self._v = _Verifier(NID_SM2, SM2_N, public_point, wnaf=True)
        self._count()
        bits = len(uid) * 8
        # Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), fixed per key and id.
        self._z = hashlib.new(
            "sm3", bits.to_bytes(2, "big") + uid + _SM2_A + _SM2_B + _SM2_GX + _SM2_GY + public_point[1:]
        ).digest()

    def __call__(self, signature: bytes, message: bytes) -> bool:
        digest = hashlib.new("sm3", self._z + message).digest()
        if self._key is not None:
            return bool(self._key.verify(digest, signature))
        n = SM2_N
        rs = _scalars(signature, n)
        if rs is None:
            return False
        r, s = rs
        t = (r + s) % n
        if t == 0:
            return False
        x = self._v.x_of(s, t)
        return x is not None and (int.from_bytes(digest, "big") + x) % n == r


def ecdsa_p256(public_point: bytes) -> EcdsaP256Verifier | None:
    """A table-backed verifier, or None when `MAX_TABLES` keys already have one."""
    return EcdsaP256Verifier(public_point) if _TableBacked.live < MAX_TABLES else None


def sm2(public_point: bytes, uid: bytes = DEFAULT_ID) -> Sm2Verifier | None:
    """A table-backed verifier, or None when `MAX_TABLES` keys already have one."""
    return Sm2Verifier(public_point, uid) if _TableBacked.live < MAX_TABLES else None
