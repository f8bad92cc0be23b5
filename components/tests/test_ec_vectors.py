"""ECDSA P-256 and SM2 verification against published vectors and against OpenSSL, on every path the gateway takes.

Paths (ec_cases.PATHS), each a verifier built by `signing.verifier` from the PEM key as the app's Secret
holds it, called with the signature bytes (the `Sign` header, base64-decoded) and the message:

- `C`: mpaas.crypto._ec, the installed build when it is built from the current source, else one
  compiled here from components/mpaas/crypto/_ec.c (no skip: a missing compiler fails);
- `OpenSSL`: fixedbase's fallback on OpenSSL's EC arithmetic (no C module, or MPAAS_CRYPTO_BACKEND=openssl);
- `OpenSSL verify`: a key past the table budget, OpenSSL's own ECDSA / SM2 verify;

plus `C module`: the C module's own verify over the digest.

Wycheproof: "valid" must verify and "invalid" must not, on every path. "acceptable" cases (signatures
some libraries accept, others refuse) must get the same answer on every path, whichever it is. The
files here (generator 0.9rc5) carry no acceptable ECDSA case: what older versions marked acceptable
(BER lengths, a missing leading zero) is invalid here, and every path refuses it (the C module's DER
parser is strict; OpenSSL re-encodes and compares). The count is asserted, so a newer file that has
some shows up. The gateway takes DER signatures only: a P1363 case is re-encoded as DER when it is
r || s of 32 bytes each, and counted as inexpressible otherwise (the count is asserted).
"""

import hashlib
import time
from types import ModuleType

import ec_cases
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from ec_cases import PATHS, SM2_D, SM2_E, SM2_ID, SM2_K, SM2_MESSAGE, SM2_POINT, SM2_R, SM2_S, SM2_ZA

from mpaas.crypto import fixedbase, sm2
from mpaas.crypto.fixedbase import SM2_N

pytestmark = pytest.mark.unit

EVERY_PATH = {"C module", *PATHS}


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    try:
        return ec_cases.native_ec(tmp_path_factory.mktemp("ec"))
    except ec_cases.BuildError as e:
        pytest.fail(f"the C verifier cannot be tested: {e}")


@pytest.fixture(scope="module")
def built() -> ec_cases.Built:
    """Verifiers by key, shared by the two Wycheproof files (they use the same keys)."""
    return {}


def disagreements(results: list[tuple[ec_cases.Case, dict[str, bool | None]]]) -> list[str]:
    """Cases where a path's answer differs from the expected one (acceptable: where the paths differ)."""
    out = []
    for case, answers in results:
        if case.acceptable:
            ok = len(set(answers.values())) == 1
        else:
            ok = all(a is case.expected for a in answers.values())
        if not ok:
            out.append(f"{case.describe()}\n    answers: {answers}")
    return out


# file -> (test cases in it, those the gateway's DER input cannot carry)
WYCHEPROOF = {
    "ecdsa_secp256r1_sha256_test.json": (484, 0),
    "ecdsa_secp256r1_sha256_p1363_test.json": (262, 21),
}


@pytest.mark.parametrize("filename", sorted(WYCHEPROOF))
def test_wycheproof_ecdsa_p256(native: ModuleType, built: ec_cases.Built, filename: str) -> None:
    total, inexpressible = WYCHEPROOF[filename]
    w = ec_cases.wycheproof(filename)
    assert w.number_of_tests == total == sum(w.results.values())
    assert len(w.inexpressible) == inexpressible, [t["tcId"] for t in w.inexpressible]
    assert len(w.cases) + len(w.inexpressible) == total  # nothing dropped on the way
    # Only wrong-length P1363 signatures are left out, all invalid: no valid case goes untested.
    assert all(t["result"] == "invalid" and len(str(t["sig"])) != 128 for t in w.inexpressible)
    assert w.results["acceptable"] == 0

    results = ec_cases.run(w.cases, native, built)
    ran = {path: sum(path in answers for _, answers in results) for path in EVERY_PATH}
    assert ran == dict.fromkeys(EVERY_PATH, total - inexpressible)
    wrong = disagreements(results)
    assert not wrong, f"{len(wrong)} Wycheproof cases decided wrongly:\n" + "\n".join(wrong[:20])
    valid = sum(c.expected is True for c in w.cases)
    assert valid == w.results["valid"] and valid > 100


def test_sm2_standard_example(native: ModuleType) -> None:
    """The standard's signature verifies on every path; changed message, id, r or s do not."""
    assert SM2_ID == sm2.DEFAULT_ID  # the gateway's id is the standard's: the example needs no adaptation
    pem = ec_cases.sm2_private_key(SM2_D).public_key().pem()
    assert sm2.PublicKey.from_pem(pem).point() == SM2_POINT  # d·G is the standard's public key
    assert ec_cases.spki_pem("Sm2", SM2_POINT) == pem
    verifier = fixedbase.Sm2Verifier(SM2_POINT)
    assert verifier._z == SM2_ZA
    assert ec_cases.c_digest("Sm2", SM2_POINT, SM2_MESSAGE) == SM2_E

    sig = encode_dss_signature(SM2_R, SM2_S)
    key = native.Key("SM2", SM2_POINT)
    assert key.verify(SM2_E, sig) is True
    assert sm2.PublicKey.from_pem(pem).verify(sig, SM2_MESSAGE, uid=SM2_ID)
    paths = ec_cases.verifiers("Sm2", pem, native)
    assert set(paths) == set(PATHS)
    for name, v in paths.items():
        assert v is not None and v(sig, SM2_MESSAGE) is True, name

    for what, bad_sig, msg in (
        ("message", sig, b"message digesT"),
        ("r + 1", encode_dss_signature(SM2_R + 1, SM2_S), SM2_MESSAGE),
        ("s + 1", encode_dss_signature(SM2_R, SM2_S + 1), SM2_MESSAGE),
        ("n - s", encode_dss_signature(SM2_R, SM2_N - SM2_S), SM2_MESSAGE),
        ("k in place of s", encode_dss_signature(SM2_R, SM2_K), SM2_MESSAGE),
        ("raw r || s", SM2_R.to_bytes(32, "big") + SM2_S.to_bytes(32, "big"), SM2_MESSAGE),
    ):
        for name, v in paths.items():
            assert v is not None and v(bad_sig, msg) is False, (what, name)
        assert key.verify(hashlib.new("sm3", SM2_ZA + msg).digest(), bad_sig) is False, what
    # The id is part of what is signed: the same signature under another id is refused.
    other_id = b"ALICE123@YAHOO.COM"
    assert not sm2.PublicKey.from_pem(pem).verify(sig, SM2_MESSAGE, uid=other_id)
    assert fixedbase.Sm2Verifier(SM2_POINT, other_id)(sig, SM2_MESSAGE) is False
    assert key.verify(ec_cases.c_digest("Sm2", SM2_POINT, SM2_MESSAGE, other_id), sig) is False


def test_differential_against_openssl(native: ModuleType) -> None:
    """Seeded keys and messages, signatures by OpenSSL and mutations of them: every path answers as OpenSSL does.

    Mutations: r and s with a flipped bit, 0, n, n - 1, + n, 2^256 - 1, swapped, high-s (n - s), r + s = n;
    the message or the digest changed (bit flips, 0, 2^256 - 1, + n); a key with a flipped bit (refused as
    a key everywhere) and another valid key; DER bytes flipped, truncated, appended; DER-shaped garbage."""
    started = time.perf_counter()
    cases = ec_cases.differential(seed=20261130, keys=20, messages=3)
    results = ec_cases.run(cases, native)
    elapsed = time.perf_counter() - started
    assert len(cases) > 3000
    wrong = disagreements(results)
    assert not wrong, f"{len(wrong)} of {len(cases)} cases differ from OpenSSL:\n" + "\n".join(wrong[:20])
    by_answer = {a: sum(c.expected is a for c in cases) for a in (True, False, None)}
    assert min(by_answer.values()) >= 100, by_answer  # each kind of answer is well represented
    # Message-level cases went through all three of the gateway's paths, digest-level ones through the C module.
    assert all(set(a) == (EVERY_PATH if c.message is not None else {"C module"}) for c, a in results)
    assert elapsed < 30, f"{elapsed:.1f} s"  # ~2.5 s on an idle core
