"""Cases for the ECDSA P-256 and SM2 verifiers, shared by test_ec_vectors.py and test_ec_sanitizers.py.

- `build_ec` compiles components/mpaas/crypto/_ec.c into a directory as a Python extension (with any
  flags), `load_ec` loads such a build, `native_ec` gives the C module to test: the installed one when
  it is built from the current source, else one compiled here.
- `verifiers` builds, for one public key (PEM, as the app's Secret holds it), the verifier of each
  path the gateway can take, the way `signing.verifier` builds it: `C` (mpaas.crypto._ec), `OpenSSL`
  (fixedbase's fallback on OpenSSL's EC arithmetic, what runs without the C module or with
  MPAAS_CRYPTO_BACKEND=openssl) and `OpenSSL verify` (past the table budget: OpenSSL's own verify).
- `wycheproof` reads a Wycheproof file into cases in the gateway's form; `differential` makes
  seeded cases whose expected answers are OpenSSL's.
- `to_json` writes cases in the form ec_check.py (the sanitizer run) reads.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import hashlib
import json
import random
import shutil
import subprocess
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_void_p
from dataclasses import dataclass
from functools import cache
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpaas.crypto import fixedbase, signing, sm2
from mpaas.crypto.fixedbase import P256_N, SM2_N, EcdsaP256Verifier, Sm2Verifier

VECTORS = Path(__file__).resolve().parent / "vectors"
EC_SOURCE = Path(fixedbase.__file__).with_name("_ec.c")
PATHS = ("C", "OpenSSL", "OpenSSL verify")
CURVE = {"EcdsaP256": "P-256", "Sm2": "SM2"}  # algorithm -> the C module's curve name
ORDER = {"EcdsaP256": P256_N, "Sm2": SM2_N}

# SubjectPublicKeyInfo up to the point: SEQUENCE { SEQUENCE { id-ecPublicKey, curve }, BIT STRING (0 unused bits) }
_SPKI_PREFIX = {
    "EcdsaP256": bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200"),
    "Sm2": bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200"),
}
_SM2_CURVE_OID = bytes.fromhex("06082a811ccf5501822d")


# GB/T 32918.5-2017 (identical to GM/T 0003.5-2012) Annex A: an SM2 signature on the recommended curve
# sm2p256v1. The private key, the signer's id (the default of GM/T 0009, which the gateway uses), the
# message, the nonce and (r, s) as OpenSSL's own test quotes them: openssl/openssl
# test/sm2_internal_test.c, sm2_sig_test ("From Annex A in both GM/T0003.5-2012 and GB/T 32918.5-2016").
# The public key, Z_A and e = SM3(Z_A || M) are the standard's intermediate values of the same example.
SM2_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
SM2_ID = b"1234567812345678"
SM2_MESSAGE = b"message digest"
SM2_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
SM2_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
SM2_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
SM2_POINT = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
SM2_ZA = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
SM2_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")


class BuildError(RuntimeError):
    pass


# --- the C module --------------------------------------------------------------------------------


def build_ec(out_dir: Path, cflags: Sequence[str] = ("-O2",), source: Path = EC_SOURCE) -> Path:
    """Compiles _ec.c (or a changed copy) into `out_dir` as a Python extension (the system C compiler, `cc`)."""
    cc = shutil.which("cc")
    if cc is None:
        raise BuildError("no C compiler: `cc` is not on PATH (install gcc or clang to build mpaas/crypto/_ec.c)")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        raise BuildError(f"Python.h is not in {include}: the interpreter's development headers are missing")
    out = out_dir / f"_ec{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [cc, "-shared", "-fPIC", *cflags, f"-I{include}", str(source), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return out


def load_ec(path: Path) -> ModuleType:
    """A build of _ec.c from its file (not registered in sys.modules)."""
    spec = spec_from_file_location("_ec", path)
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def native_ec(scratch: Path) -> ModuleType:
    """The C module the gateway loads when it is built from the source here; else one built into `scratch`."""
    if fixedbase._ec is not None:
        return fixedbase._ec
    return load_ec(build_ec(scratch))


# --- the gateway's verifiers, one per path --------------------------------------------------------


@contextmanager
def _path(name: str, native: ModuleType) -> Iterator[None]:
    saved = fixedbase._ec, fixedbase.MAX_TABLES
    fixedbase._ec = native if name == "C" else None
    # The table budget is not under test here: every key gets a table on the table paths, none on the other.
    fixedbase.MAX_TABLES = 0 if name == "OpenSSL verify" else 1 << 30
    try:
        yield
    finally:
        fixedbase._ec, fixedbase.MAX_TABLES = saved


def verifiers(algorithm: str, pem: bytes, native: ModuleType) -> dict[str, signing.Verify | None]:
    """Path -> the gateway's verifier for this key on that path; None where the key is refused (KeyProblem)."""
    out: dict[str, signing.Verify | None] = {}
    for name in PATHS:
        with _path(name, native):
            try:
                v = signing.verifier(algorithm, {"publicKey": pem})
            except signing.KeyProblem:
                out[name] = None
                continue
        table = isinstance(v, EcdsaP256Verifier | Sm2Verifier)
        # Each path is what it says: the C table, OpenSSL's table, or no table at all.
        assert table == (name != "OpenSSL verify"), (name, v)
        assert not table or (getattr(v, "_key", None) is not None) == (name == "C"), (name, v)
        out[name] = v
    return out


# --- cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One verification. `message` None: a digest-level case, for the C module and OpenSSL's prehashed verify."""

    name: str  # where it comes from, for failure messages
    algorithm: str  # EcdsaP256 or Sm2
    pem: bytes  # the public key as the app's Secret holds it
    point: bytes  # the same key as the C module takes it (uncompressed point)
    message: bytes | None
    digest: bytes  # what the C module verifies: SHA-256(message), SM3(Z || message), or the chosen digest
    signature: bytes
    expected: bool | None  # True: verifies, False: refused, None: the key itself is refused
    acceptable: bool = False  # Wycheproof's "acceptable": either answer, as long as every path gives the same

    def describe(self) -> str:
        msg = "digest-level" if self.message is None else f"message={self.message.hex()}"
        return (
            f"{self.name}: {self.algorithm} point={self.point.hex()} {msg} digest={self.digest.hex()} "
            f"signature={self.signature.hex()} expected={'either' if self.acceptable else self.expected}"
        )


def spki_pem(algorithm: str, point: bytes) -> bytes:
    """The PEM public key for an uncompressed point, whether or not it lies on the curve."""
    return _pem("PUBLIC KEY", _SPKI_PREFIX[algorithm] + point)


def _pem(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = b"".join(b64[i : i + 64] + b"\n" for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n".encode() + lines + f"-----END {label}-----\n".encode()


def c_digest(algorithm: str, point: bytes, message: bytes, uid: bytes = sm2.DEFAULT_ID) -> bytes:
    """The digest the C module gets for `message`: SHA-256, or SM3(Z || message) for SM2."""
    if algorithm == "EcdsaP256":
        return hashlib.sha256(message).digest()
    z = hashlib.new(
        "sm3",
        (len(uid) * 8).to_bytes(2, "big")
        + uid
        + fixedbase._SM2_A
        + fixedbase._SM2_B
        + fixedbase._SM2_GX
        + fixedbase._SM2_GY
        + point[1:],
    ).digest()
    return hashlib.new("sm3", z + message).digest()


# --- Wycheproof ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wycheproof:
    cases: list[Case]  # in the gateway's form: DER signature, PEM key, the message
    inexpressible: list[dict[str, object]]  # test cases the gateway's input cannot carry
    results: dict[str, int]  # valid / invalid / acceptable, over every test case in the file
    number_of_tests: int


def wycheproof(filename: str) -> Wycheproof:
    """Every test case of an ECDSA P-256 Wycheproof file, as the gateway would receive it.

    The gateway takes DER signatures only. A P1363 signature (r || s, 32 bytes each) carries the same
    two integers, so it is re-encoded as DER; a P1363 signature of another length has no DER form (its
    case is about the length itself) and is counted as inexpressible instead."""
    data = json.loads((VECTORS / "wycheproof" / filename).read_text())
    p1363 = data["schema"].startswith("ecdsa_p1363")
    cases, inexpressible, results = [], [], {"valid": 0, "invalid": 0, "acceptable": 0}
    for group in data["testGroups"]:
        assert group["publicKey"]["curve"] == "secp256r1" and group["sha"] == "SHA-256"
        pem, point = group["publicKeyPem"].encode(), bytes.fromhex(group["publicKey"]["uncompressed"])
        for t in group["tests"]:
            results[t["result"]] += 1
            sig = bytes.fromhex(t["sig"])
            if p1363:
                if len(sig) != 64:
                    inexpressible.append(t)
                    continue
                sig = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            msg = bytes.fromhex(t["msg"])
            cases.append(
                Case(
                    name=f"{filename} tcId {t['tcId']} ({t['comment']}; {', '.join(t['flags'])}; {t['result']})",
                    algorithm="EcdsaP256",
                    pem=pem,
                    point=point,
                    message=msg,
                    digest=hashlib.sha256(msg).digest(),
                    signature=sig,
                    expected=t["result"] == "valid",
                    acceptable=t["result"] == "acceptable",
                )
            )
    return Wycheproof(cases, inexpressible, results, data["numberOfTests"])


# --- OpenSSL as the oracle -------------------------------------------------------------------------


@cache
def _sm2_raw() -> ctypes.CDLL:
    """libcrypto's SM2 sign and verify over a digest (EVP_PKEY_sign / EVP_PKEY_verify, no message digest)."""
    lib = sm2._lib()
    for fn, (restype, argtypes) in {
        "EVP_PKEY_sign_init": (c_int, [c_void_p]),
        "EVP_PKEY_sign": (c_int, [c_void_p, c_char_p, POINTER(c_size_t), c_char_p, c_size_t]),
        "EVP_PKEY_verify_init": (c_int, [c_void_p]),
        "EVP_PKEY_verify": (c_int, [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t]),
    }.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes
    return lib


def _sm2_ptr(key: sm2.PublicKey | sm2.PrivateKey) -> int:
    return int(key._ptr)


def sm2_sign_digest(key: sm2.PrivateKey, digest: bytes) -> bytes:
    lib = _sm2_raw()
    ctx = lib.EVP_PKEY_CTX_new(_sm2_ptr(key), None)
    try:
        out, n = ctypes.create_string_buffer(80), c_size_t(80)
        assert lib.EVP_PKEY_sign_init(ctx) == 1 and lib.EVP_PKEY_sign(ctx, out, byref(n), digest, len(digest)) == 1
        return out.raw[: n.value]
    finally:
        lib.EVP_PKEY_CTX_free(ctx)


def sm2_verify_digest(key: sm2.PublicKey, digest: bytes, signature: bytes) -> bool:
    lib = _sm2_raw()
    ctx = lib.EVP_PKEY_CTX_new(_sm2_ptr(key), None)
    try:
        assert lib.EVP_PKEY_verify_init(ctx) == 1
        ok = lib.EVP_PKEY_verify(ctx, signature, len(signature), digest, len(digest)) == 1
        lib.ERR_clear_error()
        return ok
    finally:
        lib.EVP_PKEY_CTX_free(ctx)


def sm2_private_key(d: int) -> sm2.PrivateKey:
    """The SM2 key with private scalar d (SEC 1 ECPrivateKey on the SM2 curve; OpenSSL derives the point)."""
    body = bytes.fromhex("020101") + b"\x04\x20" + d.to_bytes(32, "big") + b"\xa0\x0a" + _SM2_CURVE_OID
    der = b"\x30" + bytes([len(body)]) + body
    return sm2.PrivateKey.from_pem(_pem("EC PRIVATE KEY", der))


def openssl_answer(case: Case) -> bool | None:
    """OpenSSL's own verdict, independent of the gateway's code: None when it refuses the key."""
    if case.algorithm == "EcdsaP256":
        try:
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), case.point)
        except ValueError:
            return None
        algo = ec.ECDSA(hashes.SHA256() if case.message is not None else Prehashed(hashes.SHA256()))
        try:
            pub.verify(case.signature, case.message if case.message is not None else case.digest, algo)
            return True
        except InvalidSignature:
            return False
    try:
        key = sm2.PublicKey.from_pem(case.pem)
    except sm2.Sm2Error:
        return None
    if case.message is not None:
        return key.verify(case.signature, case.message)
    return sm2_verify_digest(key, case.digest, case.signature)


# --- the differential cases ------------------------------------------------------------------------


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def _mutations(rng: random.Random, sig: bytes, n: int) -> list[tuple[str, bytes]]:
    """Signatures made from a valid one: each must get the same answer from every implementation."""
    r, s = decode_dss_signature(sig)
    der = encode_dss_signature  # any non-negative r and s, 2^256 and above too
    return [
        ("valid", sig),
        ("r with a flipped bit", der(r ^ (1 << rng.randrange(256)), s)),
        ("s with a flipped bit", der(r, s ^ (1 << rng.randrange(256)))),
        ("r's low bit flipped", der(r ^ 1, s)),
        ("s's top bit flipped", der(r, s ^ (1 << 255))),
        ("r = 0", der(0, s)),
        ("s = 0", der(r, 0)),
        ("r = n", der(n, s)),
        ("s = n", der(r, n)),
        ("r + n", der(r + n, s)),
        ("s + n", der(r, s + n)),
        ("r = n - 1", der(n - 1, s)),
        ("r = 2^256 - 1", der((1 << 256) - 1, s)),
        ("s = 2^256 - 1", der(r, (1 << 256) - 1)),
        ("high-s (n - s)", der(r, n - s)),
        ("r, s swapped", der(s, r)),
        ("r = s = 1", der(1, 1)),
        ("r + s = n", der(r, n - r)),
        ("a DER byte flipped", _flip(sig, rng.randrange(len(sig) * 8))),
        ("truncated", sig[: rng.randrange(len(sig))]),
        ("a byte appended", sig + bytes([rng.randrange(256)])),
    ]


def _der_garbage(rng: random.Random) -> list[bytes]:
    """Signatures shaped like DER whose lengths and integer sizes lie: the parser's bounds."""
    out = []
    for total in range(76):
        b = bytearray(rng.randbytes(total))
        if total >= 2:
            b[0], b[1] = 0x30, (total - 2) if rng.random() < 0.8 else rng.randrange(256)
        if total >= 4:
            b[2], b[3] = 0x02, rng.choice([0, 1, 31, 32, 33, 34, total - 4, total, 0x80, 0xFF]) & 0xFF
        out.append(bytes(b))
    return out


Signer = Callable[[bytes], bytes]


def _key(algorithm: str, d: int) -> tuple[bytes, Signer, Signer]:
    """(uncompressed point, sign a message, sign a digest) for the private scalar d, all by OpenSSL."""
    if algorithm == "EcdsaP256":
        private = ec.derive_private_key(d, ec.SECP256R1())
        point = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        on_msg = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        on_digest = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)
        return point, lambda m: private.sign(m, on_msg), lambda dg: private.sign(dg, on_digest)
    sk = sm2_private_key(d)
    return sk.public_key().point(), lambda m: sk.sign(m), lambda dg: sm2_sign_digest(sk, dg)


def _message_case(name: str, algorithm: str, point: bytes, msg: bytes, sig: bytes) -> Case:
    pem = spki_pem(algorithm, point)
    return Case(name, algorithm, pem, point, msg, c_digest(algorithm, point, msg), sig, None)


def differential(seed: int, keys: int, messages: int) -> list[Case]:
    """Seeded keys and messages for both algorithms, signatures by OpenSSL, mutations; expected: OpenSSL's answer.

    P-256 signatures are deterministic (RFC 6979), so a seed gives the same cases every time; OpenSSL
    signs SM2 with a random nonce only, so SM2 signatures differ between runs (a failure prints its case)."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for algorithm in ("EcdsaP256", "Sm2"):
        n, previous = ORDER[algorithm], None
        for k in range(keys):
            point, sign, sign_digest = _key(algorithm, rng.randrange(1, n - 1))
            pem, tag = spki_pem(algorithm, point), f"{algorithm} seed {seed} key {k}"

            def case(
                what: str, sig: bytes, msg: bytes, key: bytes = point, tag: str = tag, alg: str = algorithm
            ) -> Case:
                return _message_case(f"{tag}: {what}", alg, key, msg, sig)

            for m in range(messages):
                msg = rng.randbytes(rng.randrange(200))
                sig = sign(msg)
                cases += [case(f"msg {m}: {what}", s, msg) for what, s in _mutations(rng, sig, n)]
                changed = _flip(msg, rng.randrange(len(msg) * 8)) if msg else b"\x00"
                cases.append(case(f"msg {m}: message changed", sig, changed))
                cases.append(case(f"msg {m}: key with a flipped bit", sig, msg, _flip(point, 8 + rng.randrange(512))))
                if previous is not None:
                    cases.append(case(f"msg {m}: another key", sig, msg, previous))
            cases += [case("DER garbage", g, b"garbage") for g in _der_garbage(rng)[k::keys]]
            # Digest-level: mutations of the digest itself, which no message reaches on purpose. A digest
            # below 2^256 - n also has a twin e + n that fits in 32 bytes: the same value mod n.
            digest, small = rng.randbytes(32), bytes(5) + rng.randbytes(27)
            dsig, small_sig, e = sign_digest(digest), sign_digest(small), int.from_bytes(small, "big")
            for what, dg, sg in (
                ("valid", digest, dsig),
                ("digest with a flipped bit", _flip(digest, rng.randrange(256)), dsig),
                ("digest = 0", bytes(32), dsig),
                ("digest = 2^256 - 1", b"\xff" * 32, dsig),
                ("small digest", small, small_sig),
                ("small digest + n", (e + n).to_bytes(32, "big"), small_sig),
                ("small digest + 1", (e + 1).to_bytes(32, "big"), small_sig),
            ):
                cases.append(Case(f"{tag}: digest-level, {what}", algorithm, pem, point, None, dg, sg, None))
            previous = point
    return [dataclasses.replace(c, expected=openssl_answer(c)) for c in cases]


# --- running cases ---------------------------------------------------------------------------------


def c_answer(native: ModuleType, case: Case, keys: dict[tuple[str, bytes], object]) -> bool | None:
    """The C module's verdict on the digest, None when it refuses the key; `keys` caches Key objects."""
    slot = (case.algorithm, case.point)
    if slot not in keys:
        try:
            keys[slot] = native.Key(CURVE[case.algorithm], case.point)
        except ValueError:
            keys[slot] = None
    key = keys[slot]
    return None if key is None else bool(key.verify(case.digest, case.signature))  # type: ignore[attr-defined]


Built = dict[tuple[str, bytes], dict[str, "signing.Verify | None"]]  # (algorithm, PEM) -> path -> verifier


def run(
    cases: Sequence[Case], native: ModuleType, built: Built | None = None
) -> list[tuple[Case, dict[str, bool | None]]]:
    """Every case on every path: the gateway's verifiers (message-level cases) and the C module's own verify.

    Returns each case with its answers: path -> True / False, None where the path refused the key.
    `built` keeps the verifiers between runs (OpenSSL's P-256 table takes ~30 ms a key)."""
    built = {} if built is None else built
    keys: dict[tuple[str, bytes], object] = {}
    out = []
    for case in cases:
        answers: dict[str, bool | None] = {"C module": c_answer(native, case, keys)}
        if case.message is not None:
            slot = (case.algorithm, case.pem)
            if slot not in built:
                built[slot] = verifiers(case.algorithm, case.pem, native)
            for name, v in built[slot].items():
                answers[name] = None if v is None else v(case.signature, case.message)
        out.append((case, answers))
    return out


def to_json(cases: Sequence[Case], path: Path) -> None:
    """The cases at the C module's level, for ec_check.py: curve, point, digest, signature, expected."""
    rows = [
        {
            "name": c.name,
            "curve": CURVE[c.algorithm],
            "point": c.point.hex(),
            "digest": c.digest.hex(),
            "signature": c.signature.hex(),
            "expected": "either" if c.acceptable else c.expected,
        }
        for c in cases
    ]
    path.write_text(json.dumps(rows))
