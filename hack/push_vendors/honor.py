"""A local Honor Push server: Honor IAM's client-credentials token endpoint (a Keycloak realm, also reachable as
/auth/token) and /api/v1/{appId}/sendMessage.

What Honor documents is served as documented: the token form and answer, the send URL, the `timestamp` header,
the body without a "message" wrapper, and the answer {"code": 200, "message", "data": {"sendResult",
"requestId", "failTokens", "expireTokens"}}. Honor's error-code table was not found; errors use Huawei Push
Kit's codes (80200001 unknown access token, 80200003 expired, 80100001/80100003 bad request, 80300007 all
tokens invalid, 80300008 too large, 80300010 too many tokens, 81000001 internal), as integers like Honor's
code, which is the closest documented contract.

Receipts: Honor's receipt address is set on its developer console, not in the message, so here it is
`receipt_url` (or --receipt-url). When set, every accepted send is followed by POSTs to it, application/json, in
the Huawei V1 shape `{"statuses": [{"biTag": <android.biTag>, "appid", "token", "status": 0, "timestamp": <ms>,
"requestId": <data.requestId answered>}, ...]}`, one status per accepted token, at most 100 a POST; a token
marked `expire_later` gets status 2 (app uninstalled) instead of 0 (delivered).

`python hack/push_vendors/honor.py --port N [--client ID:SECRET:APPID] [--receipt-url URL]` runs it on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if not __package__:  # run as a script: make the push_vendors package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from push_vendors.common import AsgiServer, ReceiptPoster, ServedWithReceipts, post_v1_receipts, read_form

TOKEN_PATHS = ("/auth/realms/developer/protocol/openid-connect/token", "/auth/token")
MAX_PAYLOAD = 4096
MAX_TOKENS = 1000
MAX_TTL = 15 * 86400
TTL = re.compile(r"^\d+(\.\d{1,9})?[sS]?$")
MESSAGES = {
    200: "success",
    80100001: "Some parameters are incorrect",
    80100003: "Incorrect message structure",
    80200001: "Oauth authentication error",
    80200003: "Oauth Token expired",
    80300007: "All the tokens are invalid",
    80300008: "The message body size exceeds the default value",
    80300010: "The number of tokens in the message body exceeds the default value",
    81000001: "Internal system error",
}


@dataclass
class Client:
    secret: str
    app_id: str


@dataclass
class Accepted:
    tokens: list[str]  # the tokens it went to (expired ones left out)
    body: dict[str, Any]  # the request body as it arrived
    timestamp: str


@dataclass
class HonorServer(ServedWithReceipts):
    """The Honor Push server for tests: `clients` maps client id -> (secret, app id). With `receipt_url` set,
    `receipts` posts a receipt for every accepted token there."""

    clients: dict[str, Client]
    token_lifetime: float = 3600.0
    accepted: list[Accepted] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)  # device tokens Honor reports in expireTokens
    failing: set[str] = field(default_factory=set)  # device tokens Honor reports in failTokens
    token_requests: int = 0
    send_requests: int = 0
    receipt_url: str | None = None  # the console's receipt address
    expiring: set[str] = field(default_factory=set)  # accepted, then reported uninstalled by the receipt

    def __post_init__(self) -> None:
        self.receipts = ReceiptPoster()
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (client id, expires at)
        self._inject: list[tuple[int, bytes, dict[str, str]]] = []
        self._ids = itertools.count(1)
        routes = [Route(p, self._token, methods=["POST"]) for p in TOKEN_PATHS]
        routes.append(Route("/api/v1/{app}/sendMessage", self._send, methods=["POST"]))
        self._server = AsgiServer(Starlette(routes=routes))

    # what tests change

    def unregister(self, token: str) -> None:
        self.expired.add(token)

    def revoke(self, client_id: str | None = None) -> None:
        """The client secret is reset: no new tokens, and the issued ones are refused."""
        for cid in [client_id] if client_id else list(self.clients):
            self.clients[cid].secret = secrets.token_hex(16)
            self._access = {a: v for a, v in self._access.items() if v[0] != cid}

    def expire_tokens(self) -> None:
        self._access = {a: (cid, 0.0) for a, (cid, _) in self._access.items()}

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        body = json.dumps({"code": 81000001, "message": MESSAGES[81000001], "data": None}).encode()
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self._inject += [(status, body, headers)] * n

    def answer_next(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._inject.append((status, body, headers or {}))

    # the protocol

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await read_form(request)
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")
        client = self.clients.get(form.get("client_id", ""))
        secret = form.get("client_secret", "")
        if client is None or not secrets.compare_digest(secret.encode(), client.secret.encode()):
            return _oauth_error(401, "invalid_client", "Invalid client or Invalid client credentials")
        access = secrets.token_urlsafe(48)
        self._access[access] = (form["client_id"], time.time() + self.token_lifetime)
        lifetime = max(int(self.token_lifetime), 1)
        return JSONResponse({"access_token": access, "expires_in": lifetime, "token_type": "Bearer", "scope": ""})

    async def _send(self, request: Request) -> Response:
        self.send_requests += 1
        if self._inject:
            status, raw, headers = self._inject.pop(0)
            return Response(raw, status, headers=headers, media_type="application/json")
        auth = request.headers.get("authorization", "")
        owner = self._access.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if owner is None or self.clients[owner[0]].app_id != request.path_params["app"]:
            return _answer(80200001, 401)
        if owner[1] <= time.time():
            return _answer(80200003, 401)
        timestamp = request.headers.get("timestamp", "")
        if not timestamp.isdigit():
            return _answer(80100001, 400, "timestamp header is missing or not a number")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _answer(80100003, 400)
        if not isinstance(body, dict):
            return _answer(80100003, 400)
        code, msg = _validate(body)
        if code:
            return _answer(code, 400, msg)
        tokens: list[str] = body["token"]
        expired = [t for t in tokens if t in self.expired]
        failed = [t for t in tokens if t in self.failing and t not in expired]
        if len(expired) == len(tokens):
            return _answer(80300007, 400)
        good = [t for t in tokens if t not in expired and t not in failed]
        self.accepted.append(Accepted(good, body, timestamp))
        request_id = f"{int(time.time() * 1000)}{next(self._ids):06d}"
        data = {"sendResult": True, "requestId": request_id, "failTokens": failed, "expireTokens": expired}
        self._post_receipts(request.path_params["app"], body, good, request_id)
        return JSONResponse({"code": 200, "message": MESSAGES[200], "data": data})

    def _post_receipts(self, app: str, body: dict[str, Any], tokens: list[str], request_id: str) -> None:
        if self.receipt_url:
            bi_tag = body.get("android", {}).get("biTag") or ""
            post_v1_receipts(self.receipts, self.receipt_url, app, bi_tag, tokens, self.expiring, request_id)


def _validate(body: dict[str, Any]) -> tuple[int, str | None]:
    tokens = body.get("token")
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        return 80100003, "token must be an array of strings"
    if not 1 <= len(tokens) <= MAX_TOKENS:
        return 80300010, None
    if "data" in body and not isinstance(body["data"], str):
        return 80100003, "data must be a string"
    android = body.get("android", {})
    if not isinstance(android, dict):
        return 80100003, "android must be an object"
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not TTL.match(ttl) or float(ttl.rstrip("sS")) > MAX_TTL):
        return 80100001, f"ttl is invalid: {ttl!r}"
    notification = android.get("notification")
    if notification is not None:
        click = notification.get("clickAction") if isinstance(notification, dict) else None
        if not isinstance(click, dict) or click.get("type") not in (1, 2, 3):
            return 80100001, "clickAction must be set on a notification message"
    if "notification" not in body and notification is None and "data" not in body:
        return 80100003, "the message has neither a notification nor data"
    size = len(json.dumps({k: v for k, v in body.items() if k != "token"}, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD:
        return 80300008, None
    return 0, None


def _answer(code: int, status: int, message: str | None = None) -> Response:
    return JSONResponse({"code": code, "message": message or MESSAGES.get(code, str(code)), "data": None}, status)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="local Honor Push server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client", action="append", default=[], help="CLIENT_ID:SECRET:APP_ID (repeatable)")
    parser.add_argument("--receipt-url", default=None, help="where to post delivery receipts (the console setting)")
    args = parser.parse_args()
    clients = {c.split(":")[0]: Client(*c.split(":")[1:3]) for c in args.client}
    if not clients:
        clients = {"client-1": Client(secrets.token_hex(16), "104400001")}
    server = HonorServer(clients, receipt_url=args.receipt_url)
    url = await server.start(args.port)
    print(url, flush=True)
    print(json.dumps({cid: {"secret": c.secret, "appId": c.app_id} for cid, c in clients.items()}), flush=True)
    try:
        await server.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        sys.exit(0)
