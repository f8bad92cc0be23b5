"""`mpaas dev`: every component in one process, the gateway on the server production uses."""

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port
from mpaas.component import REGISTRY
from mpaas.dev.platform import DEMO_BACKEND, DevPlatform
from mpaas.http1 import Server
from mpaas.link.client import LinkClient
from mpaas.link.tokens import TokenKey
from mpaas.push.auth import sign_headers
from mpaas.simulator import run_demo

pytestmark = pytest.mark.component


async def test_dev_platform_serves_the_demo_through_the_production_server(tmp_path: Path) -> None:
    ports = {name: free_port() for name in [*REGISTRY, DEMO_BACKEND, "link.link_port"]}
    config = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "demo", config)
    gateway_yaml = config / "gateway.yaml"
    gateway_yaml.write_text(
        gateway_yaml.read_text().replace("http://127.0.0.1:9090", f"http://127.0.0.1:{ports[DEMO_BACKEND]}")
    )
    platform = DevPlatform(str(config), ports=ports)
    await platform.start()
    try:
        await asyncio.wait_for(platform.gateway.state.live.ready.wait(), 10)
        assert isinstance(platform.http1["gateway"], Server)  # mpaas.http1, as `mpaas gateway` in a pod
        calls = await asyncio.to_thread(run_demo, platform.url("gateway"), out=lambda *_: None)
        # The demo's three APIs answer; its last call names an API that does not exist, on purpose.
        assert [c.result_status for c in calls] == ["1000", "1000", "1000", "3001"], [c.memo for c in calls]
        async with httpx.AsyncClient() as client:
            for name in REGISTRY:  # every registered component, served
                assert (await client.get(platform.url(name) + "/healthz")).status_code == 200, name
            # A malformed head gets the production server's answer, not another server's.
            r = await client.get(platform.url("gateway") + "/healthz", headers={"x-a": "1" * 70_000})
            assert r.status_code == 431
        await push_through_link(platform, ports["link.link_port"])
    finally:
        await platform.stop()


async def push_through_link(platform: DevPlatform, link_port: int) -> None:
    """Push and link in one process with their stores in memory: a signed send reaches a connected device."""
    key, token_key = b"demo-push-server-key-for-local-use-only", b"demo-link-token-key-for-local-use-only"
    app, ws, device = "DEMO_APP", "default", "dev-phone"

    async def call(client: httpx.AsyncClient, method: str, path: str, body: object) -> httpx.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = sign_headers(key, method, path, "", app, ws, raw)
        return await client.request(method, platform.url("push") + path, content=raw, headers=headers)

    await asyncio.wait_for(platform.served["push"].live.ready.wait(), 10)
    phone = LinkClient(
        f"ws://127.0.0.1:{link_port}/v1/link", app, ws, device, TokenKey(token_key).issue(app, ws, device)
    )
    await phone.connect()
    try:
        async with httpx.AsyncClient() as client:
            r = await call(client, "PUT", f"/v1/push/devices/{device}", {"platform": "android"})
            assert r.status_code == 200, r.text
            body = {"target": {"type": "device", "ids": [device]}, "notification": {"title": "Hello from mpaas dev"}}
            r = await call(client, "POST", "/v1/push/messages", body)
            assert r.status_code == 202, r.text
            got = json.loads((await asyncio.wait_for(phone.messages.get(), 10)).payload)
            assert got == {"messageId": r.json()["messageId"], "title": "Hello from mpaas dev"}
            # The phone acked it: link in this process reports it delivered to push in this process.
            for _ in range(100):
                status = await call(client, "GET", f"/v1/push/messages/{got['messageId']}", None)
                if status.json()["counts"].get("Receipt.Delivered") == 1:
                    break
                await asyncio.sleep(0.1)
            assert status.json()["counts"].get("Receipt.Delivered") == 1, status.text
    finally:
        await phone.close()
