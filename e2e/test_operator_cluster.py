"""The operator against a control plane with controller-manager, scheduler and kwok nodes."""

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from conftest import ROOT, Process, apply_yaml, eventually, example, free_port, kubectl

pytestmark = pytest.mark.cluster
EXAMPLES = ROOT / "examples" / "demo"


def get(namespace: str, *what: str) -> dict[str, Any] | None:
    r = kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


@pytest.fixture(scope="module")
def peering() -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "mpaas-operator-e2e"}}
        ),
    )


def start_operator(spawn: Callable[..., Process], name: str = "operator", priority: int | None = None) -> Process:
    env = {
        "MPAAS_OPERATOR_PEERING": "mpaas-operator-e2e",
        "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
        "MPAAS_OPERATOR_STATUS_INTERVAL_SECONDS": "20",
        "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
    }
    if priority is not None:
        env["MPAAS_OPERATOR_PRIORITY"] = str(priority)
    return spawn("operator", env=env, name=name)


@pytest.fixture
def operator(crds: None, peering: None, spawn: Callable[..., Process]) -> Iterator[Process]:
    yield start_operator(spawn)


async def test_gateway_lifecycle(operator: Process, namespace: str) -> None:
    assert apply_yaml(namespace, example("MpaasGateway")).returncode == 0

    # Deployment -> pods Running on the kwok node -> Ready=True with replica counts.
    gw = await eventually(
        lambda: (
            condition(get(namespace, "mpaasgateway", "demo-gateway")).get("status") == "True"
            and get(namespace, "mpaasgateway", "demo-gateway")
        ),
        timeout=60,
        what="Ready=True\n" + operator.output()[-3000:],
    )
    assert gw["status"]["readyReplicas"] == 2 and gw["status"]["observedGeneration"] == 1
    assert gw["status"]["selector"] == "app.kubernetes.io/instance=demo-gateway,app.kubernetes.io/name=mpaas-gateway"
    pods = get(namespace, "pods", "-l", gw["status"]["selector"])
    assert pods and [p["status"]["phase"] for p in pods["items"]] == ["Running", "Running"]
    dep = get(namespace, "deployment", "mgw-demo-gateway")
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/mpaas:e2e" and container["args"] == ["gateway"]
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "MpaasGateway"
    assert get(namespace, "service", "mgw-demo-gateway") and get(namespace, "pdb", "mgw-demo-gateway")
    assert get(namespace, "hpa", "mgw-demo-gateway") is None

    # Scale through the scale subresource: the Deployment follows, status reports it.
    kubectl("scale", "-n", namespace, "mpaasgateway/demo-gateway", "--replicas=3")
    await eventually(
        lambda: (get(namespace, "mpaasgateway", "demo-gateway") or {}).get("status", {}).get("readyReplicas") == 3,
        timeout=60,
        what="3 ready replicas",
    )
    assert len(get(namespace, "pods", "-l", gw["status"]["selector"])["items"]) == 3  # type: ignore[index]

    # Autoscaling: an HPA appears and the Deployment's replicas are left to it.
    auto = example("MpaasGateway")
    auto["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 6}
    apply_yaml(namespace, auto)
    hpa = await eventually(lambda: get(namespace, "hpa", "mgw-demo-gateway"), timeout=30, what="an HPA")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6

    # Down to one replica without autoscaling: HPA and PDB go away.
    single = example("MpaasGateway")
    single["spec"]["replicas"] = 1
    apply_yaml(namespace, single)
    await eventually(
        lambda: get(namespace, "hpa", "mgw-demo-gateway") is None and get(namespace, "pdb", "mgw-demo-gateway") is None,
        timeout=30,
        what="HPA and PDB removed",
    )

    # A child deleted by hand comes back.
    kubectl("delete", "-n", namespace, "service", "mgw-demo-gateway")
    kubectl("delete", "-n", namespace, "deployment", "mgw-demo-gateway")
    await eventually(lambda: get(namespace, "deployment", "mgw-demo-gateway"), timeout=30, what="Deployment recreated")

    # Delete the gateway: the garbage collector removes every child.
    kubectl("delete", "-n", namespace, "mpaasgateway", "demo-gateway")
    await eventually(
        lambda: (
            get(namespace, "deployment", "mgw-demo-gateway") is None
            and get(namespace, "serviceaccount", "mgw-demo-gateway") is None
            and not (get(namespace, "pods", "-l", gw["status"]["selector"]) or {}).get("items")
        ),
        timeout=60,
        what="children garbage-collected",
    )


async def test_invalid_spec_is_reported_not_retried(operator: Process, namespace: str) -> None:
    gw = example("MpaasGateway")
    gw["spec"]["upstreams"].append({"name": "canary", "endpoints": [{"url": "http://127.0.0.1:1"}]})
    gw["spec"]["apis"][0]["canary"] = {"upstream": "canary", "rule": "DEVICE_ID MOD 100 IN (0..9"}
    assert apply_yaml(namespace, gw).returncode == 0  # the schema cannot parse rules; the operator can
    cond = await eventually(
        lambda: (
            condition(get(namespace, "mpaasgateway", "demo-gateway")).get("reason") == "InvalidSpec"
            and condition(get(namespace, "mpaasgateway", "demo-gateway"))
        ),
        timeout=30,
        what="InvalidSpec",
    )
    assert cond["status"] == "False" and "canary.rule" in cond["message"] and "expected ')'" in cond["message"]
    assert get(namespace, "deployment", "mgw-demo-gateway") is None
    # Fixing the spec recovers without a restart.
    gw["spec"]["apis"][0]["canary"]["rule"] = "DEVICE_ID MOD 100 IN (0..9)"
    apply_yaml(namespace, gw)
    await eventually(
        lambda: condition(get(namespace, "mpaasgateway", "demo-gateway")).get("status") == "True",
        timeout=60,
        what="Ready after the fix",
    )
    assert "Traceback" not in operator.output()


async def test_workers_without_shared_state_are_refused(operator: Process, namespace: str) -> None:
    """Workers in a pod must share nonces and rate limits; with no Redis anywhere the operator says so."""
    gw = example("MpaasGateway")
    gw["spec"]["workersPerPod"] = 2
    assert apply_yaml(namespace, gw).returncode == 0
    cond = await eventually(
        lambda: (
            condition(get(namespace, "mpaasgateway", "demo-gateway")).get("reason") == "InvalidSpec"
            and condition(get(namespace, "mpaasgateway", "demo-gateway"))
        ),
        timeout=30,
        what="InvalidSpec",
    )
    assert "spec.workersPerPod > 1 needs spec.sharedState" in cond["message"]
    assert get(namespace, "deployment", "mgw-demo-gateway") is None
    gw["spec"]["sharedState"] = {"urlSecretRef": {"name": "gateway-redis", "key": "url"}}
    apply_yaml(namespace, gw)
    dep = await eventually(lambda: get(namespace, "deployment", "mgw-demo-gateway"), timeout=60, what="Deployment")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MPAAS_WORKERS"]["value"] == "2"
    assert env["MPAAS_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "gateway-redis", "key": "url"}}


async def test_link_channel_and_vendor_credentials(operator: Process, namespace: str) -> None:
    apply_yaml(namespace, example("PushChannel"))
    await eventually(
        lambda: condition(get(namespace, "pushchannel", "demo-link")).get("status") == "True",
        timeout=60,
        what="link channel Ready",
    )
    dep = get(namespace, "deployment", "link-demo-link")
    assert dep and dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["link"]

    fcm = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "PushChannel",
        "metadata": {"name": "fcm"},
        "spec": {
            "appId": "DEMO_APP",
            "type": "FCM",
            "credentialsSecretRef": {"name": "fcm-creds"},
            "fcm": {"projectId": "demo-project"},
        },
    }
    apply_yaml(namespace, fcm)
    cond = await eventually(
        lambda: (
            condition(get(namespace, "pushchannel", "fcm")).get("reason") == "CredentialsMissing"
            and condition(get(namespace, "pushchannel", "fcm"))
        ),
        timeout=30,
        what="CredentialsMissing",
    )
    assert "fcm-creds not found" in cond["message"]
    kubectl("create", "secret", "generic", "fcm-creds", "-n", namespace, "--from-literal=serviceAccount={}")
    kubectl("annotate", "-n", namespace, "pushchannel", "fcm", "touch=1")  # a non-spec edit: the timer re-checks
    await eventually(
        lambda: condition(get(namespace, "pushchannel", "fcm")).get("status") == "True",
        timeout=45,
        what="credentials found by the periodic re-check",
    )


async def test_delivery_task_and_sync_topic_status(operator: Process, namespace: str) -> None:
    apply_yaml(namespace, example("DeliveryTask"), example("SyncTopic"))
    task = await eventually(
        lambda: (
            condition(get(namespace, "deliverytask", "demo-android-2-1-0")).get("status") == "True"
            and get(namespace, "deliverytask", "demo-android-2-1-0")
        ),
        timeout=30,
    )
    assert task["status"]["currentPercent"] == 10
    await eventually(
        lambda: condition(get(namespace, "synctopic", "demo-messages")).get("status") == "True", timeout=30
    )
    twin = copy.deepcopy(example("SyncTopic"))
    twin["metadata"]["name"] = "demo-messages-twin"
    apply_yaml(namespace, twin)
    cond = await eventually(
        lambda: (
            condition(get(namespace, "synctopic", "demo-messages-twin")).get("reason") == "Conflict"
            and condition(get(namespace, "synctopic", "demo-messages-twin"))
        ),
        timeout=30,
    )
    assert "demo-messages already serves" in cond["message"]


async def test_two_operators_do_not_fight(
    crds: None, peering: None, namespace: str, spawn: Callable[..., Process]
) -> None:
    high = start_operator(spawn, "high", priority=20)
    apply_yaml(namespace, example("SyncTopic"))
    await eventually(
        lambda: condition(get(namespace, "synctopic", "demo-messages")).get("status") == "True",
        timeout=30,
        what="the active operator to reconcile",
    )
    low = start_operator(spawn, "low", priority=10)
    # A new replica starts paused and stays so while a higher-priority peer is alive.
    await eventually(
        lambda: "Initial authentication has finished" in low.output(),
        timeout=30,
        what="the low-priority operator to start",
    )
    kubectl("annotate", "-n", namespace, "synctopic", "demo-messages", "touch=1")
    twin = copy.deepcopy(example("SyncTopic"))
    twin["metadata"]["name"] = "while-standing-by"
    apply_yaml(namespace, twin)
    await eventually(
        lambda: condition(get(namespace, "synctopic", "while-standing-by")).get("reason") == "Conflict",
        timeout=30,
        what="the active operator to handle the new topic",
    )
    assert "Handler 'reconcile'" not in low.output()  # the standby handled nothing
    high.stop()
    await eventually(
        lambda: "Resuming operations after the pause" in low.output(), timeout=90, what="the standby to take over"
    )
    apply_yaml(namespace, example("DeliveryTask"))
    await eventually(
        lambda: condition(get(namespace, "deliverytask", "demo-android-2-1-0")).get("status") == "True",
        timeout=30,
        what="the new active operator to reconcile",
    )
