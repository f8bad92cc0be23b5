"""A local APNs: Apple's HTTP/2 provider API served by Hypercorn over TLS (ALPN h2), for tests and benchmarks.

It answers like Apple (sideshow/apns2 response.go lists the reasons and their statuses; Apple's "Handling
notification responses from APNs"): `POST /3/device/<token>` with the provider-token or certificate
authentication, the apns-* headers checked, the 4096-byte payload limit, and the JSON `{"reason": ...}`
error answers (410 with `timestamp`, milliseconds). Two listeners: `url` for token authentication (ES256 JWTs
verified with the team's public key: kid, iss, signature, iat at most an hour old) and `cert_url` for
certificate authentication (TLS requires a client certificate from `issue_certificate`).

A body that is not a JSON object with an `aps` object is answered 400 PayloadEmpty: Apple documents no
reason of its own for a malformed payload.

Standalone: `python hack/push_vendors/apns.py --port 8443` prints one JSON line (url, certUrl, caFile,
authKeyFile, teamId, keyId, topic) and serves on 127.0.0.1 until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import logging
import re
import signal
import socket
import ssl
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "com.example.app"
MAX_PAYLOAD = 4096
MAX_BODY = 1 << 20  # read no further: a body this large is too large anyway
TOKEN_MAX_AGE = 3600  # seconds: an older provider token is ExpiredProviderToken
TOKEN_UPDATE_INTERVAL = 1200.0  # seconds between provider-token changes on one connection
PROBE_TOKEN = "0" * 64
MAX_STREAMS = 1000  # SETTINGS_MAX_CONCURRENT_STREAMS: what api.push.apple.com announces once a token is verified
PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk"}
)

_PATH = re.compile(r"/3/device/([^/]*)")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_TOPIC = re.compile(r"[A-Za-z0-9.\-]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def new_auth_key() -> bytes:
    """A fresh APNs signing key as Apple hands it out: a P-256 key in a PKCS#8 PEM (.p8)."""
    return _pem(ec.generate_private_key(ec.SECP256R1()))


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: Iterable[x509.GeneralName] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    sans = list(sans)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Accepted:
    token: str
    headers: dict[str, str]  # the apns-* headers and authorization as sent
    payload: dict[str, Any]
    apns_id: str
    certificate: bool  # came over the certificate-authentication listener
    http_version: str
    peer: str  # the client's address and port: one per connection


@dataclass
class _Failure:
    status: int
    reason: str | None
    retry_after: float | None
    body: bytes | None


@dataclass
class _Listener:
    port: int
    certificate: bool
    task: asyncio.Task[None] | None = None


@dataclass
class ApnsServer:
    """One APNs. Keys it trusts are `keys` (kid -> team id, public key); `topics` it allows pushing to."""

    team_id: str = TEAM_ID
    key_id: str = KEY_ID
    topics: set[str] = field(default_factory=lambda: {TOPIC})
    auth_key: bytes = field(default_factory=new_auth_key)  # the .p8 the clients sign with
    token_update_interval: float = TOKEN_UPDATE_INTERVAL
    per_token_limit: int | None = None  # requests per device token per second before TooManyRequests

    def __post_init__(self) -> None:
        private = serialization.load_pem_private_key(self.auth_key, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        self.keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {
            self.key_id: (self.team_id, private.public_key())
        }
        self.accepted: list[Accepted] = []
        self.requests = 0  # every request that reached the API
        self.provider_tokens: list[str] = []  # distinct provider tokens in the order first seen
        self.bad: set[str] = {PROBE_TOKEN}
        self.not_for_topic: set[str] = set()
        self.unregistered: dict[str, int] = {}  # token -> when, milliseconds since the epoch
        self.token_answers: dict[str, tuple[int, str]] = {}  # token -> forced (status, reason)
        self.revoked = False
        self._expired: set[str] = set()
        self._verified: dict[str, int] = {}  # provider token -> its iat, once its signature checked out
        self._failures: deque[_Failure] = deque()
        self._connection_tokens: dict[tuple[str, int], tuple[str, float]] = {}
        self._token_hits: dict[str, deque[float]] = {}
        self._listeners: list[_Listener] = []
        self._shutdown = asyncio.Event()
        self._dir = tempfile.TemporaryDirectory(prefix="apns-server-")
        self._make_pki(Path(self._dir.name))
        self.url = ""
        self.cert_url = ""

    # -- what tests change

    def unregister(self, token: str, at: float | None = None) -> None:
        self.unregistered[token] = int((time.time() if at is None else at) * 1000)

    def revoke(self) -> None:
        """Every request is refused from now on: InvalidProviderToken (BadCertificate for certificates)."""
        self.revoked = True

    def expire_tokens(self) -> None:
        """The provider tokens seen so far are answered ExpiredProviderToken, as an hour later."""
        self._expired.update(self.provider_tokens)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        reason: str | None = "ServiceUnavailable",
        *,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        """The next `n` requests are answered `status` with `reason` (or the raw `body`), whatever they are."""
        self._failures.extend(_Failure(status, reason, retry_after, body) for _ in range(n))

    @property
    def failures_left(self) -> int:
        """Failures fail_next asked for that no request has been answered with yet."""
        return len(self._failures)

    def rate_limit(self, n: int = 1, retry_after: float | None = 1.0) -> None:
        self.fail_next(n, 429, "TooManyRequests", retry_after=retry_after)

    def issue_certificate(self, topic: str = TOPIC) -> tuple[bytes, bytes]:
        """A provider client certificate and key (PEM) the certificate listener trusts."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            f"Apple Push Services: {topic}",
            key,
            self._client_ca,
            self._client_ca_key,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem(key)

    # -- running

    @property
    def ca_file(self) -> str:
        """The PEM of the CA that signed the server certificate: the client's `caFile`."""
        return str(Path(self._dir.name, "ca.pem"))

    def _make_pki(self, d: Path) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("mpaas local APNs CA", ca_key, None, ca_key, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            "localhost",
            key,
            ca,
            ca_key,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        self._client_ca_key = ec.generate_private_key(ec.SECP256R1())
        self._client_ca = _certificate(
            "mpaas local APNs provider CA", self._client_ca_key, None, self._client_ca_key, ca=True
        )
        (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / "server.key").write_bytes(_pem(key))
        (d / "client-ca.pem").write_bytes(self._client_ca.public_bytes(serialization.Encoding.PEM))

    def _config(self, sock: socket.socket, certificate: bool) -> Config:
        d = Path(self._dir.name)
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.certfile, config.keyfile = str(d / "server.pem"), str(d / "server.key")
        config.alpn_protocols = ["h2"]
        config.graceful_timeout = 0.5
        config.h2_max_concurrent_streams = MAX_STREAMS
        config.keep_alive_max_requests = 1 << 62  # Apple keeps a connection for hours; Hypercorn's 1000 would GOAWAY
        config.accesslog = None
        config.errorlog = logging.getLogger("push_vendors.apns")
        if certificate:
            config.ca_certs = str(d / "client-ca.pem")
            config.verify_mode = ssl.CERT_REQUIRED
        config.create_ssl_context()  # fails here, not in the serving task, when the files are wrong
        return config

    async def start(self, port: int = 0, cert_port: int = 0) -> str:
        """Serves on 127.0.0.1 (`port` token authentication, `cert_port` certificates); returns `url`."""
        self._shutdown.clear()
        for p, certificate in ((port, False), (cert_port, True)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", p))
            sock.listen(1024)  # connections wait in the backlog until Hypercorn accepts
            listener = _Listener(sock.getsockname()[1], certificate)
            config = self._config(sock, certificate)
            listener.task = asyncio.create_task(serve(self, config, shutdown_trigger=self._shutdown.wait))
            self._listeners.append(listener)
        self.url = f"https://127.0.0.1:{self._listeners[0].port}"
        self.cert_url = f"https://127.0.0.1:{self._listeners[1].port}"
        return self.url

    async def stop(self) -> None:
        self._shutdown.set()
        tasks = [listener.task for listener in self._listeners if listener.task is not None]
        self._listeners.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._dir.cleanup()

    # -- the API

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        more = True
        while more and len(body) <= MAX_BODY:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        certificate = any(lst.port == scope["server"][1] and lst.certificate for lst in self._listeners)
        apns_id = (headers.get("apns-id") or [str(uuid.uuid4())])[0]
        status, doc, raw, extra = self._answer(scope, headers, bytes(body), certificate, apns_id)
        response_headers = [(b"apns-id", apns_id.encode())] + [(k.encode(), v.encode()) for k, v in extra.items()]
        if raw is None and doc is not None:
            raw = json.dumps(doc).encode()
            response_headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": raw or b""})

    def _answer(
        self, scope: Scope, headers: dict[str, list[str]], body: bytes, certificate: bool, apns_id: str
    ) -> tuple[int, dict[str, Any] | None, bytes | None, dict[str, str]]:
        """(status, JSON answer, raw answer, extra headers) for one request."""
        self.requests += 1

        def error(status: int, reason: str, **more: Any) -> tuple[int, dict[str, Any], None, dict[str, str]]:
            return status, {"reason": reason, **more}, None, {}

        if scope["method"] != "POST":
            return error(405, "MethodNotAllowed")
        path = _PATH.fullmatch(scope["path"])
        if path is None:
            return error(404, "BadPath")
        token = path.group(1)
        if self._failures:
            f = self._failures.popleft()
            extra = {"retry-after": f"{f.retry_after:g}"} if f.retry_after is not None else {}
            if f.body is not None:
                return f.status, None, f.body, extra
            return f.status, {"reason": f.reason}, None, extra
        if not token:
            return error(400, "MissingDeviceToken")
        if any(len(v) > 1 for k, v in headers.items() if k.startswith("apns-") or k == "authorization"):
            return error(400, "DuplicateHeaders")
        one = {k: v[0] for k, v in headers.items()}

        if certificate:  # TLS already required a certificate from the provider CA
            if self.revoked:
                return error(403, "BadCertificate")
        else:
            if self.revoked:
                return error(403, "InvalidProviderToken")
            refused = self._check_provider_token(one.get("authorization"), scope.get("client") or ("", 0))
            if refused is not None:
                return error(429 if refused == "TooManyProviderTokenUpdates" else 403, refused)

        topic = one.get("apns-topic")
        if not topic:
            return error(400, "MissingTopic")
        if not _TOPIC.fullmatch(topic):
            return error(400, "BadTopic")
        if topic not in self.topics:
            return error(400, "TopicDisallowed")
        push_type = one.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return error(400, "InvalidPushType")
        priority = one.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority == "10"):
            return error(400, "BadPriority")
        if not one.get("apns-expiration", "0").isdigit():
            return error(400, "BadExpirationDate")
        if "apns-id" in one and not _UUID.fullmatch(one["apns-id"]):
            return error(400, "BadMessageId")
        if len(one.get("apns-collapse-id", "").encode("latin-1")) > 64:
            return error(400, "BadCollapseId")
        if not _HEX.fullmatch(token):
            return error(400, "BadDeviceToken")

        if not body:
            return error(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD:
            return error(413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return error(400, "PayloadEmpty")

        if token in self.token_answers:
            return error(*self.token_answers[token])
        if token in self.bad:
            return error(400, "BadDeviceToken")
        if token in self.not_for_topic:
            return error(400, "DeviceTokenNotForTopic")
        if token in self.unregistered:
            return error(410, "Unregistered", timestamp=self.unregistered[token])
        if self.per_token_limit is not None and self._too_many(token):
            return error(429, "TooManyRequests")

        sent = {k: v for k, v in one.items() if k.startswith("apns-") or k == "authorization"}
        peer = "{}:{}".format(*(scope.get("client") or ("", 0)))
        self.accepted.append(Accepted(token, sent, payload, apns_id, certificate, scope["http_version"], peer))
        return 200, None, b"", {}

    def _too_many(self, token: str) -> bool:
        now = time.monotonic()
        hits = self._token_hits.setdefault(token, deque())
        while hits and hits[0] < now - 1.0:
            hits.popleft()
        hits.append(now)
        return self.per_token_limit is not None and len(hits) > self.per_token_limit

    def _verify(self, token: str) -> int | None:
        """The token's iat when its header, claims and ES256 signature are good (checked once per token)."""
        head, claims_part, signature_part = token.split(".")
        try:
            header = json.loads(_b64url_decode(head))
            claims = json.loads(_b64url_decode(claims_part))
            signature = _b64url_decode(signature_part)
        except ValueError:
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "ES256":
            return None
        team_key = self.keys.get(str(header.get("kid")))
        if team_key is None or claims.get("iss") != team_key[0] or len(signature) != 64:
            return None
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            team_key[1].verify(encode_dss_signature(r, s), f"{head}.{claims_part}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return None
        iat = claims.get("iat")
        return iat if isinstance(iat, int) and not isinstance(iat, bool) else None

    def _check_provider_token(self, authorization: str | None, client: tuple[str, int]) -> str | None:
        """Apple's reason for refusing the provider token, or None when it is good."""
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return "InvalidProviderToken"
        iat = self._verified.get(token)
        if iat is None:
            iat = self._verify(token)
            if iat is None:
                return "InvalidProviderToken"
            self._verified[token] = iat
        now = time.time()
        if iat > now + 60:
            return "InvalidProviderToken"
        if now - iat > TOKEN_MAX_AGE or token in self._expired:
            return "ExpiredProviderToken"
        if token not in self.provider_tokens:
            self.provider_tokens.append(token)
        last = self._connection_tokens.get(client)
        if last is not None and last[0] != token:
            if last[0] not in self._expired and time.monotonic() - last[1] < self.token_update_interval:
                return "TooManyProviderTokenUpdates"
        if last is None or last[0] != token:
            self._connection_tokens[client] = (token, time.monotonic())
        return None


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert-port", type=int, default=0)
    args = parser.parse_args()
    server = ApnsServer()
    await server.start(args.port, args.cert_port)
    key_file = Path(server.ca_file).with_name("AuthKey.p8")
    key_file.write_bytes(server.auth_key)
    info = {
        "url": server.url,
        "certUrl": server.cert_url,
        "caFile": server.ca_file,
        "authKeyFile": str(key_file),
        "teamId": server.team_id,
        "keyId": server.key_id,
        "topic": TOPIC,
    }
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
