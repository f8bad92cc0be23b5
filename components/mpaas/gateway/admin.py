"""The gateway's admin API, on its own port (`MPAAS_ADMIN_PORT`): inspect and test API definitions.

    GET  /admin/apis                    the registered APIs, as compiled
    POST /admin/test                    send a sample request through the full pipeline
    GET  /admin/openapi/{appId}         OpenAPI 3.1 of the APIs an app may call

A test call is a real request (real upstream, rate limits, cache), with the
signature check waived and per-stage timings in the answer.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, StringConstraints

from ..http1 import Request
from .stages.route import EMPTY, CompiledApi, RouteTable

if TYPE_CHECKING:
    from .app import Gateway


HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,128}$")]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[^\r\n]*$", max_length=8192)]


class TestRequest(BaseModel):
    operation_type: str = Field(alias="operationType", min_length=1, max_length=128)
    app_id: str = Field(default="", alias="appId", max_length=64)
    workspace_id: str = Field(default="", alias="workspaceId", max_length=64)
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, max_length=64, json_schema_extra={"additionalProperties": False}
    )
    body: Any = None
    body_base64: str | None = Field(
        default=None,
        alias="bodyBase64",
        description="a raw body, e.g. protobuf",
        max_length=1_400_000,
        pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    )
    rest: bool = Field(default=False, description="call /api/<operationType> instead of /mgw.htm")


class Problem(BaseModel):
    detail: str


NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": Problem, "description": "no configuration yet"}}


class Stage(BaseModel):
    name: str
    milliseconds: float


class TestResponse(BaseModel):
    result_status: int = Field(alias="resultStatus")
    memo: str
    http_status: int = Field(alias="httpStatus")
    upstream: str
    headers: dict[str, str]
    body: Any
    stages: list[Stage]
    total_milliseconds: float = Field(alias="totalMilliseconds")


class ApiSummary(BaseModel):
    operation_type: str = Field(alias="operationType")
    upstream: str
    endpoints: list[str]
    clusters: list[str] = Field(default_factory=list, description="a cluster group's member upstreams")
    method: str
    path: str
    timeout_milliseconds: float = Field(alias="timeoutMilliseconds")
    online: bool
    apps: list[str]
    canary: str | None
    mock: bool
    cache: bool
    auth_required: bool = Field(alias="authRequired")


def create_admin_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="mpaas gateway admin", version="v1")

    def table() -> RouteTable:
        current = gateway.live.current
        if current is EMPTY:
            raise HTTPException(503, "the gateway has no configuration yet")
        return current

    @app.get("/admin/apis", response_model=list[ApiSummary], response_model_by_alias=True, responses=NOT_READY)
    async def apis() -> list[ApiSummary]:
        return [_summary(a) for a in table().apis.values()]

    @app.post("/admin/test", response_model=TestResponse, response_model_by_alias=True, responses=NOT_READY)
    async def test(req: TestRequest) -> TestResponse:
        body = (
            base64.b64decode(req.body_base64)
            if req.body_base64
            else (json.dumps(req.body).encode() if req.body is not None else b"")
        )
        headers = {
            "content-type": "application/json",
            **{k.lower(): v for k, v in req.headers.items()},
            "operation-type": req.operation_type,
            "appid": req.app_id,
            "workspaceid": req.workspace_id,
            "content-length": str(len(body)),
        }
        path = f"/api/{req.operation_type}" if req.rest else "/mgw.htm"
        incoming = Request.whole("POST", path, headers, body, client_ip="admin")
        incoming.stages, incoming.trusted = [], True
        started = time.perf_counter()
        out = await gateway.handle(incoming, req.operation_type, rest=req.rest)
        stages, last = [], started
        for name, at in incoming.stages:
            stages.append(Stage(name=name, milliseconds=round((at - last) * 1000, 3)))
            last = at
        try:
            payload: Any = json.loads(out.body) if out.body else None
        except ValueError:
            payload = base64.b64encode(out.body).decode()
        return TestResponse(
            resultStatus=out.code,
            memo=out.headers.get("Memo", ""),
            httpStatus=out.status,
            upstream=out.upstream,
            headers=out.headers,
            body=payload,
            stages=stages,
            totalMilliseconds=round((time.perf_counter() - started) * 1000, 3),
        )

    @app.get(
        "/admin/openapi/{app_id}",
        responses={**NOT_READY, 404: {"model": Problem, "description": "the app is not registered on this gateway"}},
    )
    async def openapi_for_app(app_id: str, workspace_id: str | None = None) -> dict[str, Any]:
        t = table()
        if not any(a == app_id and (workspace_id is None or w == workspace_id) for a, w in t.apps):
            raise HTTPException(404, f"app {app_id} is not registered on this gateway")
        return openapi_document(t, gateway.live, app_id)

    return app


def _summary(a: CompiledApi) -> ApiSummary:
    return ApiSummary(
        operationType=a.operation_type,
        upstream=a.forward.upstream.name,
        endpoints=list(a.forward.upstream.base_urls),
        clusters=list(a.forward.upstream.members),
        method=a.forward.method,
        path=a.forward.path,
        timeoutMilliseconds=a.forward.timeout_seconds * 1000,
        online=a.online,
        apps=sorted(a.allowed_apps),
        canary=a.canary.upstream if a.canary else None,
        mock=a.mock is not None,
        cache=a.cache is not None,
        authRequired=a.auth_required,
    )


def openapi_document(t: RouteTable, live: Any, app_id: str) -> dict[str, Any]:
    """OpenAPI 3.1 of the REST-style paths an app may call, from the APIs' request/response schemas."""
    specs = _api_specs(live)
    paths: dict[str, Any] = {}
    for op, api in sorted(t.apis.items()):
        if api.allowed_apps and app_id not in api.allowed_apps:
            continue
        spec = specs.get(op, {})
        operation: dict[str, Any] = {
            "operationId": op,
            "summary": spec.get("description") or op,
            "parameters": [
                {"name": "AppId", "in": "header", "required": True, "schema": {"type": "string", "const": app_id}},
                {"name": "WorkspaceId", "in": "header", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "Result-Status 1000, or a business code 6000-6999",
                    "headers": {
                        "Result-Status": {"schema": {"type": "integer"}},
                        "Mgw-TraceId": {"schema": {"type": "string"}},
                    },
                    "content": {"application/json": {"schema": spec.get("responseSchema") or {}}},
                },
                "default": {
                    "description": "a gateway result code (docs/gateway.md)",
                    "headers": {
                        "Result-Status": {"schema": {"type": "integer"}},
                        "Memo": {"schema": {"type": "string"}},
                    },
                },
            },
        }
        if api.auth_required:
            operation["security"] = [{"session": []}]
        operation["requestBody"] = {
            "required": bool(spec.get("requestSchema")),
            "content": {"application/json": {"schema": spec.get("requestSchema") or {}}},
        }
        paths[f"/api/{op}"] = {"post": operation}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"{app_id} APIs on {t.gateway}", "version": str(t.generation)},
        "paths": paths,
    }
    if t.session is not None:
        doc["components"] = {
            "securitySchemes": {"session": {"type": "apiKey", "in": "header", "name": t.session.header}}
        }
    return doc


def _api_specs(live: Any) -> dict[str, dict[str, Any]]:
    """Descriptions and JSON schemas of the served gateway's APIs (kept out of the hot-path table)."""
    out: dict[str, dict[str, Any]] = {}
    gateway = live.current.gateway
    for res in live.resources.get("MpaasGateway", {}).values():
        if f"{res.namespace}/{res.name}" != gateway:
            continue
        for a in res.spec.apis:
            out[a.operation_type] = {
                "description": a.description,
                "requestSchema": a.request_schema,
                "responseSchema": a.response_schema,
            }
    return out
