"""A local Huawei Push Kit server: the OAuth 2.0 client-credentials endpoint (/oauth2/v3/token) and
/v1/{appId}/messages:send, with Push Kit's result codes.

Token endpoint: checks client_id/client_secret against the apps it was started with and issues access tokens
that expire after `token_lifetime` seconds; refusals are {"error": 1101, "sub_error": ..., "error_description"}.

messages:send: 80200001 for a missing, unknown or other app's access token, 80200003 for an expired one (HTTP
401); checks the message like Push Kit (one of token/topic/condition, 1-1000 tokens, data a string, ttl,
urgency, collapse_key -1..100, click_action on notifications, 4096 bytes without the tokens) and answers
80000000, 80100000 with the illegal tokens, or 80300007 when every token is bad. Tests inject flow control
(HTTP 503/429 + Retry-After), internal errors and raw answers.

Receipts: Huawei takes the receipt URL from the AppGallery Connect console, not from the message, so here it is
`receipt_url` (or --receipt-url). When set, every accepted send (not validate_only) is followed by POSTs of V1
receipts to it, application/json, `{"statuses": [{"biTag": <android.bi_tag>, "appid", "token", "status": 0,
"timestamp": <ms>, "requestId": <the requestId answered>}, ...]}`, one status per accepted token, at most 100 a
POST; a token marked `expire_later` gets status 2 (app uninstalled) instead of 0 (delivered).

`python hack/push_vendors/huawei.py --port N [--app ID:SECRET] [--receipt-url URL]` runs it on 127.0.0.1.
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

MAX_PAYLOAD = 4096
MAX_TOKENS = 1000
MAX_TTL = 15 * 86400
TTL = re.compile(r"^\d+(\.\d{1,9})?[sS]?$")

MESSAGES = {
    "80000000": "Success",
    "80100000": "Some tokens are right, the others are illegal",
    "80100001": "Some parameters are incorrect",
    "80100003": "Incorrect message structure",
    "80100013": "The collapse_key message field is invalid",
    "80200001": "Oauth authentication error",
    "80200003": "Oauth Token expired",
    "80300007": "All the tokens are invalid",
    "80300008": "The message body size exceeds the default value",
    "80300010": "The number of tokens in the message body exceeds the default value",
    "81000001": "Internal system error",
}


@dataclass
class Accepted:
    tokens: list[str]  # the tokens it went to (illegal ones left out)
    message: dict[str, Any]  # the message as it arrived, token list included
    validate_only: bool


@dataclass
class HuaweiServer(ServedWithReceipts):
    """The Push Kit server for tests: `apps` maps app id -> app secret. With `receipt_url` set, `receipts` posts
    a receipt for every accepted token there."""

    apps: dict[str, str]
    token_lifetime: float = 3600.0
    accepted: list[Accepted] = field(default_factory=list)
    illegal: set[str] = field(default_factory=set)  # tokens Push Kit calls illegal (uninstalled, other app's)
    token_requests: int = 0
    send_requests: int = 0
    receipt_url: str | None = None  # the console's receipt address
    expiring: set[str] = field(default_factory=set)  # accepted, then reported uninstalled by the receipt

    def __post_init__(self) -> None:
        self.receipts = ReceiptPoster()
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (app id, expires at)
        self._inject: list[tuple[int, bytes, dict[str, str]]] = []
        self._ids = itertools.count(1)
        self._server = AsgiServer(
            Starlette(
                routes=[
                    Route("/oauth2/v3/token", self._token, methods=["POST"]),
                    Route("/v1/{app}/messages:send", self._send, methods=["POST"]),
                ]
            )
        )

    # what tests change

    def unregister(self, token: str) -> None:
        self.illegal.add(token)

    def revoke(self, app_id: str | None = None) -> None:
        """The secret is reset: no new tokens, and the issued ones are refused (80200001)."""
        for app in [app_id] if app_id else list(self.apps):
            self.apps[app] = secrets.token_hex(16)
            self._access = {a: v for a, v in self._access.items() if v[0] != app}

    def expire_tokens(self) -> None:
        self._access = {a: (app, 0.0) for a, (app, _) in self._access.items()}

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        """Flow control (503/429) or an internal error (500, 81000001) for the next n send requests."""
        code = "81000001"
        body = json.dumps({"code": code, "msg": MESSAGES[code], "requestId": self._request_id()}).encode()
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self._inject += [(status, body, headers)] * n

    def answer_next(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._inject.append((status, body, headers or {}))

    # the protocol

    def _request_id(self) -> str:
        return f"{int(time.time() * 1000)}{next(self._ids):08d}"

    def _answer(self, code: str, status: int = 200, msg: str | None = None, request_id: str | None = None) -> Response:
        body = {"code": code, "msg": msg or MESSAGES.get(code, code), "requestId": request_id or self._request_id()}
        return JSONResponse(body, status)

    def _post_receipts(self, app: str, message: dict[str, Any], tokens: list[str], request_id: str) -> None:
        if self.receipt_url:
            bi_tag = message.get("android", {}).get("bi_tag") or ""
            post_v1_receipts(self.receipts, self.receipt_url, app, bi_tag, tokens, self.expiring, request_id)

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await read_form(request)
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(1101, 20001, "invalid grant_type")
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        if client_id not in self.apps:
            return _oauth_error(1101, 12301, "invalid client_id")
        if not secrets.compare_digest(client_secret.encode(), self.apps[client_id].encode()):
            return _oauth_error(1101, 12304, "invalid client_secret")
        access = secrets.token_urlsafe(48)
        self._access[access] = (client_id, time.time() + self.token_lifetime)
        return JSONResponse(
            {"access_token": access, "expires_in": max(int(self.token_lifetime), 1), "token_type": "Bearer"}
        )

    async def _send(self, request: Request) -> Response:
        self.send_requests += 1
        if self._inject:
            status, body, headers = self._inject.pop(0)
            return Response(body, status, headers=headers, media_type="application/json")
        app = request.path_params["app"]
        auth = request.headers.get("authorization", "")
        owner = self._access.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if owner is None or owner[0] != app:
            return self._answer("80200001", 401)
        if owner[1] <= time.time():
            return self._answer("80200003", 401)
        try:
            doc = json.loads(await request.body())
        except ValueError:
            return self._answer("80100003", 400)
        message = doc.get("message") if isinstance(doc, dict) else None
        if not isinstance(message, dict):
            return self._answer("80100003", 400)
        code, msg = _validate(message)
        if code:
            return self._answer(code, 400, msg)
        tokens: list[str] = message["token"]
        bad = [t for t in tokens if t in self.illegal or not t.strip()]
        if len(bad) == len(tokens):
            return self._answer("80300007", 400)
        good = [t for t in tokens if t not in bad]
        validate_only = bool(doc.get("validate_only"))
        self.accepted.append(Accepted(good, message, validate_only))
        request_id = self._request_id()
        if not validate_only:  # a dry run reaches no device
            self._post_receipts(app, message, good, request_id)
        if bad:
            partial = {"success": len(good), "failure": len(bad), "illegal_tokens": bad}
            return self._answer("80100000", 200, json.dumps(partial), request_id)
        return self._answer("80000000", request_id=request_id)


def _validate(message: dict[str, Any]) -> tuple[str, str | None]:
    """Push Kit's code (and msg) for a bad message, or ('', None)."""
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if len(targets) != 1:
        return "80100003", "one of token, topic and condition must be set"
    tokens = message.get("token")
    if "token" in targets:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            return "80100003", "token must be an array of strings"
        if not 1 <= len(tokens) <= MAX_TOKENS:
            return "80300010", None
    if "data" in message and not isinstance(message["data"], str):
        return "80100003", "data must be a string"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "80100003", "android must be an object"
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not TTL.match(ttl) or float(ttl.rstrip("sS")) > MAX_TTL):
        return "80100001", f"ttl is invalid: {ttl!r}"
    if android.get("urgency") not in (None, "HIGH", "NORMAL"):
        return "80100001", f"urgency is invalid: {android.get('urgency')!r}"
    collapse = android.get("collapse_key")
    if collapse is not None and (not isinstance(collapse, int) or not -1 <= collapse <= 100):
        return "80100013", None
    notification = android.get("notification")
    if notification is not None:
        click = notification.get("click_action") if isinstance(notification, dict) else None
        if not isinstance(click, dict) or click.get("type") not in (1, 2, 3, 4):
            return "80100001", "click_action must be set on a notification message"
    if "notification" not in message and notification is None and "data" not in message:
        return "80100003", "the message has neither a notification nor data"
    size = len(json.dumps({k: v for k, v in message.items() if k != "token"}, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD:
        return "80300008", None
    return "", None


def _oauth_error(error: int, sub_error: int, description: str) -> Response:
    return JSONResponse({"error": error, "sub_error": sub_error, "error_description": description}, 400)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="local Huawei Push Kit server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--app", action="append", default=[], help="APP_ID:APP_SECRET it accepts (repeatable)")
    parser.add_argument("--receipt-url", default=None, help="where to post delivery receipts (the console setting)")
    args = parser.parse_args()
    apps = dict(a.split(":", 1) for a in args.app) or {"100000001": secrets.token_hex(16)}
    server = HuaweiServer(apps, receipt_url=args.receipt_url)
    url = await server.start(args.port)
    print(url, flush=True)
    print(json.dumps({"apps": apps}), flush=True)
    try:
        await server.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        sys.exit(0)
