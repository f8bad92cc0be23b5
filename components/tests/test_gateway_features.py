"""Mock responses, the response cache with ETags, and login-required APIs."""

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import apply_yaml, eventually, free_port, hits

pytestmark = pytest.mark.component


APP_SPEC = {"appId": "DEMO_APP", "workspaceId": "default"}
APP = {"AppId": "DEMO_APP", "WorkspaceId": "default"}


def resource(namespace: str, upstreams: dict[str, str], apis: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "MpaasGateway",
        "metadata": {"name": "gw", "namespace": namespace},
        "spec": {
            "upstreams": [
                {"name": "alpha", "endpoints": [{"url": upstreams["alpha"]}]},
                {"name": "auth", "endpoints": [{"url": upstreams["beta"]}]},
            ],
            "apis": apis,
            "apps": [APP_SPEC],  # a gateway serves only the apps it knows
            **spec,
        },
    }


def post(url: str, op: str, body: bytes = b"{}", **headers: str) -> httpx.Response:
    return httpx.post(
        url + "/mgw.htm",
        content=body,
        headers={"Operation-Type": op, "Content-Type": "application/json", **APP, **headers},
    )


def test_mock_responses(namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]) -> None:
    apis = [
        {"operationType": "m.static", "upstream": "alpha", "mock": {"body": {"items": [1, 2], "ok": True}}},
        {
            "operationType": "m.tpl",
            "upstream": "alpha",
            "mock": {
                "template": True,
                "body": {"greeting": "hello {{body.user.name}} on {{header.Platform}}", "count": "{{body.count}}"},
            },
        },
    ]
    url = start_gateway(namespace, resource(namespace, upstreams, apis))
    before = hits(upstreams["alpha"])
    r = post(url, "m.static")
    assert r.headers["Result-Status"] == "1000" and r.json() == {"items": [1, 2], "ok": True}
    r = post(url, "m.tpl", b'{"user": {"name": "Ann"}, "count": 3}', Platform="ios")
    assert r.json() == {"greeting": "hello Ann on ios", "count": 3}
    assert hits(upstreams["alpha"]) == before  # mocks never call the upstream


def test_response_cache_and_etag(namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]) -> None:
    apis = [
        {
            "operationType": "c.get",
            "upstream": "alpha",
            "path": "/item",
            "cache": {"ttlSeconds": 60, "keyFields": ["id"]},
        }
    ]
    url = start_gateway(namespace, resource(namespace, upstreams, apis))
    before = hits(upstreams["alpha"])
    first = post(url, "c.get", b'{"id": 1, "noise": "a"}')
    assert first.headers["Result-Status"] == "1000" and first.headers["ETag"]
    second = post(url, "c.get", b'{"id": 1, "noise": "b"}')  # same key field: from the cache
    assert second.content == first.content and second.headers["ETag"] == first.headers["ETag"]
    assert hits(upstreams["alpha"]) == before + 1
    post(url, "c.get", b'{"id": 2}')
    assert hits(upstreams["alpha"]) == before + 2
    not_modified = post(url, "c.get", b'{"id": 1}', **{"If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""


def test_login_required(namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]) -> None:
    apis = [
        {"operationType": "l.me", "upstream": "alpha", "path": "/me", "authRequired": True},
        {"operationType": "l.open", "upstream": "alpha", "path": "/open"},
    ]
    res = resource(namespace, upstreams, apis, sessionValidation={"upstream": "auth", "cacheSeconds": 60})
    url = start_gateway(namespace, res)
    before_alpha, before_auth = hits(upstreams["alpha"]), hits(upstreams["beta"])
    assert post(url, "l.me").headers["Result-Status"] == "2000"
    assert post(url, "l.me", **{"Session-Id": "expired"}).headers["Result-Status"] == "2000"
    assert hits(upstreams["alpha"]) == before_alpha
    ok = post(url, "l.me", **{"Session-Id": "good-u42"})
    assert ok.headers["Result-Status"] == "1000" and ok.json()["headers"]["x-user-id"] == "u42"
    post(url, "l.me", **{"Session-Id": "good-u42"})
    assert hits(upstreams["beta"]) == before_auth + 2  # "expired" once, "good-u42" once: then cached
    spoofed = post(url, "l.open", **{"X-User-Id": "admin"})
    assert "x-user-id" not in spoofed.json()["headers"]


def test_auth_required_needs_session_validation(namespace: str, upstreams: dict[str, str]) -> None:
    res = resource(namespace, upstreams, [{"operationType": "l.me", "upstream": "alpha", "authRequired": True}])
    r = apply_yaml(namespace, res)
    assert r.returncode != 0 and "APIs with authRequired need spec.sessionValidation" in r.stderr


def test_admin_api_test_call_and_openapi(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    apis = [
        {
            "operationType": "a.item",
            "upstream": "alpha",
            "path": "/item",
            "description": "Fetch one item",
            "requestSchema": schema,
            "responseSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
        {"operationType": "a.vip", "upstream": "alpha", "apps": ["VIP"]},
    ]
    res = resource(
        namespace,
        upstreams,
        apis,
        apps=[
            {
                "appId": "APP",
                "workspaceId": "prod",
                "signature": {"algorithm": "HmacSha256"},
                "credentialsSecretRef": {"name": "none"},
            },
            {"appId": "VIP", "workspaceId": "prod"},
        ],
    )
    admin_port = free_port()
    start_gateway(namespace, res, env={"MPAAS_ADMIN_PORT": str(admin_port)})
    admin = f"http://127.0.0.1:{admin_port}"
    listed = httpx.get(admin + "/admin/apis").json()
    assert {a["operationType"] for a in listed} == {"a.item", "a.vip"}
    # A signed app's API, tested without a signature: the pipeline runs, the upstream answers, stages are timed.
    r = httpx.post(
        admin + "/admin/test",
        json={"operationType": "a.item", "appId": "APP", "workspaceId": "prod", "body": {"id": 7}},
    ).json()
    assert r["resultStatus"] == 1000 and r["upstream"] == "alpha" and r["body"]["path"] == "/item"
    names = [s["name"] for s in r["stages"]]
    assert names[:2] == ["route", "read body"] and names[-1] == "alpha" and r["totalMilliseconds"] > 0
    assert httpx.post(admin + "/admin/test", json={"operationType": "nope"}).json()["resultStatus"] == 3001
    assert httpx.post(admin + "/admin/test", json={"appId": "x"}).status_code == 422
    doc = httpx.get(admin + "/admin/openapi/APP").json()
    assert doc["openapi"] == "3.1.0" and set(doc["paths"]) == {"/api/a.item"}  # a.vip is VIP's only
    op = doc["paths"]["/api/a.item"]["post"]
    assert op["summary"] == "Fetch one item"
    assert op["requestBody"]["content"]["application/json"]["schema"] == schema
    assert httpx.get(admin + "/admin/openapi/STRANGER").status_code == 404


def test_http2_and_http1_on_one_port(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    apis = [{"operationType": "h.echo", "upstream": "alpha", "path": "/echo"}]
    url = start_gateway(namespace, resource(namespace, upstreams, apis), env={"MPAAS_HTTP2": "true"})
    for flag, version in (("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")):
        r = subprocess.run(
            [
                "curl",
                "-s",
                flag,
                "-X",
                "POST",
                "-H",
                "Operation-Type: h.echo",
                "-H",
                "AppId: DEMO_APP",
                "-H",
                "WorkspaceId: default",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %header{result-status}",
                url + "/mgw.htm",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.stdout == f"{version} 1000", (flag, r.stdout, r.stderr)


def test_concurrency_limit_and_missing_keys(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    apis = [
        {"operationType": "s.slow", "upstream": "narrow", "path": "/slow"},
        {"operationType": "s.echo", "upstream": "alpha", "path": "/echo"},
    ]
    res = resource(
        namespace,
        upstreams,
        apis,
        apps=[
            {
                "appId": "NOKEY",
                "workspaceId": "w",
                "credentialsSecretRef": {"name": "absent"},
                "signature": {"algorithm": "EcdsaP256"},
            },
            {"appId": "OPEN", "workspaceId": "w"},
        ],
    )
    res["spec"]["upstreams"].append(
        {"name": "narrow", "endpoints": [{"url": upstreams["alpha"]}], "maxConcurrency": 2, "timeoutMilliseconds": 5000}
    )
    url = start_gateway(namespace, res)

    async def burst() -> list[str]:
        async with httpx.AsyncClient(timeout=10) as http:
            rs = await asyncio.gather(
                *(
                    http.post(
                        url + "/mgw.htm", headers={"Operation-Type": "s.slow", "AppId": "OPEN", "WorkspaceId": "w"}
                    )
                    for _ in range(5)
                )
            )
        return [r.headers["Result-Status"] for r in rs]

    results = asyncio.run(burst())
    assert sorted(results) == ["1000", "1000", "1004", "1004", "1004"]
    h = {
        "Operation-Type": "s.echo",
        "AppId": "NOKEY",
        "WorkspaceId": "w",
        "Ts": str(int(time.time() * 1000)),
        "Sign": "AAAA",
    }
    assert post(url, "s.echo", **h).headers["Result-Status"] == "7007"


async def test_config_change_keeps_in_flight_requests(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    apis = [{"operationType": "f.slow", "upstream": "alpha", "path": "/slow", "timeoutMilliseconds": 5000}]
    url = start_gateway(namespace, resource(namespace, upstreams, apis))
    async with httpx.AsyncClient(timeout=10) as http:
        flight = asyncio.create_task(http.post(url + "/mgw.htm", headers={"Operation-Type": "f.slow", **APP}))
        await asyncio.sleep(0.5)
        changed = resource(namespace, upstreams, [{"operationType": "f.other", "upstream": "alpha"}])
        assert apply_yaml(namespace, changed).returncode == 0
        await eventually(lambda: post(url, "f.slow").headers["Result-Status"] == "3001", timeout=5)
        r = await flight
    assert r.headers["Result-Status"] == "1000" and r.json()["path"] == "/slow"  # finished on the config it began with
