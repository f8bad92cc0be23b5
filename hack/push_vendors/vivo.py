"""A local vivo Push server: `POST /message/auth` (the md5 sign recomputed with the AppSecret, the timestamp within
10 minutes), authTokens that expire, `/message/send`, `/message/saveListPayload` and `/message/pushToList`,
validating as vivo's server SDK does (com.vivo.push.sdk.server.Validation, the codes of ExceptionStatusEnum) and
answering with vivo's codes (see components/mpaas/push/vendors/vivo.py for the sources): 10000 for a missing,
unknown, expired or revoked authToken, 10302 for a regId that is not 23 characters, 10055-10058 for an empty or
too long title or content, 10066/10067 for too big a clientCustomMap, 10070 once the day's quota (China time)
is used up; an unregistered regId comes back as `invalidUser` (send) or in `invalidUsers` (pushToList). A
message whose requestId was already sent is answered with the same taskId and not sent again, as vivo does.
The auth call's own codes past 10200 and 10201 (appId, appKey missing) are this server's choice: 10202 appId
unknown, 10203 appKey wrong, 10204 timestamp invalid, 10205 sign wrong (the client reads any as AuthFailed).
Tests inject HTTP failures, 429s and raw answers for the next message requests.

Receipts, as vivo's legacy receipt: when a message sent (single, or list through its saved payload) has an
`extra` object with `callback` (a URL), a POST to it after the answer, application/json, keyed by the taskId
answered: `{"<taskId>": {"targets": "<regId,...>", "ackTime": <ms>, "param": <extra["callback.param"]>,
"ackType": "0"}}` for the regIds it reached. vivo's invalid-target receipt is not documented, so regIds marked
`expire_later` are only left out of `targets`. The console-registered `extra.callback.id` receipt is not served.

Run alone: `python hack/push_vendors/vivo.py --port 8083 [--app-id N] [--app-key K] [--app-secret S] [--quota N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import sys
import time
import unicodedata
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
from push_vendors.common import AsgiServer, ReceiptPoster, ServedWithReceipts, china_day, epoch_ms

CLOCK_SKEW_MS = 10 * 60 * 1000
REGID_LENGTH = 23
MAX_TTL, MIN_TTL_SINGLE, MIN_TTL_LIST = 604800, 60, 900


@dataclass
class Accepted:
    token: str
    message: dict[str, Any]  # the message as it arrived (for a list: the saved payload)


def _answer(result: int, desc: str, **more: Any) -> JSONResponse:
    return JSONResponse({"result": result, "desc": desc, **more})


def _char_size(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _invalid(m: dict[str, Any], min_ttl: int) -> Response | None:
    """vivo's answer to a malformed message (Validation.validatePublicMessage), or None."""
    rid = m.get("requestId")
    if not isinstance(rid, str) or not rid.strip():
        return _answer(10352, "requestId 不能为空")
    if len(rid) > 64:
        return _answer(10353, "requestId 长度不能超过64个字符")
    title, content = m.get("title"), m.get("content")
    if not isinstance(title, str) or not title.strip():
        return _answer(10055, "title 不能为空")
    if _char_size(title) > 40:
        return _answer(10056, "title 长度不能超过40个字符")
    if not isinstance(content, str) or not content.strip():
        return _answer(10057, "content 不能为空")
    if _char_size(content) > 100:
        return _answer(10058, "content 长度不能超过100个字符")
    if m.get("notifyType") not in (1, 2, 3, 4):
        return _answer(10054, "notifyType 不合法")
    if m.get("skipType") not in (1, 2, 3, 4):
        return _answer(10060, "skipType 不合法")
    if m.get("networkType", -1) not in (-1, 1):
        return _answer(10065, "networkType 不合法")
    custom = m.get("clientCustomMap") or {}
    if not isinstance(custom, dict):
        return _answer(10067, "自定义key和value键值对不合法")
    if len(custom) > 10:
        return _answer(10066, "自定义key和Value键值对个数不能超过10个")
    if sum(len(str(k)) + len(str(v)) for k, v in custom.items()) > 1024:
        return _answer(10067, "自定义key和value键值对不合法")
    if m.get("classification", 0) not in (0, 1):
        return _answer(11000, "消息类型错误")
    ttl = m.get("timeToLive", 86400)
    if not isinstance(ttl, int) or (ttl != 0 and not min_ttl <= ttl <= MAX_TTL):
        return _answer(10059, "timeToLive 不合法")
    return None


class VivoServer(ServedWithReceipts):
    """vivo Push for one app: its AppID, AppKey and AppSecret. `quota` is the messages a (China) day allows, None
    for no limit; `token_lifetime` the seconds an authToken lives. `accepted` holds every message sent;
    `receipts` posts the extra.callback receipts."""

    def __init__(
        self,
        app_id: int = 10004,
        app_key: str = "local-app-key",
        app_secret: str = "local-app-secret",
        *,
        quota: int | None = None,
        token_lifetime: float = 86400.0,
    ):
        self.app_id, self.app_key, self.app_secret = app_id, app_key, app_secret
        self.quota, self.token_lifetime = quota, token_lifetime
        self.accepted: list[Accepted] = []
        self.requests: list[str] = []  # paths of every request, in order
        self.unregistered: dict[str, int] = {}  # regId -> invalidUser status (1 unknown, 2 uninstalled, ...)
        self.revoked = False
        self._tokens: dict[str, float] = {}  # authToken -> expires at (time.monotonic)
        self._payloads: dict[str, dict[str, Any]] = {}  # taskId -> saved list payload
        self._request_ids: dict[str, str] = {}  # requestId -> taskId, for dedupe
        self._task_ids = itertools.count(1_000_000)
        self._day = ""
        self._sent_today = 0
        self._inject: list[Response] = []
        self.receipts = ReceiptPoster()
        self.expiring: set[str] = set()
        app = Starlette(
            routes=[
                Route("/message/auth", self._auth, methods=["POST"]),
                Route("/message/send", self._send, methods=["POST"]),
                Route("/message/saveListPayload", self._save_list, methods=["POST"]),
                Route("/message/pushToList", self._push_to_list, methods=["POST"]),
            ]
        )
        self._server = AsgiServer(app)

    # --- what tests change ------------------------------------------------------

    def revoke(self) -> None:
        """The AppSecret is reset: signs made with the old one fail and issued tokens die (10000)."""
        self.revoked = True
        self._tokens.clear()

    def expire_tokens(self) -> None:
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    def unregister(self, *regids: str, status: int = 2) -> None:
        self.unregistered.update(dict.fromkeys(regids, status))

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
    async def _json(request: Request) -> dict[str, Any]:
        try:
            doc = json.loads(await request.body())
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    async def _auth(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        body = await self._json(request)
        app_id, app_key, timestamp, sign = (body.get(k) for k in ("appId", "appKey", "timestamp", "sign"))
        if app_id in (None, ""):
            return _answer(10200, "appId 不能为空")
        if not app_key:
            return _answer(10201, "appKey 不能为空")
        if str(app_id) != str(self.app_id):
            return _answer(10202, "appId 不存在")
        if app_key != self.app_key:
            return _answer(10203, "appKey 不正确")
        if not str(timestamp).isdigit() or abs(int(str(timestamp)) - time.time() * 1000) > CLOCK_SKEW_MS:
            return _answer(10204, "timestamp 不合法")
        expected = hashlib.md5(f"{app_id}{app_key}{timestamp}{self.app_secret}".encode()).hexdigest()
        if self.revoked or not isinstance(sign, str) or not hmac.compare_digest(expected, sign):
            return _answer(10205, "sign 不正确")
        token = uuid.uuid4().hex
        self._tokens[token] = time.monotonic() + self.token_lifetime
        return _answer(0, "请求成功", authToken=token)

    def _preflight(self, request: Request) -> Response | None:
        self.requests.append(request.url.path)
        if self._inject:
            return self._inject.pop(0)
        if self._tokens.get(request.headers.get("authtoken") or "", 0.0) <= time.monotonic():
            return _answer(10000, "权限认证失败")
        self._today()
        if self.quota is not None and self._sent_today >= self.quota:
            return _answer(10070, "发送总量超出限制")
        return None

    def _deliver(self, regid: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """Sends to one regId; its invalidUser entry when vivo would not."""
        if regid in self.unregistered:
            return {"status": self.unregistered[regid], "userid": regid}
        self._sent_today += 1
        self.accepted.append(Accepted(regid, message))
        return None

    def _post_receipt(self, task_id: str, message: dict[str, Any], regids: list[str]) -> None:
        extra = message.get("extra")
        if not isinstance(extra, dict):
            return
        url = extra.get("callback")
        targets = [r for r in regids if r not in self.expiring]
        if not isinstance(url, str) or not url or not targets:
            return
        receipt = {
            "targets": ",".join(targets),
            "ackTime": epoch_ms(),
            "param": extra.get("callback.param") or "",
            "ackType": "0",  # arrived
        }
        self.receipts.post_json(url, {task_id: receipt})

    async def _send(self, request: Request) -> Response:
        refused = self._preflight(request)
        if refused is not None:
            return refused
        m = await self._json(request)
        regid = m.get("regId")
        if not regid and not m.get("alias"):
            return _answer(10050, "alias和regId 不能都为空")
        invalid = _invalid(m, MIN_TTL_SINGLE)
        if invalid is not None:
            return invalid
        if not isinstance(regid, str) or len(regid) != REGID_LENGTH:
            return _answer(10302, "regId 不合法")
        if m["requestId"] in self._request_ids:
            return _answer(0, "请求成功", taskId=self._request_ids[m["requestId"]])
        task_id = str(next(self._task_ids))
        self._request_ids[m["requestId"]] = task_id
        user = self._deliver(regid, {k: v for k, v in m.items() if k != "regId"})
        if user is None:
            self._post_receipt(task_id, m, [regid])
        return _answer(0, "请求成功", taskId=task_id, **({"invalidUser": user} if user else {}))

    async def _save_list(self, request: Request) -> Response:
        refused = self._preflight(request)
        if refused is not None:
            return refused
        m = await self._json(request)
        invalid = _invalid(m, MIN_TTL_LIST)
        if invalid is not None:
            return invalid
        task_id = self._request_ids.get(m["requestId"]) or str(next(self._task_ids))
        self._request_ids[m["requestId"]] = task_id
        self._payloads[task_id] = m
        return _answer(0, "请求成功", taskId=task_id)

    async def _push_to_list(self, request: Request) -> Response:
        refused = self._preflight(request)
        if refused is not None:
            return refused
        body = await self._json(request)
        regids, task_id, rid = body.get("regIds"), body.get("taskId"), body.get("requestId")
        if not isinstance(rid, str) or not rid.strip():
            return _answer(10352, "requestId 不能为空")
        if not task_id or str(task_id) not in self._payloads:
            return _answer(10151, "taskId 不能为空")
        if not isinstance(regids, list) or not regids:
            return _answer(10150, "aliases 和 regIds 不能都为空")
        if not 2 <= len(regids) <= 1000:
            return _answer(10153, "regIds 个数不在指定范围[2-1000]")
        if any(not isinstance(r, str) or len(r) != REGID_LENGTH for r in regids):
            return _answer(10302, "regId 不合法")
        if rid in self._request_ids:
            return _answer(0, "请求成功", taskId=str(task_id), invalidUsers=[])
        self._request_ids[rid] = str(task_id)
        payload = self._payloads[str(task_id)]
        results = [(r, self._deliver(r, payload)) for r in regids]
        invalid_users = [u for _, u in results if u]
        self._post_receipt(str(task_id), payload, [r for r, u in results if u is None])
        return _answer(0, "请求成功", taskId=str(task_id), invalidUsers=invalid_users)


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--app-id", type=int, default=10004)
    parser.add_argument("--app-key", default="local-app-key")
    parser.add_argument("--app-secret", default="local-app-secret")
    parser.add_argument("--quota", type=int, default=None)
    args = parser.parse_args()
    server = VivoServer(args.app_id, args.app_key, args.app_secret, quota=args.quota)
    print(await server.start(args.port), flush=True)
    try:
        await server.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
