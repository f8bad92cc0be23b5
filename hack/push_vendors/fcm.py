"""A local Firebase Cloud Messaging HTTP v1 server: Google's OAuth token endpoint for service accounts and
messages:send, with Google's error answers.

Token endpoint (the path of the service account's token_uri, default /token): verifies the RS256 JWT assertion
with the account's public key (iss known, aud the token_uri, scope firebase.messaging, exp in the future and at
most an hour after iat) and issues access tokens that expire after `token_lifetime` seconds; refusals are
RFC 6749 {"error": "invalid_grant", ...} as Google answers them.

messages:send: refuses unknown or expired access tokens with 401 UNAUTHENTICATED, validates like FCM (one
target, a token that looks like one, string data values, no reserved data keys, ttl a Duration, priority,
4096 bytes), and answers google.rpc.Status errors with the FcmError detail for tokens the test marks.

`python hack/push_vendors/fcm.py --port N [--service-account FILE]` runs it on 127.0.0.1; without a file it
makes a service account and prints its JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if not __package__:  # run as a script: make the push_vendors package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from push_vendors.common import AsgiServer, Served, read_form

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_PAYLOAD = 4096
TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
MAX_TTL = 28 * 86400
RESERVED_DATA = ("from", "notification", "message_type")
RESERVED_PREFIXES = ("google", "gcm")

# FCM errorCode -> (HTTP status, google.rpc status), as FCM's error reference lists them
ERRORS = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}
MESSAGES = {
    "UNREGISTERED": "Requested entity was not found.",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Send requests'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
}


def make_service_account(
    project_id: str = "mpaas-test", token_uri: str = "https://oauth2.googleapis.com/token"
) -> dict[str, str]:
    """A service-account JSON like the one Firebase gives, with a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class Accepted:
    token: str
    message: dict[str, Any]  # the message as it arrived, token included
    authorization: str


@dataclass
class FcmServer(Served):
    """The FCM server for tests: `accounts` are the service accounts it knows (their JSON; only the public key
    is used), `token_uri` the audience the assertions must carry."""

    accounts: list[dict[str, str]]
    token_uri: str = "https://oauth2.googleapis.com/token"
    token_lifetime: float = 3600.0
    accepted: list[Accepted] = field(default_factory=list)
    token_errors: dict[str, str] = field(default_factory=dict)  # device token -> FCM errorCode to answer
    token_requests: int = 0
    send_requests: int = 0
    send_delay: float = 0.0  # seconds each accepted send takes, to see how many a client keeps in flight
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._in_flight = 0
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._projects: set[str] = set()
        for account in self.accounts:
            self.add_account(account)
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (client_email, expires at)
        self._inject: list[tuple[int, bytes, dict[str, str]]] = []  # raw answers for the next send requests
        self._ids = itertools.count(1)
        self._server = AsgiServer(
            Starlette(
                routes=[
                    Route(urlsplit(self.token_uri).path or "/token", self._token, methods=["POST"]),
                    Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
                ]
            )
        )

    def add_account(self, account: dict[str, str]) -> None:
        key = serialization.load_pem_private_key(account["private_key"].encode(), password=None).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        self._keys[account["client_email"]] = key
        self._projects.add(account["project_id"])

    # what tests change

    def unregister(self, token: str) -> None:
        self.token_errors[token] = "UNREGISTERED"

    def fail_token(self, token: str, error_code: str) -> None:
        self.token_errors[token] = error_code

    def revoke(self, client_email: str | None = None) -> None:
        """The key is deleted: no new access tokens, and the issued ones stop working."""
        for email in [client_email] if client_email else list(self._keys):
            self._keys.pop(email, None)
            for access, (owner, _) in list(self._access.items()):
                if owner == email:
                    del self._access[access]

    def expire_tokens(self) -> None:
        self._access = {a: (owner, 0.0) for a, (owner, _) in self._access.items()}

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        code = {429: "QUOTA_EXCEEDED", 500: "INTERNAL"}.get(status, "UNAVAILABLE")
        body = _status_body(status, ERRORS[code][1], MESSAGES[code], code)
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self._inject += [(status, body, headers)] * n

    def answer_next(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """The next send request gets exactly this answer (hostile answers)."""
        self._inject.append((status, body, headers or {}))

    # the protocol

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await read_form(request)
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        assertion = form.get("assertion")
        if not assertion:
            return _oauth_error("invalid_request", "Missing required parameter: assertion")
        claims = self._verify(assertion)
        if isinstance(claims, str):
            return _oauth_error("invalid_grant", claims)
        access = "ya29." + secrets.token_urlsafe(48)
        self._access[access] = (claims["iss"], time.time() + self.token_lifetime)
        return JSONResponse(
            {"access_token": access, "expires_in": max(int(self.token_lifetime), 1), "token_type": "Bearer"}
        )

    def _verify(self, assertion: str) -> dict[str, Any] | str:
        """The claims of a good assertion, or Google's error_description."""
        try:
            head_b64, claims_b64, sig_b64 = assertion.split(".")
            header, claims = json.loads(_b64decode(head_b64)), json.loads(_b64decode(claims_b64))
            signature = _b64decode(sig_b64)
        except (ValueError, binascii.Error):
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            return "Invalid JWT: unsupported algorithm"
        key = self._keys.get(str(claims.get("iss")))
        if key is None:
            return "Invalid JWT Signature."
        try:
            key.verify(signature, f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        if claims.get("aud") != self.token_uri:
            return "Invalid JWT: Failed audience check."
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid OAuth scope or ID token audience provided."
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp <= now or exp - iat > 3600 or iat > now + 300:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        return claims

    async def _send(self, request: Request) -> Response:
        self.send_requests += 1
        if self._inject:
            status, body, headers = self._inject.pop(0)
            return Response(body, status, headers=headers, media_type="application/json")
        auth = request.headers.get("authorization", "")
        owner = self._access.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if owner is None or owner[1] <= time.time():
            return _error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential.",
            )
        if request.path_params["project"] not in self._projects:
            return _error(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied")
        try:
            doc = json.loads(await request.body())
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        message = doc.get("message") if isinstance(doc, dict) else None
        if not isinstance(message, dict):
            return _error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT")
        invalid = _validate(message)
        if invalid:
            return _error(400, "INVALID_ARGUMENT", invalid, "INVALID_ARGUMENT")
        token = message["token"]
        code = self.token_errors.get(token)
        if code == "INVALID_ARGUMENT":
            return _token_invalid()
        if code:
            status, rpc_status = ERRORS[code]
            return _error(status, rpc_status, MESSAGES.get(code, code), code)
        self.accepted.append(Accepted(token, message, auth))
        if self.send_delay:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                await asyncio.sleep(self.send_delay)
            finally:
                self._in_flight -= 1
        return JSONResponse({"name": f"projects/{request.path_params['project']}/messages/0:{next(self._ids)}"})


def _validate(message: dict[str, Any]) -> str:
    """FCM's INVALID_ARGUMENT message for a bad message, or ''."""
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if len(targets) != 1:
        return "Request contains an invalid argument."
    if "token" in targets and (not isinstance(message["token"], str) or not message["token"].strip()):
        return "The registration token is not a valid FCM registration token"
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "Invalid value at 'message.data'"
    for i, (k, v) in enumerate(data.items()):
        if not isinstance(v, str):
            return f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(v)}"
        if k in RESERVED_DATA or k.lower().startswith(RESERVED_PREFIXES):
            return f"Invalid data payload key: {k}"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "Invalid value at 'message.android'"
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not TTL.match(ttl) or float(ttl[:-1]) > MAX_TTL):
        return f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {ttl!r}"
    if android.get("priority") not in (None, "HIGH", "NORMAL"):
        return f"Invalid value at 'message.android.priority', {android.get('priority')!r}"
    size = len(json.dumps({k: v for k, v in message.items() if k != "token"}, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD:
        return "Android message is too big"
    return ""


def _status_body(status: int, rpc_status: str, message: str, code: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return json.dumps({"error": error}).encode()


def _error(status: int, rpc_status: str, message: str, code: str | None = None) -> Response:
    return Response(_status_body(status, rpc_status, message, code), status, media_type="application/json")


def _token_invalid() -> Response:
    body = {
        "error": {
            "code": 400,
            "message": "The registration token is not a valid FCM registration token",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"},
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
                },
            ],
        }
    }
    return JSONResponse(body, 400)


def _oauth_error(error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, 400)


async def _serve(account: dict[str, str], port: int, show_account: bool) -> None:
    server = FcmServer([account], token_uri=account.get("token_uri", "https://oauth2.googleapis.com/token"))
    print(await server.start(port), flush=True)
    if show_account:
        print(json.dumps(account), flush=True)
    try:
        await server.wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="local FCM HTTP v1 server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--service-account", help="service-account JSON file it accepts (default: a new one)")
    args = parser.parse_args()
    if args.service_account:
        with open(args.service_account) as f:
            account = json.load(f)
    else:
        account = make_service_account()
    try:
        asyncio.run(_serve(account, args.port, not args.service_account))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
