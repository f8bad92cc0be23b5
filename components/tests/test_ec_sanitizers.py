"""The C verifier (components/mpaas/crypto/_ec.c) under AddressSanitizer and UndefinedBehaviorSanitizer.

_ec.c is compiled with `-fsanitize=address,undefined` into a temporary directory as a Python extension
and run in a child interpreter (ec_check.py) over the Wycheproof cases, the SM2 standard example and
the differential cases (answers computed here, by OpenSSL), plus malformed calls and DER-shaped garbage.
The child has the compiler's ASan runtime preloaded (CPython itself is not instrumented),
PYTHONMALLOC=malloc so Python's own buffers are ASan allocations too, leak detection off (CPython
leaks at exit by design) and UBSan halting at the first report. Any sanitizer report fails the test.
Needs only the system C compiler: without one the test fails, it does not skip.
"""

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ec_cases
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from ec_cases import SM2_E, SM2_POINT, SM2_R, SM2_S

pytestmark = pytest.mark.unit

SANITIZE = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
CHECK = Path(__file__).with_name("ec_check.py")
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def _libasan(cc: str) -> Path:
    """The ASan runtime the compiler links against (GCC: libasan.so, Clang: libclang_rt.asan-<arch>.so)."""
    for name in ("libasan.so", f"libclang_rt.asan-{platform.machine()}.so"):
        found = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if Path(found).is_absolute() and Path(found).exists():
            return Path(found).resolve()
    pytest.fail(f"{cc} has no AddressSanitizer runtime (libasan.so; on Debian: apt-get install libasan8)")


def _cc() -> str:
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler: `cc` is not on PATH; the sanitizer build of _ec.c needs one (gcc or clang)")
    return cc


def _build(out_dir: Path, source: Path = ec_cases.EC_SOURCE) -> Path:
    try:
        return ec_cases.build_ec(out_dir, SANITIZE, source)
    except ec_cases.BuildError as e:
        pytest.fail(str(e))


def _check(
    module: Path, cases: list[ec_cases.Case], scratch: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """ec_check.py over `cases` with the sanitizer build `module`: the finished child and its sanitizer reports."""
    ec_cases.to_json(cases, scratch / "cases.json")
    env = {
        **os.environ,
        "LD_PRELOAD": str(_libasan(_cc())),
        "ASAN_OPTIONS": "detect_leaks=0:exitcode=99",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONMALLOC": "malloc",
    }
    done = subprocess.run(
        [sys.executable, str(CHECK), str(module), str(scratch / "cases.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = done.stdout + done.stderr
    return done, [line for line in output.splitlines() if any(r in line for r in REPORTS)]


def _wycheproof() -> list[ec_cases.Case]:
    return [
        c
        for f in ("ecdsa_secp256r1_sha256_test.json", "ecdsa_secp256r1_sha256_p1363_test.json")
        for c in ec_cases.wycheproof(f).cases
    ]


def test_ec_under_asan_and_ubsan(tmp_path: Path) -> None:
    started = time.perf_counter()
    module = _build(tmp_path)
    built = time.perf_counter() - started
    cases = _wycheproof()
    assert len(cases) == 484 + 241
    sig = encode_dss_signature(SM2_R, SM2_S)
    cases.append(
        ec_cases.Case(
            "GB/T 32918.5 Annex A", "Sm2", ec_cases.spki_pem("Sm2", SM2_POINT), SM2_POINT, None, SM2_E, sig, True
        )
    )
    cases += ec_cases.differential(seed=7, keys=10, messages=2)
    done, reports = _check(module, cases, tmp_path)
    output = done.stdout + done.stderr
    assert not reports, f"sanitizer reports:\n{output[-6000:]}"
    assert done.returncode == 0, f"exit {done.returncode}:\n{output[-6000:]}"
    assert done.stdout.startswith(f"{len(cases)} cases,") and done.stdout.rstrip().endswith(": 0 wrong"), done.stdout
    elapsed = time.perf_counter() - started
    print(f"sanitizer build {built:.1f} s, all {elapsed:.1f} s: {done.stdout.strip()}")
    assert elapsed < 60, f"{elapsed:.0f} s"


# Bugs planted in a copy of _ec.c: the run above would report them, so its silence means something.
PLANTED = {
    # der_integer without its bounds check: an INTEGER that claims more bytes than the signature has.
    "read past the signature": (
        "if (n < 1 || n > 33 || at + n > len) return 0;",
        "if (n < 1 || n > 33) return 0;",
        "AddressSanitizer: heap-buffer-overflow",
    ),
    # from_be shifting an int (a promoted byte) by up to 56 bits.
    "shift past an int": (
        "r->v[bit / 64] |= (u64)b[i] << (bit % 64);",
        "r->v[bit / 64] |= b[i] << (bit % 64);",
        "runtime error:",
    ),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_the_sanitizer_run_reports_a_planted_bug(tmp_path: Path, bug: str) -> None:
    find, replace, report = PLANTED[bug]
    source = ec_cases.EC_SOURCE.read_text()
    assert source.count(find) == 1, f"_ec.c changed: update the planted bug {bug!r}"
    planted = tmp_path / "_ec.c"
    planted.write_text(source.replace(find, replace))
    done, reports = _check(_build(tmp_path, planted), _wycheproof(), tmp_path)
    assert done.returncode != 0 and any(report in line for line in reports), (done.returncode, done.stderr[-3000:])
