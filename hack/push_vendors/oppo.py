"""A local OPPO Push server: `POST /server/v1/auth` (the sha256 sign recomputed with the MasterSecret, the
timestamp within 10 minutes), auth tokens that expire, and `/server/v1/message/notification/unicast` and
`/unicast_batch`, answering with OPPO's codes (see components/mpaas/push/vendors/oppo.py for the sources):
14/15/16/17/18/19 for bad auth calls, 29/11 for a missing or invalid (expired, unknown, revoked) auth token,
40/41 for missing or invalid arguments (title at most 50 characters, content 200), 10000 for a registration id
that is malformed or unregistered, 33 once the day's quota (China time) is used up. A unicast whose
`app_message_id` was already pushed to that target is answered as sent and not pushed again, as OPPO does.
Tests inject HTTP failures, 429s and raw answers for the next message requests.

Receipts, as OPPO's 消息回执: for each target newly pushed whose notification has `call_back_url`, a POST to that
URL after the answer, application/json, an array (one per URL and request, as OPPO merges receipts for a URL) of
`{"messageId", "appId": <AppKey>, "taskId": <messageId, as for a unicast>, "registrationIds", "eventTime": "<ms>",
"param": <call_back_parameter>, "eventType": "push_arrive"}`; a registration id marked `expire_later` gets
eventType "regid_invalid" instead.

Run alone: `python hack/push_vendors/oppo.py --port 8082 [--app-key K] [--master-secret S] [--quota N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if not __package__:  # run as a script: make the push_vendors package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from push_vendors.common import AsgiServer, ReceiptPoster, ServedWithReceipts, china_day, epoch_ms, parse_form

MAX_TITLE, MAX_CONTENT, MAX_BATCH = 50, 200, 1000
CLOCK_SKEW_MS = 10 * 60 * 1000
# opush-server-sdk's Validate: [prefix_[region_]]32 hex digits, or a 24-hex object id
REGISTRATION_ID = re.compile(r"((([0-9A-Za-z]{2,10})_)?(.*)_)?[0-9a-fA-F]{32}|[0-9a-fA-F]{24}")


@dataclass
class Accepted:
    token: str
    message: dict[str, Any]  # the notification as it arrived


def _answer(code: int, message: str, data: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **({"data": data} if data is not None else {})})


class OppoServer(ServedWithReceipts):
    """OPPO Push for one app: its AppKey and MasterSecret. `quota` is the messages a (China) day allows, None for
    no limit; `token_lifetime` the seconds an auth token lives. `accepted` holds every message pushed; `receipts`
    posts the call_back_url receipts."""

    def __init__(
        self,
        app_key: str = "local-app-key",
        master_secret: str = "local-master-secret",
        *,
        quota: int | None = None,
        token_lifetime: float = 86400.0,
    ):
        self.app_key, self.master_secret = app_key, master_secret
        self.quota, self.token_lifetime = quota, token_lifetime
        self.accepted: list[Accepted] = []
        self.requests: list[str] = []  # paths of every request, in order
        self.unregistered: set[str] = set()
        self.revoked = False
        self._tokens: dict[str, float] = {}  # auth token -> expires at (time.monotonic)
        self._pushed: set[tuple[str, str]] = set()  # (app_message_id, registration id)
        self._day = ""
        self._sent_today = 0
        self._inject: list[Response] = []
        self.receipts = ReceiptPoster()
        self.expiring: set[str] = set()
        app = Starlette(
            routes=[
                Route("/server/v1/auth", self._auth, methods=["POST"]),
                Route("/server/v1/message/notification/unicast", self._unicast, methods=["POST"]),
                Route("/server/v1/message/notification/unicast_batch", self._batch, methods=["POST"]),
            ]
        )
        self._server = AsgiServer(app)

    # --- what tests change ------------------------------------------------------

    def revoke(self) -> None:
        """The MasterSecret is reset: signs made with the old one fail (16) and issued tokens die (11)."""
        self.revoked = True
        self._tokens.clear()

    def expire_tokens(self) -> None:
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    def unregister(self, *registration_ids: str) -> None:
        self.unregistered.update(registration_ids)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        self._inject += [Response("Service Unavailable", status, media_type="text/plain") for _ in range(n)]

    def rate_limit_next(self, n: int = 1, retry_after: int = 7) -> None:
        self._inject += [
            Response("Too Many Requests", 429, {"Retry-After": str(retry_after)}, media_type="text/plain")
            for _ in range(n)
        ]

    def answer_next(self, body: bytes, status: int = 200, content_type: str = "application/json") -> None:
        self._inject.append(Response(body, status, media_type=content_type))

    def set_sent_today(self, count: int) -> None:
        self._today()
        self._sent_today = count

    # --- the protocol -----------------------------------------------------------

    def _today(self) -> None:
        day = china_day()
        if day != self._day:
            self._day, self._sent_today = day, 0

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        return parse_form(await request.body())

    async def _auth(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        form = await self._form(request)
        app_key, sign, timestamp = form.get("app_key"), form.get("sign"), form.get("timestamp")
        if not app_key:
            return _answer(15, "Missing App Key")
        if app_key != self.app_key:
            return _answer(14, "Invalid App Key")
        if not sign:
            return _answer(17, "Missing Signature")
        if not timestamp:
            return _answer(18, "Missing Timestamp")
        if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > CLOCK_SKEW_MS:
            return _answer(19, "Invalid Timestamp")
        expected = hashlib.sha256(f"{app_key}{timestamp}{self.master_secret}".encode()).hexdigest()
        if self.revoked or not hmac.compare_digest(expected, sign.lower()):
            return _answer(16, "Invalid Signature")
        token = uuid.uuid4().hex
        self._tokens[token] = time.monotonic() + self.token_lifetime
        return _answer(0, "Success", {"auth_token": token, "create_time": int(time.time() * 1000)})

    def _token_error(self, form: dict[str, str]) -> Response | None:
        token = form.get("auth_token")
        if not token:
            return _answer(29, "Missing Auth Token")
        if self._tokens.get(token, 0.0) <= time.monotonic():
            return _answer(11, "Invalid AuthToken")
        return None

    @staticmethod
    def _invalid(message: Any) -> Response | None:
        """OPPO's answer to a malformed message, or None."""
        if not isinstance(message, dict) or message.get("target_type") != 2 or not message.get("target_value"):
            return _answer(40, "Missing Required Arguments")
        n = message.get("notification")
        if not isinstance(n, dict) or not n.get("title") or not n.get("content"):
            return _answer(40, "Missing Required Arguments")
        if len(str(n["title"])) > MAX_TITLE or len(str(n["content"])) > MAX_CONTENT:
            return _answer(41, "Invalid Arguments")
        ttl = n.get("off_line_ttl")
        if ttl is not None and (not isinstance(ttl, int) or not 0 <= ttl <= 864000):
            return _answer(41, "Invalid Arguments")
        return None

    def _push(self, message: dict[str, Any], pushed: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
        """One target's entry: pushed (or already pushed with that app_message_id), or refused. What is newly
        pushed goes to `pushed` as (messageId, target, notification), for its receipt."""
        target = str(message["target_value"])
        if target in self.unregistered or not REGISTRATION_ID.fullmatch(target):
            return {"registrationId": target, "errorCode": 10000, "errorMessage": "Invalid Registration_id"}
        n = message["notification"]
        key = (str(n.get("app_message_id") or uuid.uuid4().hex), target)
        message_id = f"{self.app_key}-1-1-{uuid.uuid4().hex[:24]}"
        if key not in self._pushed:
            self._pushed.add(key)
            self._sent_today += 1
            self.accepted.append(Accepted(target, n))
            pushed.append((message_id, target, n))
        return {"registrationId": target, "messageId": message_id}

    def _post_receipts(self, pushed: list[tuple[str, str, dict[str, Any]]]) -> None:
        now = str(epoch_ms())
        by_url: dict[str, list[dict[str, Any]]] = {}
        for message_id, target, n in pushed:
            url = n.get("call_back_url")
            if not isinstance(url, str) or not url:
                continue
            by_url.setdefault(url, []).append(
                {
                    "messageId": message_id,
                    "appId": self.app_key,
                    "taskId": message_id,  # a unicast's task is its message
                    "registrationIds": target,
                    "eventTime": now,
                    "param": n.get("call_back_parameter") or "",
                    "eventType": "regid_invalid" if target in self.expiring else "push_arrive",
                }
            )
        for url, receipts in by_url.items():
            self.receipts.post_json(url, receipts)

    def _preflight(self, request: Request, form: dict[str, str]) -> Response | None:
        self.requests.append(request.url.path)
        if self._inject:
            return self._inject.pop(0)
        refused = self._token_error(form)
        if refused is not None:
            return refused
        self._today()
        if self.quota is not None and self._sent_today >= self.quota:
            return _answer(33, "The number of messages exceeds the daily limit")
        return None

    async def _unicast(self, request: Request) -> Response:
        form = await self._form(request)
        refused = self._preflight(request, form)
        if refused is not None:
            return refused
        try:
            message = json.loads(form.get("message") or "null")
        except ValueError:
            return _answer(41, "Invalid Arguments")
        invalid = self._invalid(message)
        if invalid is not None:
            return invalid
        pushed: list[tuple[str, str, dict[str, Any]]] = []
        entry = self._push(message, pushed)
        if "errorCode" in entry:
            return _answer(entry["errorCode"], entry["errorMessage"])
        self._post_receipts(pushed)
        return _answer(0, "Success", {"messageId": entry["messageId"]})

    async def _batch(self, request: Request) -> Response:
        form = await self._form(request)
        refused = self._preflight(request, form)
        if refused is not None:
            return refused
        try:
            messages = json.loads(form.get("messages") or "null")
        except ValueError:
            return _answer(41, "Invalid Arguments")
        if not isinstance(messages, list) or not messages:
            return _answer(40, "Missing Required Arguments")
        if len(messages) > MAX_BATCH:
            return _answer(41, "Invalid Arguments")
        for message in messages:
            invalid = self._invalid(message)
            if invalid is not None:
                return invalid
        pushed: list[tuple[str, str, dict[str, Any]]] = []
        entries = [self._push(m, pushed) for m in messages]
        self._post_receipts(pushed)
        return _answer(0, "Success", entries)


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--app-key", default="local-app-key")
    parser.add_argument("--master-secret", default="local-master-secret")
    parser.add_argument("--quota", type=int, default=None)
    args = parser.parse_args()
    server = OppoServer(args.app_key, args.master_secret, quota=args.quota)
    print(await server.start(args.port), flush=True)
    try:
        await server.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
