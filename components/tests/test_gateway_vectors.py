"""The test vectors of docs/gateway.md, checked with the gateway's own code: docs and code cannot drift apart.

Every ```yaml block of the document that starts with `vector:` is read here. Signatures are verified by the
verifiers the gateway builds from a Secret holding the documented keys; wrapped keys opened by its unwrappers;
sealed bodies opened, and answers sealed, by its envelope code; the whole request goes through the pipeline.
"""

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mpaas.config import LiveConfig
from mpaas.crypto import envelope, sm2
from mpaas.crypto.signing import canonical, signer
from mpaas.gateway.app import Gateway
from mpaas.gateway.settings import GatewaySettings
from mpaas.gateway.stages.route import EMPTY, KIND, SECRET, CompiledApp, RouteTable, compiler
from mpaas.http1 import Request
from mpaas.stores import open_hotstore

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def vectors() -> list[dict[str, Any]]:
    out = []
    for text in BLOCK.findall(DOC.read_text()):
        data = yaml.safe_load(text)
        if isinstance(data, dict) and "vector" in data:
            out.append(data)
    return out


VECTORS = vectors()
KEYS = next(v for v in VECTORS if v["vector"] == "keys")
REQUESTS = {v["vector"]: v for v in VECTORS if v["vector"].startswith("request")}
PUBLIC = {"Rsa2048": "rsaPublicKey", "EcdsaP256": "ecPublicKey", "Sm2": "sm2PublicKey", "HmacSha256": "hmacKey"}


def of(kind: str) -> list[dict[str, Any]]:
    return [v for v in VECTORS if v["vector"] == kind]


def ids(kind: str, *fields: str) -> list[str]:
    return ["-".join(str(v.get(f, "")) for f in fields) for v in of(kind)]


def body(req: dict[str, Any]) -> bytes:
    return base64.b64decode(req["bodyBase64"]) if "bodyBase64" in req else req["body"].encode()


def message(req: dict[str, Any]) -> bytes:
    return canonical(
        req["method"],
        req["path"],
        req["query"],
        req["operationType"],
        req["appId"],
        req["workspaceId"],
        req["ts"],
        req["nonce"],
        body(req),
    )


def table(algorithm: str) -> RouteTable:
    """The route table of a gateway whose one app signs with `algorithm` and may seal bodies, keys from KEYS."""
    data = {
        "hmacKey": KEYS["hmacKey"],
        "publicKey": KEYS[PUBLIC[algorithm]],
        "rsaPrivateKey": KEYS["rsaPrivateKey"],
        "ecPrivateKey": KEYS["ecPrivateKey"],
        "sm2PrivateKey": KEYS["sm2PrivateKey"],
    }
    live: LiveConfig[RouteTable] = LiveConfig("vectors", [KIND, SECRET], compiler("default", "vectors"), EMPTY)
    live.on_snapshot(
        SECRET,
        {
            ("default", "vector-keys"): {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "vector-keys", "namespace": "default", "resourceVersion": "1"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
        },
    )
    live.on_snapshot(
        KIND,
        {
            ("default", "vectors"): {
                "apiVersion": "mpaas.io/v1alpha1",
                "kind": KIND,
                "metadata": {"name": "vectors", "namespace": "default", "resourceVersion": "1", "generation": 1},
                "spec": {
                    "apps": [
                        {
                            "appId": "DEMO_APP",
                            "workspaceId": "default",
                            "credentialsSecretRef": {"name": "vector-keys"},
                            "signature": {"algorithm": algorithm, "requireNonce": True},
                            "encryption": {"mode": "Optional", "keyWraps": ["RsaOaep", "EciesP256", "Sm2"]},
                        }
                    ],
                    "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:9"}]}],
                    "apis": [{"operationType": "com.demo.echo", "upstream": "u", "mock": {"body": {"hello": "mpaas"}}}],
                },
            }
        },
    )
    assert live.current is not EMPTY and not live.errors
    return live.current


def app(algorithm: str) -> CompiledApp:
    compiled = table(algorithm).apps[("DEMO_APP", "default")]
    assert compiled.signature is not None and compiled.signature.key_problem is None
    return compiled


def test_the_document_has_every_kind_of_vector() -> None:
    assert {v["algorithm"] for v in of("signature")} == {"HmacSha256", "EcdsaP256", "Rsa2048", "Sm2"}
    assert {(v["vector"], v["cipher"]) for v in of("sealed-body") + of("sealed-answer")} == {
        (kind, cipher) for kind in ("sealed-body", "sealed-answer") for cipher in ("AesGcm", "Sm4Gcm")
    }
    assert sorted(v["keyWrap"] for v in of("key-wrap")) == ["EciesP256", "RsaOaep", "RsaOaep", "Sm2"]
    assert {"request", "request-rest", "request-sealed"} <= REQUESTS.keys()


def test_public_keys_belong_to_the_private_ones() -> None:
    for private, public in (("rsaPrivateKey", "rsaPublicKey"), ("ecPrivateKey", "ecPublicKey")):
        key = serialization.load_pem_private_key(KEYS[private].encode(), None)
        spki = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert spki.decode().strip() == KEYS[public].strip()
    assert sm2.PrivateKey.from_pem(KEYS["sm2PrivateKey"].encode()).public_key().pem().decode().strip() == (
        KEYS["sm2PublicKey"].strip()
    )


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_canonical_strings(name: str) -> None:
    req = REQUESTS[name]
    assert hashlib.sha256(body(req)).hexdigest() == req["bodySha256"]
    assert message(req).decode() == req["canonical"]


@pytest.mark.parametrize("vector", of("signature"), ids=ids("signature", "algorithm", "request"))
def test_signatures(vector: dict[str, Any]) -> None:
    msg, sign = message(REQUESTS[vector["request"]]), base64.b64decode(vector["sign"])
    sig = app(vector["algorithm"]).signature
    assert sig is not None
    verifiers = sig.verifiers
    assert verifiers and verifiers[0][0](sign, msg)
    assert not verifiers[0][0](sign, msg + b" ")
    mine = signer(vector["algorithm"], KEYS[vector["key"]].encode())(msg)
    assert verifiers[0][0](mine, msg)  # the reference client's fresh signature too
    assert (mine == sign) is vector["deterministic"]


@pytest.fixture
def fixed_nonce(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The nonces envelope.seal draws, given in turn."""
    given: list[bytes] = []
    monkeypatch.setattr(envelope.os, "urandom", lambda n: given.pop(0))
    yield given


@pytest.mark.parametrize(
    "vector", of("sealed-body") + of("sealed-answer"), ids=ids("sealed-body", "cipher") + ids("sealed-answer", "cipher")
)
def test_sealed_bodies(vector: dict[str, Any], fixed_nonce: list[bytes]) -> None:
    key, aad = bytes.fromhex(vector["sessionKey"]), bytes.fromhex(vector["aad"])
    assert aad == envelope.aad("DEMO_APP", "com.demo.echo")
    sealed = base64.b64decode(vector["sealed"])
    assert sealed[:12].hex() == vector["nonce"]
    assert envelope.open_sealed(vector["cipher"], key, sealed, aad) == vector["plaintext"].encode()
    fixed_nonce.append(bytes.fromhex(vector["nonce"]))
    assert envelope.seal(vector["cipher"], key, vector["plaintext"].encode(), aad) == sealed


@pytest.mark.parametrize("vector", of("key-wrap"), ids=ids("key-wrap", "keyWrap", "oaep"))
def test_key_wraps(vector: dict[str, Any]) -> None:
    enc = app("HmacSha256").encryption
    assert enc is not None
    chain = enc.unwrappers[vector["keyWrap"]]
    wrapped = base64.b64decode(vector["mgwKey"])
    assert chain[0][0](wrapped) == bytes.fromhex(vector["sessionKey"])
    if vector["keyWrap"] != "EciesP256":
        return
    # Every step of the documented derivation, from the fixed ephemeral key.
    eph = ec.derive_private_key(int(vector["ephemeralPrivateKey"], 16), ec.SECP256R1())
    point = eph.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    gateway_key = serialization.load_pem_public_key(KEYS["ecPublicKey"].encode())
    assert isinstance(gateway_key, ec.EllipticCurvePublicKey)
    shared = eph.exchange(ec.ECDH(), gateway_key)
    assert (point.hex(), shared.hex()) == (vector["ephemeralPoint"], vector["sharedSecret"])
    kek = envelope._hkdf(shared)
    assert kek.hex() == vector["wrappingKey"]
    nonce = bytes.fromhex(vector["nonce"])
    assert wrapped == point + nonce + AESGCM(kek).encrypt(nonce, bytes.fromhex(vector["sessionKey"]), None)


async def test_the_whole_request_through_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    req = REQUESTS["request-sealed"]
    monkeypatch.setattr(time, "time", lambda: int(req["ts"]) / 1000 + 1)  # inside the Ts window
    live: LiveConfig[RouteTable] = LiveConfig("v", [KIND], lambda _: table("HmacSha256"), EMPTY)
    live.recompile()
    gateway = Gateway(GatewaySettings(digest_log=False), live, hot=open_hotstore("memory://"))
    headers = {
        "operation-type": req["operationType"],
        "appid": req["appId"],
        "workspaceid": req["workspaceId"],
        "ts": req["ts"],
        "nonce": req["nonce"],
        "sign": req["sign"],
        "mgw-key-type": req["keyWrap"],
        "mgw-key": req["mgwKey"],
        "content-type": "application/json",
    }
    sealed = body(req)
    wrap = next(v for v in of("key-wrap") if v["keyWrap"] == req["keyWrap"])
    assert req["mgwKey"] == wrap["mgwKey"]
    key = bytes.fromhex(wrap["sessionKey"])
    aad = envelope.aad(req["appId"], req["operationType"])
    assert envelope.open_sealed(req["cipher"], key, sealed, aad) == req["plaintext"].encode()
    try:
        out = await gateway.handle(Request.whole("POST", "/mgw.htm", headers, sealed), req["operationType"], rest=False)
        assert out.code == 1000 and out.headers["Mgw-Encrypted"] == "1", out.headers
        assert envelope.open_sealed(req["cipher"], key, out.body, aad) == b'{"hello": "mpaas"}'
        again = await gateway.handle(
            Request.whole("POST", "/mgw.htm", headers, sealed), req["operationType"], rest=False
        )
        assert again.code == 7006  # the nonce is spent
        headers["sign"] = base64.b64encode(b"\0" * 32).decode()
        headers["nonce"] = "other"
        wrong = await gateway.handle(
            Request.whole("POST", "/mgw.htm", headers, sealed), req["operationType"], rest=False
        )
        assert wrong.code == 7002
    finally:
        await gateway.stop()


def test_the_reference_client_signs_with_a_nonce_the_gateway_accepts() -> None:
    from mpaas.simulator import MobileClient

    client = MobileClient("http://gw", "DEMO_APP", "default", sign_algorithm="HmacSha256", sign_key=b"k" * 32)
    try:
        h = client.headers("com.demo.echo", b"{}")
    finally:
        client.close()
    assert re.fullmatch(r"[0-9a-f]{32}", h["Nonce"])  # always one: apps may set requireNonce
    msg = canonical("POST", "/mgw.htm", "", "com.demo.echo", "DEMO_APP", "default", h["Ts"], h["Nonce"], b"{}")
    assert base64.b64decode(h["Sign"]) == signer("HmacSha256", b"k" * 32)(msg)
