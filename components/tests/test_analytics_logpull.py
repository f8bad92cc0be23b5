"""Remote log pull, end to end in process: an engineer asks, the device learns it from its next upload's answer,
puts its logs at the presigned URL, and the engineer downloads them."""

import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from mpaas.analytics import AnalyticsASGI
from mpaas.analytics.ingest import Ingest, Publisher
from mpaas.analytics.logpull import LogPulls
from mpaas.analytics.query import create_query_app
from mpaas.analytics.realtime import MemoryAggregates
from mpaas.analytics.settings import AnalyticsSettings
from mpaas.apps import AppDirectory
from mpaas.service import component_app
from mpaas.stores import LocalObjectStore, MemoryEventLog, MemoryHotStore

pytestmark = pytest.mark.unit


class Live:
    current = AppDirectory({"SHOP": ("SHOP", "prod"), "SHOP/prod": ("SHOP", "prod")})


async def test_a_device_is_asked_for_its_logs_and_they_land(tmp_path: Path) -> None:
    hot, folder = MemoryHotStore(), LocalObjectStore(tmp_path / "objects")
    await folder.ensure_bucket()
    pulls = LogPulls(hot, folder)
    ingest = Ingest(AnalyticsSettings(), Live(), Publisher(MemoryEventLog(), "t", 100, 2.0), hot, pulls)  # type: ignore[arg-type]
    public = AnalyticsASGI(ingest, component_app("analytics"), folder)
    admin = create_query_app(Live(), MemoryAggregates(), None, pulls)  # type: ignore[arg-type]

    def upload(device: str) -> dict:
        return {
            "appId": "SHOP",
            "workspaceId": "prod",
            "deviceId": device,
            "userId": "u-1",
            "events": [{"event": "launch", "ts": int(time.time() * 1000)}],
        }

    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=public), base_url="http://app") as phone,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=admin), base_url="http://admin") as engineer,
    ):
        assert (await engineer.post("/v1/apps/SHOP/prod/log-pulls", json={"reason": "x"})).status_code == 422
        r = await engineer.post("/v1/apps/SHOP/prod/log-pulls", json={"userId": "u-1", "reason": "ticket 42"})
        assert r.status_code == 201 and r.json()["status"] == "pending"
        pull_id = r.json()["id"]
        assert "logPull" not in (await phone.post("/v1/events", json=upload("d-0") | {"userId": ""})).json()
        asked = (await phone.post("/v1/events", json=upload("d-1"))).json()["logPull"]
        assert asked["id"] == pull_id
        # Another device naming the same user (ids are the client's word) is not handed the URL.
        assert "logPull" not in (await phone.post("/v1/events", json=upload("d-2"))).json()
        status = (await engineer.get(f"/v1/apps/SHOP/prod/log-pulls/{pull_id}")).json()
        assert (status["status"], status["requestedFrom"]) == ("requested", "d-1")
        url = urlsplit(asked["uploadUrl"])
        forged = f"{url.path}?{url.query.replace('signature=', 'signature=0')}"
        assert (await phone.put(forged, content=b"x")).status_code == 403
        assert (await phone.put(f"{url.path}?{url.query}", content=b"log line 1\nlog line 2\n")).status_code == 200
        assert "logPull" not in (await phone.post("/v1/events", json=upload("d-1"))).json()  # asked no more
        assert (await phone.put(f"{url.path}?{url.query}", content=b"forged")).status_code == 409  # written once
        done = (await engineer.get(f"/v1/apps/SHOP/prod/log-pulls/{pull_id}")).json()
        assert (done["status"], done["size"]) == ("uploaded", 22)
        down = urlsplit(done["downloadUrl"])
        got = await phone.get(f"{down.path}?{down.query}")
        assert got.content == b"log line 1\nlog line 2\n" and got.headers["content-disposition"] == "attachment"
        head = await phone.head(f"{down.path}?{down.query}")
        assert (head.status_code, head.headers["content-length"]) == (200, "22")
        for query in (
            "expires=99999999999&signature=%E9",
            "expires=\u0661\u0662&signature=" + "0" * 64,
            "&".join(f"k{i}=v" for i in range(20)),
        ):
            assert (await phone.get(f"{down.path}?{query}")).status_code in (400, 403)
        assert (await engineer.get("/v1/apps/SHOP/prod/log-pulls/user:u-1")).status_code == 404
        assert (await phone.put(f"{down.path}?{down.query}", content=b"overwrite")).status_code == 403
        assert (await engineer.get("/v1/apps/SHOP/prod/log-pulls/nope")).status_code == 404
        assert (await engineer.post("/v1/apps/NOPE/prod/log-pulls", json={"deviceId": "d"})).status_code == 404
    without = create_query_app(Live(), MemoryAggregates())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=without), base_url="http://admin") as engineer:
        assert (await engineer.post("/v1/apps/SHOP/prod/log-pulls", json={"deviceId": "d"})).status_code == 503
