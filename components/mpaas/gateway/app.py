"""The mobile gateway (MGS): `POST /mgw.htm` and `/api/<operationType>`, routed by operation type.

Config comes live from the MpaasGateway resource (see `routes.py`); a request
reads the current route table once, so a config swap never changes the rules
under an in-flight request.
"""

from __future__ import annotations

import logging
import os
import time

import httpx
from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram
from pydantic_settings import SettingsConfigDict

from ..config import LiveConfig
from ..service import ComponentSettings, component_app, trace_id_var
from . import codes
from .codes import ResultCode
from .routes import EMPTY, KIND, CompiledApi, RouteTable, compiler

log = logging.getLogger("mpaas.gateway")

REQUESTS = Counter(
    "mpaas_gateway_requests_total", "Gateway requests", ["operation_type", "app_id", "workspace_id", "result"]
)
LATENCY = Histogram(
    "mpaas_gateway_request_seconds",
    "Gateway request latency",
    ["operation_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_ERRORS = Counter("mpaas_gateway_upstream_errors_total", "Upstream failures", ["upstream", "kind"])

# Request headers the gateway consumes or rewrites instead of forwarding.
_HOP_HEADERS = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "proxy-connection",
    "accept-encoding",
}


class GatewaySettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_", extra="ignore")
    gateway_name: str | None = None
    upstream_max_connections: int = 512


def _result(code: ResultCode, trace_id: str, *, rest: bool, memo: str | None = None) -> Response:
    return Response(
        status_code=code.http_status if rest else 200,
        headers={"Result-Status": str(code.code), "Memo": memo or code.memo, "Mgw-TraceId": trace_id},
    )


class Gateway:
    def __init__(self, settings: GatewaySettings, live: LiveConfig[RouteTable]):
        self.settings = settings
        self.live = live
        self.http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=self.settings.upstream_max_connections,
                max_keepalive_connections=self.settings.upstream_max_connections,
            ),
            follow_redirects=False,
        )

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()

    async def handle(self, request: Request, operation_type: str | None, *, rest: bool) -> Response:
        started = time.perf_counter()
        headers = request.headers
        trace_id = headers.get("mgw-traceid") or os.urandom(16).hex()
        trace_id_var.set(trace_id)
        app_id = headers.get("appid", "")
        workspace_id = headers.get("workspaceid", "")
        table = self.live.current  # one read: the whole request sees one config
        code, response = await self._route(request, table, operation_type, app_id, workspace_id, trace_id, rest)
        op_label = operation_type if operation_type in table.apis else "_unknown"
        REQUESTS.labels(
            op_label,
            app_id if (app_id, workspace_id) in table.apps else "_unknown",
            workspace_id if (app_id, workspace_id) in table.apps else "_unknown",
            str(code),
        ).inc()
        LATENCY.labels(op_label).observe(time.perf_counter() - started)
        return response

    async def _route(
        self,
        request: Request,
        table: RouteTable,
        op: str | None,
        app_id: str,
        workspace_id: str,
        trace_id: str,
        rest: bool,
    ) -> tuple[int, Response]:
        if table is EMPTY:
            return codes.GATEWAY_NOT_READY.code, _result(codes.GATEWAY_NOT_READY, trace_id, rest=rest)
        if not op:
            return codes.OPERATION_TYPE_MISSING.code, _result(codes.OPERATION_TYPE_MISSING, trace_id, rest=rest)
        api = table.apis.get(op)
        if api is None:
            return codes.OPERATION_TYPE_UNKNOWN.code, _result(codes.OPERATION_TYPE_UNKNOWN, trace_id, rest=rest)
        if table.apps and (app_id, workspace_id) not in table.apps:
            return codes.UNKNOWN_APP.code, _result(codes.UNKNOWN_APP, trace_id, rest=rest)
        if api.allowed_apps and app_id not in api.allowed_apps:
            return codes.ACCESS_DENIED.code, _result(codes.ACCESS_DENIED, trace_id, rest=rest)
        if not api.online:
            return codes.API_OFFLINE.code, _result(codes.API_OFFLINE, trace_id, rest=rest)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > table.max_body_bytes:
            return codes.REQUEST_TOO_LARGE.code, _result(codes.REQUEST_TOO_LARGE, trace_id, rest=rest)
        body = await request.body()
        if len(body) > table.max_body_bytes:
            return codes.REQUEST_TOO_LARGE.code, _result(codes.REQUEST_TOO_LARGE, trace_id, rest=rest)
        return await self._forward(request, api, body, trace_id, rest)

    async def _forward(
        self, request: Request, api: CompiledApi, body: bytes, trace_id: str, rest: bool
    ) -> tuple[int, Response]:
        assert self.http is not None
        out_headers = {k: v for k, v in request.headers.items() if k not in _HOP_HEADERS}
        for src, dst in api.header_mappings:
            value = request.headers.get(src)
            if value is not None:
                out_headers[dst] = value
        out_headers["mgw-traceid"] = trace_id
        client_ip = request.client.host if request.client else ""
        prior = request.headers.get("x-forwarded-for")
        out_headers["x-forwarded-for"] = f"{prior}, {client_ip}" if prior else client_ip
        url = api.upstream.pick() + api.path
        try:
            resp = await self.http.request(
                api.method,
                url,
                content=body,
                headers=out_headers,
                params=request.query_params if rest else None,
                timeout=api.timeout_seconds,
            )
        except httpx.TimeoutException:
            UPSTREAM_ERRORS.labels(api.upstream.name, "timeout").inc()
            return codes.UPSTREAM_TIMEOUT.code, _result(codes.UPSTREAM_TIMEOUT, trace_id, rest=rest)
        except httpx.HTTPError as e:
            UPSTREAM_ERRORS.labels(api.upstream.name, "connect").inc()
            log.warning("upstream %s unreachable: %s", api.upstream.name, e)
            return codes.UPSTREAM_UNAVAILABLE.code, _result(codes.UPSTREAM_UNAVAILABLE, trace_id, rest=rest)
        headers = {"Mgw-TraceId": trace_id}
        ctype = resp.headers.get("content-type")
        if ctype:
            headers["Content-Type"] = ctype
        business = resp.headers.get("result-status", "")
        if business.isdigit() and int(business) in codes.BUSINESS_CODES:
            headers["Result-Status"] = business
            headers["Memo"] = resp.headers.get("memo", "")
            if "tips" in resp.headers:
                headers["Tips"] = resp.headers["tips"]
            return int(business), Response(
                resp.content, status_code=200 if not rest else resp.status_code, headers=headers
            )
        if resp.status_code >= 400:
            UPSTREAM_ERRORS.labels(api.upstream.name, f"http_{resp.status_code // 100}xx").inc()
            code = codes.UPSTREAM_ERROR
            headers.update({"Result-Status": str(code.code), "Memo": f"{code.memo} (HTTP {resp.status_code})"})
            return code.code, Response(resp.content, status_code=code.http_status if rest else 200, headers=headers)
        headers.update({"Result-Status": str(codes.SUCCESS.code), "Memo": codes.SUCCESS.memo})
        return codes.SUCCESS.code, Response(
            resp.content, status_code=resp.status_code if rest else 200, headers=headers
        )


def create_app(settings: GatewaySettings | None = None, live: LiveConfig[RouteTable] | None = None) -> FastAPI:
    """The gateway app. Without `live`, config comes from `settings.config_source`."""
    settings = settings or GatewaySettings()
    external = live is not None
    live = live or LiveConfig("gateway", [KIND], compiler(settings.namespace, settings.gateway_name), EMPTY)
    gw = Gateway(settings, live)
    selectors = {KIND: {"fieldSelector": f"metadata.name={settings.gateway_name}"}} if settings.gateway_name else None

    async def start_config() -> None:
        if not external:
            live.start(settings, selectors)

    async def stop_config() -> None:
        if not external:
            await live.stop()

    def ready() -> tuple[bool, str]:
        if not live.ready.is_set():
            return False, "waiting for the first configuration"
        if live.current is EMPTY:
            return False, "no MpaasGateway resource found"
        return True, f"serving {live.current.gateway} generation {live.current.generation}"

    app = component_app("gateway", on_start=[gw.start, start_config], on_stop=[stop_config, gw.stop], ready=ready)
    app.state.gateway = gw
    app.state.live = live

    @app.post("/mgw.htm", include_in_schema=False)
    async def mgw(request: Request) -> Response:
        return await gw.handle(request, request.headers.get("operation-type"), rest=False)

    @app.api_route("/api/{operation_type}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def rest(request: Request, operation_type: str) -> Response:
        return await gw.handle(request, operation_type, rest=True)

    return app
