"""A gateway process reading its MpaasGateway from the API server, proxying to local upstreams."""

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import Process, apply_yaml, closed_url, eventually, free_port

pytestmark = pytest.mark.component
APP = {"AppId": "DEMO_APP", "WorkspaceId": "default"}


def gateway_resource(namespace: str, upstreams: dict[str, str], **api_overrides: Any) -> dict[str, Any]:
    closed = closed_url()
    apis = [
        {"operationType": "com.test.echo", "upstream": "alpha", "path": "/echo"},
        {"operationType": "com.test.slow", "upstream": "alpha", "path": "/slow", "timeoutMilliseconds": 300},
        {"operationType": "com.test.fail", "upstream": "alpha", "path": "/fail"},
        {"operationType": "com.test.biz", "upstream": "alpha", "path": "/biz"},
        {"operationType": "com.test.offline", "upstream": "alpha", "state": "Offline"},
        {"operationType": "com.test.closed", "upstream": "closed"},
        {"operationType": "com.test.vip", "upstream": "alpha", "apps": ["VIP_APP"]},
    ]
    apis[0].update(api_overrides)
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "MpaasGateway",
        "metadata": {"name": "gw", "namespace": namespace},
        "spec": {
            "maxBodyBytes": 4096,
            "apps": [{"appId": "DEMO_APP", "workspaceId": "default"}, {"appId": "VIP_APP", "workspaceId": "default"}],
            "upstreams": [
                {"name": "alpha", "endpoints": [{"url": upstreams["alpha"]}]},
                {"name": "beta", "endpoints": [{"url": upstreams["beta"]}]},
                {"name": "closed", "endpoints": [{"url": closed}], "timeoutMilliseconds": 1000},
            ],
            "apis": apis,
        },
    }


@pytest.fixture
def gateway(namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]) -> str:
    return start_gateway(namespace, gateway_resource(namespace, upstreams))


def call(url: str, op: str | None, body: bytes = b"{}", **headers: str) -> httpx.Response:
    h = {**APP, **headers}
    if op is not None:
        h["Operation-Type"] = op
    return httpx.post(url + "/mgw.htm", content=body, headers=h, timeout=10)


def test_routes_to_the_named_upstream(gateway: str) -> None:
    r = call(gateway, "com.test.echo", b'{"x": 1}', **{"Content-Type": "application/json"})
    assert r.headers["Result-Status"] == "1000" and r.headers["Memo"] == "success"
    assert r.json()["upstream"] == "alpha" and r.json()["path"] == "/echo" and r.json()["body"] == '{"x": 1}'
    trace = r.headers["Mgw-TraceId"]
    assert len(trace) == 32 and r.json()["headers"]["mgw-traceid"] == trace


@pytest.mark.parametrize(
    ("op", "headers", "code", "rest_status"),
    [
        (None, {}, "3000", 400),
        ("com.test.nope", {}, "3001", 404),
        ("com.test.echo", {"AppId": "STRANGER"}, "1003", 403),
        ("com.test.vip", {}, "1001", 403),
        ("com.test.offline", {}, "3002", 503),
        ("com.test.slow", {}, "4001", 504),
        ("com.test.closed", {}, "4002", 502),
        ("com.test.fail", {}, "4003", 502),
        ("com.test.biz", {}, "6001", 200),
    ],
)
def test_result_codes(gateway: str, op: str | None, headers: dict[str, str], code: str, rest_status: int) -> None:
    r = call(gateway, op, **headers)
    assert r.status_code == 200  # /mgw.htm answers every decision with 200 + Result-Status
    assert r.headers["Result-Status"] == code, r.headers
    assert r.headers["Mgw-TraceId"]
    if op is not None:
        rest = httpx.post(f"{gateway}/api/{op}", content=b"{}", headers={**APP, **headers}, timeout=10)
        assert rest.headers["Result-Status"] == code and rest.status_code == rest_status


def test_oversized_body_is_refused(gateway: str) -> None:
    assert call(gateway, "com.test.echo", b"x" * 5000).headers["Result-Status"] == "3003"


def test_metrics_count_result_codes(gateway: str) -> None:
    call(gateway, "com.test.nope")
    text = httpx.get(gateway + "/metrics").text
    assert 'mpaas_gateway_requests_total{app_id="DEMO_APP",operation_type="_unknown",result="3001"' in text


def test_added_time_leaves_out_the_upstream(gateway: str) -> None:
    """mpaas_gateway_added_seconds is the gateway's own share: a 300 ms upstream wait is not in it."""
    for _ in range(3):
        assert call(gateway, "com.test.slow").headers["Result-Status"] == "4001"  # waits out its 300 ms timeout
    samples = {}
    for line in httpx.get(gateway + "/metrics").text.splitlines():
        if 'operation_type="com.test.slow"' in line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['mpaas_gateway_request_seconds_sum{operation_type="com.test.slow"}'] >= 0.9
    assert samples['mpaas_gateway_added_seconds_count{operation_type="com.test.slow"}'] == 3
    assert samples['mpaas_gateway_added_seconds_bucket{le="0.1",operation_type="com.test.slow"}'] == 3


async def test_edit_reroutes_within_a_second(gateway: str, namespace: str, upstreams: dict[str, str]) -> None:
    assert call(gateway, "com.test.echo").json()["upstream"] == "alpha"
    r = apply_yaml(namespace, gateway_resource(namespace, upstreams, upstream="beta"))
    assert r.returncode == 0, r.stderr
    # From the stored edit: kubectl's own start-up (0.3-1 s on a busy 2-core machine) is not the gateway's.
    started = time.monotonic()
    await eventually(lambda: call(gateway, "com.test.echo").json().get("upstream") == "beta", timeout=5, interval=0.01)
    assert time.monotonic() - started < 1.0


async def test_new_api_is_callable_without_restart(gateway: str, namespace: str, upstreams: dict[str, str]) -> None:
    assert call(gateway, "com.test.added").headers["Result-Status"] == "3001"
    res = gateway_resource(namespace, upstreams)
    res["spec"]["apis"].append({"operationType": "com.test.added", "upstream": "beta", "path": "/added"})
    apply_yaml(namespace, res)
    await eventually(lambda: call(gateway, "com.test.added").headers["Result-Status"] == "1000", timeout=5)
    assert call(gateway, "com.test.added").json()["path"] == "/added"


def test_not_ready_without_its_resource(namespace: str, spawn: Callable[..., Process]) -> None:
    port = free_port()
    spawn(
        "gateway",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_ADMIN_PORT": str(free_port()),
            "MPAAS_NAMESPACE": namespace,
            "MPAAS_GATEWAY_NAME": "missing",
        },
    )
    url = f"http://127.0.0.1:{port}"

    def readiness() -> httpx.Response | None:
        try:
            r = httpx.get(url + "/readyz", timeout=1)
        except httpx.HTTPError:
            return None
        # Before the first list completes the reason is "waiting for the first configuration".
        return r if "no MpaasGateway" in r.json()["reason"] else None

    deadline = time.monotonic() + 30
    r = None
    while r is None and time.monotonic() < deadline:
        r = readiness()
        time.sleep(0.1)
    assert r is not None and r.status_code == 503
    assert httpx.get(url + "/healthz").status_code == 200
    assert call(url, "com.test.echo").headers["Result-Status"] == "5001"
