"""An analytics process ingesting into the real Kafka: the platform's JSON, and PostHog's and Countly's real SDKs."""

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import Process, closed_url, eventually, free_port, need_env, wait_ready
from mpaas.stores import KafkaEventLog
from testenv_paths import peer_sdks

pytestmark = pytest.mark.component

GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "default"},
    "spec": {
        "apps": [{"appId": "SHOP", "workspaceId": "prod"}],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}


def start(
    spawn: Callable[..., Process], tmp_path: Path, kafka_url: str, topic: str, env: dict[str, str] | None = None
) -> str:
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "apps.yaml").write_text(yaml.safe_dump(GATEWAY))
    port = free_port()
    proc = spawn(
        "analytics",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_CONFIG_SOURCE": "dir",
            "MPAAS_CONFIG_DIR": str(config),
            "MPAAS_KAFKA_URL": kafka_url,
            "MPAAS_EVENTS_TOPIC": topic,
            "MPAAS_PUBLISH_TIMEOUT_SECONDS": "3",
            "MPAAS_ADMIN_PORT": "0",
            **(env or {}),
        },
        name="analytics",
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url


@pytest.fixture
def topic() -> str:
    return f"analytics-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def analytics(spawn: Callable[..., Process], tmp_path: Path, topic: str) -> str:
    return start(spawn, tmp_path, f"kafka://{need_env('MPAAS_TEST_KAFKA')}", topic)


async def consumed(topic: str, n: int) -> list[dict[str, Any]]:
    """The first `n` events of `topic`, as Kafka has them (a record holds an upload's events of one device)."""
    log = KafkaEventLog(need_env("MPAAS_TEST_KAFKA"))
    await log.start()
    try:
        out: list[dict[str, Any]] = []
        async with contextlib.aclosing(log.consume(topic, f"check-{uuid.uuid4().hex[:6]}", idle_timeout=15)) as records:
            async for record in records:
                out += [json.loads(line) for line in record.value.split(b"\n")]
                if len(out) >= n:
                    break
        return out
    finally:
        await log.close()


def node(script: str, tmp_path: Path, timeout: float = 60) -> str:
    path = tmp_path / "client.js"
    path.write_text(script)
    env = {**os.environ, "NODE_PATH": peer_sdks()}
    done = subprocess.run(["node", str(path)], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_native_upload_is_acknowledged_after_kafka_has_every_good_event(analytics: str, topic: str) -> None:
    now = int(time.time() * 1000)
    body = {
        "appId": "SHOP",
        "workspaceId": "prod",
        "deviceId": "dev-1",
        "userId": "u-1",
        "events": [
            {"event": "launch", "ts": now, "id": "e-1"},
            {"event": "from_the_future", "ts": now + 86400_000},
            {"event": "page", "ts": now + 1, "props": {"page": "home"}, "id": "e-2"},
        ],
    }
    async with httpx.AsyncClient() as client:
        r = await client.post(analytics + "/v1/events", json=body)
    assert r.status_code == 200
    assert r.json() == {
        "code": 1001,
        "accepted": 2,
        "refused": [{"index": 1, "code": 4002, "name": "FromTheFuture", "detail": f"time {now + 86400_000}"}],
    }
    got = await consumed(topic, 2)
    assert [(e["id"], e["event"], e["device"], e["user"], e["source"]) for e in got] == [
        ("e-1", "launch", "dev-1", "u-1", "native"),
        ("e-2", "page", "dev-1", "u-1", "native"),
    ]
    assert all(now - 60_000 < e["received"] < now + 60_000 for e in got)


async def test_unknown_apps_and_malformed_uploads_get_their_codes(analytics: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            analytics + "/v1/events", json={"appId": "NOPE", "workspaceId": "w", "deviceId": "d", "events": []}
        )
        assert (r.status_code, r.json()["code"]) == (403, 1003)
        r = await client.post(analytics + "/v1/events", content=b"\x1f\x8bnot gzip")
        assert (r.status_code, r.json()["code"]) == (400, 3004)
        r = await client.post(analytics + "/v1/events", content=b"x" * (2 << 20))
        assert (r.status_code, r.json()["code"]) == (413, 3003)
        r = await client.post(analytics + "/batch/", json={"api_key": "NOPE", "batch": []})
        assert r.status_code == 401  # posthog-node drops the batch: it would never be accepted
        r = await client.get(analytics + "/i", params={"app_key": "NOPE", "device_id": "d", "begin_session": "1"})
        # Countly's SDK would resend it forever, holding up the device's queue: taken as done, counted as refused.
        assert (r.status_code, r.json()) == (200, {"result": "Success", "refused": "UnknownApp"})


async def test_posthog_node_sends_here_unchanged(analytics: str, topic: str, tmp_path: Path) -> None:
    node(
        f"""
        const {{ PostHog }} = require('posthog-node');
        (async () => {{
          const client = new PostHog('SHOP', {{ host: '{analytics}', flushAt: 20, flushInterval: 0 }});
          client.capture({{ distinctId: 'user-1', event: 'app_launch', properties: {{ coldStartMs: 812 }} }});
          client.capture({{ distinctId: 'user-1', event: 'purchase', properties: {{ amount: 3 }} }});
          client.capture({{ distinctId: 'user-2', event: 'app_launch' }});
          await client.shutdown();
        }})().catch((e) => {{ console.error(e); process.exit(1); }});
        """,
        tmp_path,
    )
    got = await consumed(topic, 3)
    # One device's events in order (one partition); devices may interleave.
    assert [(e["event"], e["source"], e["app"]) for e in got if e["user"] == "user-1"] == [
        ("app_launch", "posthog", "SHOP"),
        ("purchase", "posthog", "SHOP"),
    ]
    assert [e["event"] for e in got if e["user"] == "user-2"] == ["app_launch"]
    first = next(e for e in got if e["user"] == "user-1")
    assert first["props"]["coldStartMs"] == 812 and first["props"]["$lib"] == "posthog-node"
    assert len({e["id"] for e in got}) == 3  # the SDK's uuids, kept


async def test_countly_sdk_nodejs_sends_here_unchanged(analytics: str, topic: str, tmp_path: Path) -> None:
    node(
        f"""
        const Countly = require('countly-sdk-nodejs');
        Countly.init({{ app_key: 'SHOP', url: '{analytics}', device_id: 'dev-42', interval: 100, fail_timeout: 1,
          storage_path: '{tmp_path / "countly"}', metrics: {{ _os: 'Android', _app_version: '1.2.3' }} }});
        Countly.begin_session();
        Countly.add_event({{ key: 'page_view', count: 1, segmentation: {{ page: 'home' }} }});
        setTimeout(() => Countly.end_session(), 600);
        setTimeout(() => process.exit(0), 2500);
        """,
        tmp_path,
    )
    got = await consumed(topic, 3)
    names = [e["event"] for e in got]
    assert names[0] == "$session_start" and "page_view" in names and names[-1] == "$session_end", names
    assert {e["device"] for e in got} == {"dev-42"} and {e["source"] for e in got} == {"countly"}
    assert got[0]["props"]["_os"] == "Android"


async def test_kafka_unreachable_answers_429_and_acknowledges_nothing(
    spawn: Callable[..., Process], tmp_path: Path, topic: str
) -> None:
    down = start(spawn, tmp_path, "kafka://" + closed_url().removeprefix("http://"), topic)
    now = int(time.time() * 1000)
    body = {"appId": "SHOP", "workspaceId": "prod", "deviceId": "d", "events": [{"event": "e", "ts": now}]}
    async with httpx.AsyncClient(timeout=20) as client:
        for _ in range(2):  # the first waits out the connection attempt, the next is refused at once
            r = await client.post(down + "/v1/events", json=body)
            assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (429, 4290, "2")
        r = await client.post(
            down + "/batch/", json={"api_key": "SHOP", "batch": [{"event": "e", "distinct_id": "u", "properties": {}}]}
        )
        assert r.status_code == 429  # posthog-node retries it
        r = await client.get(down + "/i", params={"app_key": "SHOP", "device_id": "d", "begin_session": "1"})
        assert r.status_code == 429 and r.json()["result"] != "Success"  # Countly's SDK keeps the request


async def test_real_time_figures_survive_a_replay_of_the_whole_topic(
    spawn: Callable[..., Process], tmp_path: Path, topic: str
) -> None:
    """Aggregates in Redis, the events in Kafka: a consumer that reads everything again (a new group, as after a
    crash before its offsets were committed) counts nothing twice."""
    prefix = f"rt-{uuid.uuid4().hex[:8]}:"
    admin = free_port()
    common = {"MPAAS_AGGREGATES_URL": need_env("MPAAS_TEST_REDIS_URL"), "MPAAS_ADMIN_PORT": str(admin)}
    common["MPAAS_AGGREGATES_PREFIX"] = prefix
    url = start(spawn, tmp_path, f"kafka://{need_env('MPAAS_TEST_KAFKA')}", topic, common)
    now = int(time.time() * 1000)
    day = time.strftime("%Y-%m-%d", time.gmtime(now / 1000))
    evs = [{"event": "launch", "ts": now, "id": f"l{i}"} for i in range(5)]
    evs += [{"event": "crash", "ts": now, "id": "c1"}, {"event": "stall", "ts": now, "id": "s1", "props": {"ms": 3000}}]
    async with httpx.AsyncClient(timeout=10) as client:
        for device in ("d1", "d2"):
            body = {"appId": "SHOP", "workspaceId": "prod", "deviceId": device, "platform": "Android", "events": evs}
            body["events"] = [dict(e, id=f"{device}-{e['id']}") for e in evs]
            assert (await client.post(url + "/v1/events", json=body)).json()["accepted"] == 7
        query = f"http://127.0.0.1:{admin}/v1/apps/SHOP/prod/days/{day}"

        async def figures() -> dict[str, Any]:
            return (await client.get(query)).json()

        expected = {"events": 14, "launches": 10, "crashes": 2, "stalls": 2, "active_devices": 2, "crashed_devices": 2}

        async def settled() -> bool:
            f = await figures()
            return {k: f.get(k) for k in expected} == expected

        await eventually(settled, timeout=30, what="the figures of 14 events")
        metrics = (await client.get(url + "/metrics")).text
        assert 'mpaas_analytics_app_events_total{app="SHOP",kind="launch",platform="android"} 10.0' in metrics
        # Another process, another group: the whole topic read again.
        again = start(
            spawn,
            tmp_path,
            f"kafka://{need_env('MPAAS_TEST_KAFKA')}",
            topic,
            {**common, "MPAAS_REALTIME_GROUP": "replay", "MPAAS_ADMIN_PORT": str(free_port())},
        )
        await eventually(lambda: _replayed(again, client), timeout=30, what="the replay consumed")
        f = await figures()
        assert {k: f.get(k) for k in expected} == expected
        assert (await client.get(f"http://127.0.0.1:{admin}/v1/apps/NOPE/prod/days/{day}")).status_code == 404


async def _replayed(url: str, client: httpx.AsyncClient) -> bool:
    # The replaying process applies nothing (every id seen): it counts each event as a replay, not an event.
    text = (await client.get(url + "/metrics")).text
    return "mpaas_analytics_replayed_events_total 14.0" in text


async def test_an_app_over_its_event_rate_gets_429(spawn: Callable[..., Process], tmp_path: Path, topic: str) -> None:
    limits = {"MPAAS_APP_EVENTS_PER_SECOND": "1", "MPAAS_MAX_EVENTS_PER_REQUEST": "10"}
    url = start(spawn, tmp_path, f"kafka://{need_env('MPAAS_TEST_KAFKA')}", topic, limits)
    now = int(time.time() * 1000)
    body = {
        "appId": "SHOP",
        "workspaceId": "prod",
        "deviceId": "d",
        "events": [{"event": "e", "ts": now, "id": f"e{i}"} for i in range(10)],
    }
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(url + "/v1/events", json=body)).json()["accepted"] == 10  # the burst
        r = await client.post(url + "/v1/events", json=body)
        assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (429, 1002, "1")
        batch = [{"event": "e", "distinct_id": "u", "properties": {}}] * 10  # 10 tokens: none is back this soon
        r = await client.post(url + "/batch/", json={"api_key": "SHOP", "batch": batch})
        assert r.status_code == 429
