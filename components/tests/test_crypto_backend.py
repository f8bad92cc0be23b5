"""MPAAS_CRYPTO_BACKEND=openssl: the gateway verifies ECDSA P-256 and SM2 with OpenSSL even when the C module is built.

Checked by where the work goes, not by verdicts alone: the C module is never imported, OpenSSL's EC
arithmetic (fixedbase._Verifier) computes every verification, and a C module that accepts anything
stops mattering once the switch is set.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from mpaas.crypto import fixedbase, signing
from mpaas.crypto.fixedbase import EcdsaP256Verifier, Sm2Verifier

pytestmark = pytest.mark.unit

ALGORITHMS = ("EcdsaP256", "Sm2")


def test_the_setting_takes_auto_or_openssl_only(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    sentinel = SimpleNamespace()

    def extension(module: str) -> Any:
        loaded.append(module)
        return sentinel

    monkeypatch.setattr(fixedbase, "extension", extension)
    for forced in ("openssl", " OpenSSL ", "OPENSSL"):
        assert fixedbase._native(forced) is None
    assert loaded == []  # openssl does not even import the C module
    for default in (None, "", "auto", "Auto"):
        assert fixedbase._native(default) is sentinel
    assert loaded == ["mpaas.crypto._ec"] * 4
    for setting in ("c", "off", "openssl3", "boringssl"):
        with pytest.raises(ValueError, match="MPAAS_CRYPTO_BACKEND"):
            fixedbase._native(setting)


class _AcceptsAnything:
    """A C module gone wrong: every signature verifies."""

    class Key:
        def __init__(self, curve: str, point: bytes):
            self.curve = curve

        def verify(self, digest: bytes, signature: bytes) -> bool:
            return True


def test_the_switch_routes_around_a_broken_c_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixedbase, "extension", lambda module: _AcceptsAnything)
    arithmetic = []
    x_of = fixedbase._Verifier.x_of

    def counted(self: fixedbase._Verifier, u1: int, u2: int) -> int | None:
        arithmetic.append((u1, u2))
        return x_of(self, u1, u2)

    monkeypatch.setattr(fixedbase._Verifier, "x_of", counted)
    for algorithm in ALGORITHMS:
        private, public = signing.generate_keypair(algorithm)
        sig = signing.signer(algorithm, private)(b"canonical string")
        forged = signing.signer(algorithm, signing.generate_keypair(algorithm)[0])(b"canonical string")

        monkeypatch.setattr(fixedbase, "_ec", fixedbase._native("auto"))
        assert fixedbase.backend() == "C"
        broken = signing.verifier(algorithm, {"publicKey": public})
        assert broken(forged, b"canonical string")  # the suspect module is what answers

        monkeypatch.setattr(fixedbase, "_ec", fixedbase._native("openssl"))
        assert fixedbase.backend() == "OpenSSL"
        before = len(arithmetic)
        verify = signing.verifier(algorithm, {"publicKey": public})
        assert isinstance(verify, EcdsaP256Verifier | Sm2Verifier) and verify._key is None
        assert verify(sig, b"canonical string")
        assert not verify(forged, b"canonical string")
        assert not verify(sig, b"canonical strinG")
        assert len(arithmetic) - before == 3  # each answer came from OpenSSL's arithmetic


_PROBE = """
import json, sys
from mpaas.crypto import fixedbase, signing
arithmetic = []
x_of = fixedbase._Verifier.x_of
fixedbase._Verifier.x_of = lambda self, u1, u2: arithmetic.append(1) or x_of(self, u1, u2)
verdicts = {}
for algorithm in ("EcdsaP256", "Sm2"):
    private, public = signing.generate_keypair(algorithm)
    verify = signing.verifier(algorithm, {"publicKey": public})
    sig = signing.signer(algorithm, private)(b"m")
    verdicts[algorithm] = [type(verify).__name__, verify(sig, b"m"), verify(sig, b"n")]
print(json.dumps({
    "backend": fixedbase.backend(),
    "imported": "mpaas.crypto._ec" in sys.modules,
    "arithmetic": len(arithmetic),
    "verdicts": verdicts,
}))
"""


def _probe(setting: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != fixedbase.BACKEND_ENV}
    if setting is not None:
        env[fixedbase.BACKEND_ENV] = setting
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120)


def test_the_environment_variable_switches_a_fresh_process() -> None:
    """As a gateway process starts: the variable is read at import, before any key is loaded."""
    done = _probe("openssl")
    assert done.returncode == 0, done.stderr
    forced = json.loads(done.stdout)
    assert forced == {
        "backend": "OpenSSL",
        "imported": False,
        "arithmetic": 4,
        "verdicts": {"EcdsaP256": ["EcdsaP256Verifier", True, False], "Sm2": ["Sm2Verifier", True, False]},
    }
    assert "MPAAS_CRYPTO_BACKEND=openssl" in done.stderr  # said once, in the log

    default = json.loads(_probe(None).stdout)
    if fixedbase._ec is not None:  # the C module is built here: without the switch it does the work
        assert (default["backend"], default["imported"], default["arithmetic"]) == ("C", True, 0)
    else:
        assert default["backend"] == "OpenSSL"
    assert default["verdicts"] == forced["verdicts"]

    typo = _probe("opensll")
    assert typo.returncode != 0 and "MPAAS_CRYPTO_BACKEND='opensll'" in typo.stderr
