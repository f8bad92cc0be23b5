"""The operator's side of vendor PushChannels against a real API server, Redis, Kafka and a local APNs (HTTP/2
over TLS, hack/push_vendors/apns.py): the sender Deployment, the credentials asked of the vendor (and its own
refusal shown when the key is revoked), the queue lag, totals and lag scaling."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from conftest import Process, apply_yaml, condition, create_peering, eventually, free_port, kget, kubectl, need_env
from push_vendors.apns import ApnsServer

pytestmark = pytest.mark.api


@pytest.fixture
def own_peering(crds: None) -> Iterator[str]:
    name = f"mpaas-push-{uuid.uuid4().hex[:8]}"
    create_peering(name)
    yield name
    kubectl("delete", "clusterkopfpeering", name, check=False)


@pytest_asyncio.fixture
async def apns() -> AsyncIterator[ApnsServer]:
    server = ApnsServer()
    await server.start()
    yield server
    await server.stop()


def secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


async def test_a_vendor_channel_gets_senders_its_credentials_checked_and_scales_with_its_lag(
    apns: ApnsServer, namespace: str, own_peering: str, spawn: Callable[..., Process]
) -> None:
    import redis.asyncio as aioredis

    redis_url, kafka = need_env("MPAAS_TEST_REDIS_URL"), need_env("MPAAS_TEST_KAFKA")
    operator = spawn(
        "operator",
        env={
            "MPAAS_OPERATOR_PEERING": own_peering,
            "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
            "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
            "MPAAS_OPERATOR_REDIS_URL": redis_url,
            "MPAAS_OPERATOR_KAFKA_URL": f"kafka://{kafka}",
        },
        name="operator",
    )
    creds = {"authKey": apns.auth_key, "caBundle": Path(apns.ca_file).read_bytes()}
    channel = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "PushChannel",
        "metadata": {"name": "ios"},
        "spec": {
            "appId": "SHOP",
            "type": "APNs",
            "endpoint": apns.url,
            "credentialsSecretRef": {"name": "apns-creds"},
            "apns": {"teamId": apns.team_id, "keyId": apns.key_id, "topic": "com.example.app"},
            "sender": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetLagPerReplica": 2}},
        },
    }
    assert apply_yaml(namespace, secret("apns-creds", creds), channel).returncode == 0

    def status_where(check: Callable[[dict[str, Any]], bool]) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            obj = kget(namespace, "pushchannel", "ios") or {}
            return obj if check(obj) else None

        return probe

    obj = await eventually(
        status_where(lambda o: condition(o, "CredentialsValid").get("status") == "True"),
        timeout=60,
        what="CredentialsValid=True\n" + operator.output()[-3000:],
    )
    assert condition(obj, "CredentialsValid")["reason"] == "Valid"
    dep = kget(namespace, "deployment", "push-ios")
    assert dep is not None and dep["spec"]["replicas"] == 1
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["args"] == ["push"] and env["MPAAS_PUSH_CHANNEL"] == "ios"
    assert env["MPAAS_KAFKA_URL"] == f"kafka://{kafka}" and env["MPAAS_FANOUT"] == "false"
    role = kget(namespace, "role", "push-ios")
    assert role is not None
    rules = {tuple(r["resources"]): r.get("resourceNames") for r in role["rules"]}
    assert rules[("pushchannels",)] == ["ios"] and rules[("secrets",)] == ["apns-creds"]
    # Apple's probe token reached the local APNs: the check spoke the protocol, no device got anything.
    assert apns.requests >= 1 and apns.accepted == []

    # Jobs wait in the channel's topic (no sender pod runs here) and its senders' totals are in Redis.
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(f"mpaas.push.vendor.{namespace}.ios", json.dumps({"job": i}).encode())
    finally:
        await producer.stop()
    redis = aioredis.from_url(redis_url)
    try:
        await redis.hset(f"push:ch:{namespace}/ios", mapping={"sent": 7, "failed": 2})
        obj = await eventually(
            status_where(lambda o: (o.get("status") or {}).get("queueLag") == 5 and o["status"].get("sent") == 7),
            timeout=60,
            what="queueLag 5 and sent 7\n" + operator.output()[-3000:],
        )
        assert obj["status"]["failed"] == 2
        # 5 jobs / 2 per pod -> 3 pods (the most allowed).
        await eventually(
            lambda: (kget(namespace, "deployment", "push-ios") or {}).get("spec", {}).get("replicas") == 3,
            timeout=60,
            what="3 sender pods",
        )
    finally:
        await redis.delete(f"push:ch:{namespace}/ios")
        await redis.aclose()

    # The key is revoked at Apple; the Secret is rotated to a key Apple does not know: the vendor's own refusal.
    apns.revoke()
    assert apply_yaml(namespace, secret("apns-creds", {**creds, "rotatedAt": b"now"})).returncode == 0
    obj = await eventually(
        status_where(lambda o: condition(o, "CredentialsValid").get("status") == "False"),
        timeout=60,
        what="CredentialsValid=False\n" + operator.output()[-3000:],
    )
    assert condition(obj, "CredentialsValid")["reason"] == "AuthFailed"
    assert "InvalidProviderToken" in condition(obj, "CredentialsValid")["message"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CredentialsInvalid")
    assert "InvalidProviderToken" in ready["message"] and condition(obj, "Stalled")["status"] == "True"
