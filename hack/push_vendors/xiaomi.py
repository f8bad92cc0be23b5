"""A local Xiaomi MiPush server: `POST /v3/message/regid` and `GET /v1/stats/message/counts`, authenticated by
`Authorization: key=<AppSecret>`, answering as MiPush does (see components/mpaas/push/vendors/xiaomi.py for the
sources): 21301 for a wrong or revoked AppSecret, 22022 for another package, 20301 "No valid targets!" when
every regid is refused, `data.bad_regids` for the refused ones of a batch, 65009 for a payload over 4 KB,
10034 once the day's quota (China time) is used up, 10017 for a notification without title or description.
Tests inject HTTP failures, 429s and raw answers for the next send requests.

Receipts, as MiPush's 消息回执: when an accepted send's form has `extra.callback` (a URL), a POST to it after the
answer, application/x-www-form-urlencoded with one field `data` holding the JSON
`{"<data.id>": {"param": <extra.callback.param>, "type": 1, "targets": "<regid,...>", "jobkey": <extra.jobkey>}}`
for the delivered regids, when the bit flags of `extra.callback.type` (default 3: delivered 1 + clicked 2) ask for
1; and a separate POST of type 16 (invalid target) for the regids marked `expire_later`, when they ask for 16.
Clicks are never reported: no one taps here.

Run alone: `python hack/push_vendors/xiaomi.py --port 8081 [--app-secret S] [--package P] [--quota N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if not __package__:  # run as a script: make the push_vendors package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from push_vendors.common import AsgiServer, ReceiptPoster, ServedWithReceipts, china_day, parse_form

MAX_PAYLOAD = 4096
MAX_REGIDS = 1000
REGID = re.compile(r"[A-Za-z0-9+/=_-]{8,200}")
DELIVERED, INVALID_TARGET = 1, 16  # extra.callback.type bits this server reports
DEFAULT_CALLBACK_TYPE = 3


@dataclass
class Accepted:
    token: str
    message: dict[str, str]  # the form as it arrived, without registration_id


def _error(code: int, description: str, reason: str) -> JSONResponse:
    return JSONResponse({"result": "error", "code": code, "description": description, "reason": reason})


class XiaomiServer(ServedWithReceipts):
    """MiPush for one app: its AppSecret and package. `quota` is the messages a (China) day allows, None for no
    limit. `accepted` holds every message delivered, per regid; `receipts` posts the extra.callback receipts."""

    def __init__(
        self, app_secret: str = "local-app-secret", package: str = "com.example.app", quota: int | None = None
    ):
        self.app_secret, self.package, self.quota = app_secret, package, quota
        self.accepted: list[Accepted] = []
        self.requests: list[str] = []  # paths of every request, in order
        self.unregistered: set[str] = set()
        self.revoked = False
        self._day = ""
        self._sent_today = 0
        self._inject: list[Response] = []
        self._ids = itertools.count(1)
        self.receipts = ReceiptPoster()
        self.expiring: set[str] = set()
        app = Starlette(
            routes=[
                Route("/v3/message/regid", self._send, methods=["POST"]),
                Route("/v1/stats/message/counts", self._stats, methods=["GET"]),
            ]
        )
        self._server = AsgiServer(app)

    # --- what tests change ------------------------------------------------------

    def revoke(self) -> None:
        """The AppSecret is reset in the console: every request is refused with 21301."""
        self.revoked = True

    def unregister(self, *regids: str) -> None:
        self.unregistered.update(regids)

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

    def _authorized(self, request: Request) -> bool:
        return not self.revoked and request.headers.get("authorization") == f"key={self.app_secret}"

    async def _stats(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        if not self._authorized(request):
            return _error(21301, "认证失败", "Authentication failed")
        if request.query_params.get("restricted_package_name") != self.package:
            return _error(22022, "应用程序package name不合法", "Invalid package name")
        return JSONResponse({"result": "ok", "code": 0, "description": "成功", "data": {"data": []}})

    async def _send(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        if self._inject:
            return self._inject.pop(0)
        if not self._authorized(request):
            return _error(21301, "认证失败", "Authentication failed")
        form = parse_form(await request.body())
        regids = [r for r in form.pop("registration_id", "").split(",") if r]
        if not regids:
            return _error(21305, "缺少必要的参数", "registration_id is required")
        if len(regids) > MAX_REGIDS:
            return _error(10017, "参数值非法", f"at most {MAX_REGIDS} regids")
        if form.get("restricted_package_name") != self.package:
            return _error(22022, "应用程序package name不合法", "Invalid package name")
        if form.get("pass_through", "0") == "0" and not (form.get("title") and form.get("description")):
            return _error(10017, "参数值非法", "a notification needs title and description")
        if len(form.get("payload", "").encode()) > MAX_PAYLOAD:
            return _error(65009, "消息内容太长", "payload is over 4KB")
        self._today()
        if self.quota is not None and self._sent_today >= self.quota:
            return _error(10034, "应用当日发送消息数量过多", "Daily quota exceeded")
        bad = [r for r in regids if r in self.unregistered or not REGID.fullmatch(r)]
        good = [r for r in regids if r not in bad]
        if not good:
            return _error(20301, "发送消息失败", "No valid targets!")
        self._sent_today += len(good)
        self.accepted += [Accepted(r, dict(form)) for r in good]
        data = {"id": f"slm{next(self._ids):010d}"}
        if bad:
            data["bad_regids"] = ",".join(bad)
        self._post_receipts(form, data["id"], good)
        return JSONResponse(
            {"result": "ok", "code": 0, "description": "成功", "data": data, "info": f"Received {len(good)} REGID"}
        )

    def _post_receipts(self, form: dict[str, str], msg_id: str, regids: list[str]) -> None:
        url = form.get("extra.callback")
        if not url:
            return
        try:
            wanted = int(form.get("extra.callback.type") or DEFAULT_CALLBACK_TYPE)
        except ValueError:
            wanted = DEFAULT_CALLBACK_TYPE
        dead = [r for r in regids if r in self.expiring]
        arrived = [r for r in regids if r not in self.expiring]
        for kind, targets in ((DELIVERED, arrived), (INVALID_TARGET, dead)):
            if wanted & kind and targets:
                receipt = {
                    "param": form.get("extra.callback.param") or "",
                    "type": kind,
                    "targets": ",".join(targets),
                    "jobkey": form.get("extra.jobkey") or "",
                }
                # keyed by msg id, so each type is a POST of its own
                self.receipts.post_form(url, {"data": json.dumps({msg_id: receipt}, ensure_ascii=False)})


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--app-secret", default="local-app-secret")
    parser.add_argument("--package", default="com.example.app")
    parser.add_argument("--quota", type=int, default=None)
    args = parser.parse_args()
    server = XiaomiServer(args.app_secret, args.package, args.quota)
    print(await server.start(args.port), flush=True)
    try:
        await server.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(_main())
