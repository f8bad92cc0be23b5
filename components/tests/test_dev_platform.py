"""`mpaas dev`: every component in one process, the gateway on the server production uses."""

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port
from mpaas.component import REGISTRY
from mpaas.dev.platform import DEMO_BACKEND, DevPlatform
from mpaas.http1 import Server
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
    finally:
        await platform.stop()
