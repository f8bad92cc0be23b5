"""The operator against a control plane with controller-manager, scheduler and kwok nodes (pods are faked)."""

import copy
from collections.abc import Callable

import pytest

from conftest import (
    ROOT,
    Process,
    apply_yaml,
    argocd_health,
    condition,
    events_of,
    eventually,
    example,
    kubectl,
    ready_reason,
    start_operator,
)
from conftest import kget as get

pytestmark = pytest.mark.cluster
EXAMPLES = ROOT / "examples" / "demo"


async def test_gateway_children_and_status_on_kwok_pods(operator: Process, namespace: str) -> None:
    """What the operator creates and reports for a gateway. kwok marks the pods Running and Ready: this checks
    the operator, not real pods (the pods tier runs real ones)."""
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
    # Two pods and no Redis anywhere: each keeps its own nonces, and the status says what that costs.
    assert condition(gw, "Degraded")["reason"] == "NoSharedState" and condition(gw, "Degraded")["status"] == "True"

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

    # Drift is healed at once through the children's watches (there is no resync timer).
    kubectl("delete", "-n", namespace, "service", "mgw-demo-gateway")
    await eventually(lambda: get(namespace, "service", "mgw-demo-gateway"), timeout=10, what="Service recreated")
    kubectl("scale", "-n", namespace, "deployment", "mgw-demo-gateway", "--replicas=4")
    await eventually(
        lambda: (get(namespace, "deployment", "mgw-demo-gateway") or {}).get("spec", {}).get("replicas") == 1,
        timeout=10,
        what="a hand-scaled Deployment scaled back",
    )
    kubectl("delete", "-n", namespace, "deployment", "mgw-demo-gateway")
    await eventually(lambda: get(namespace, "deployment", "mgw-demo-gateway"), timeout=10, what="Deployment recreated")
    # The events are posted after each repair: waited for, not read at once.
    want = {"Created", "Scaled", "Deleted", "Restoring", "DriftCorrected", "Available"}
    await eventually(
        lambda: want <= {e["reason"] for e in events_of(namespace, "demo-gateway")},
        timeout=15,
        what=f"the events {sorted(want)}",
    )

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
    cond = await ready_reason(namespace, "mpaasgateway", "demo-gateway", "InvalidSpec", timeout=30)
    assert cond["status"] == "False" and "canary.rule" in cond["message"] and "expected ')'" in cond["message"]
    assert get(namespace, "deployment", "mgw-demo-gateway") is None
    obj = get(namespace, "mpaasgateway", "demo-gateway")
    assert condition(obj, "Stalled")["status"] == "True" and condition(obj, "Stalled")["reason"] == "InvalidSpec"
    assert argocd_health(obj)[0] == "Degraded"  # type: ignore[arg-type]
    # An Event says so, and a repeat of the same problem folds into it (count 2), as client-go's recorder does.
    warned = await eventually(
        lambda: [e for e in events_of(namespace, "demo-gateway") if e["reason"] == "InvalidSpec"], timeout=10
    )
    assert warned[0]["type"] == "Warning" and warned[0]["message"] == cond["message"]
    gw["spec"]["apis"][0]["description"] = "same mistake, new generation"
    apply_yaml(namespace, gw)
    await eventually(
        lambda: [e.get("count") for e in events_of(namespace, "demo-gateway") if e["reason"] == "InvalidSpec"] == [2],
        timeout=10,
        what="the repeated InvalidSpec event folded",
    )
    del gw["spec"]["apis"][0]["description"]
    # Fixing the spec recovers without a restart.
    gw["spec"]["apis"][0]["canary"]["rule"] = "DEVICE_ID MOD 100 IN (0..9)"
    apply_yaml(namespace, gw)
    await eventually(
        lambda: condition(get(namespace, "mpaasgateway", "demo-gateway")).get("status") == "True",
        timeout=60,
        what="Ready after the fix",
    )
    assert "Traceback" not in operator.output()


async def test_only_allowed_images_run(operator: Process, namespace: str) -> None:
    """spec.image runs with the gateway's Secrets: the operator runs only images it is told to trust."""
    gw = example("MpaasGateway")
    gw["spec"]["image"] = "docker.io/someone/else:latest"
    assert apply_yaml(namespace, gw).returncode == 0
    cond = await ready_reason(namespace, "mpaasgateway", "demo-gateway", "InvalidSpec", timeout=30)
    assert "spec.image docker.io/someone/else:latest is not allowed" in cond["message"]
    assert get(namespace, "deployment", "mgw-demo-gateway") is None
    gw["spec"]["image"] = "registry.example/mpaas:e2e-2"  # another tag of the operator's own image
    apply_yaml(namespace, gw)
    dep = await eventually(lambda: get(namespace, "deployment", "mgw-demo-gateway"), timeout=30, what="Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/mpaas:e2e-2"


async def test_workers_without_shared_state_are_refused(operator: Process, namespace: str) -> None:
    """Workers in a pod must share nonces and rate limits; with no Redis anywhere the operator says so."""
    gw = example("MpaasGateway")
    gw["spec"]["workersPerPod"] = 2
    assert apply_yaml(namespace, gw).returncode == 0
    cond = await ready_reason(namespace, "mpaasgateway", "demo-gateway", "InvalidSpec", timeout=30)
    assert "spec.workersPerPod > 1 needs spec.sharedState" in cond["message"]
    assert get(namespace, "deployment", "mgw-demo-gateway") is None
    gw["spec"]["sharedState"] = {"urlSecretRef": {"name": "gateway-redis", "key": "url"}}
    apply_yaml(namespace, gw)
    dep = await eventually(lambda: get(namespace, "deployment", "mgw-demo-gateway"), timeout=60, what="Deployment")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MPAAS_WORKERS"]["value"] == "2"
    assert env["MPAAS_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "gateway-redis", "key": "url"}}


async def test_link_channel_and_vendor_credentials(operator: Process, namespace: str) -> None:
    link = example("PushChannel")
    link["spec"]["link"]["tokenSecretRef"] = {"name": "link-keys", "key": "tokenKey"}
    apply_yaml(namespace, link)
    # The link pods run, but no device could authenticate: the channel says so instead of claiming Ready.
    cond = await ready_reason(namespace, "pushchannel", "demo-link", "TokenKeyMissing", timeout=60)
    assert cond["status"] == "False" and "2/2 replicas ready" in cond["message"] and "link-keys" in cond["message"]
    assert get(namespace, "pushchannel", "demo-link")["status"]["readyReplicas"] == 2  # type: ignore[index]
    dep = get(namespace, "deployment", "link-demo-link")
    assert dep and dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["link"]
    # The key appears: its watch re-checks the channel at once.
    kubectl("create", "secret", "generic", "link-keys", "-n", namespace, f"--from-literal=tokenKey={'k' * 32}")
    cond = await ready_reason(namespace, "pushchannel", "demo-link", "Available", timeout=20)
    assert cond["status"] == "True"

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
    cond = await ready_reason(namespace, "pushchannel", "fcm", "CredentialsMissing", timeout=30)
    assert "fcm-creds not found" in cond["message"]
    assert condition(get(namespace, "pushchannel", "fcm"), "Stalled")["status"] == "True"
    # The Secret appears: its watch re-checks the channel at once (no timer, no edit of the channel).
    kubectl("create", "secret", "generic", "fcm-creds", "-n", namespace, "--from-literal=serviceAccount={}")
    # This operator has no push Redis and Kafka: it says so instead of running senders that could not work.
    cond = await ready_reason(namespace, "pushchannel", "fcm", "StoresMissing", timeout=10)
    assert "MPAAS_OPERATOR_KAFKA_URL" in cond["message"]
    assert condition(get(namespace, "pushchannel", "fcm"), "Stalled")["status"] == "False"
    assert get(namespace, "deployment", "push-fcm") is None


async def test_delivery_task_and_sync_topic_status(operator: Process, namespace: str) -> None:
    apply_yaml(namespace, example("DeliveryTask"), example("SyncTopic"))
    # Valid; its package cannot be checked (this operator has no object store), so nothing is offered yet.
    task = await eventually(
        lambda: (
            condition(get(namespace, "deliverytask", "demo-android-2-1-0"), "PackageVerified").get("reason")
            == "NoObjectStore"
            and get(namespace, "deliverytask", "demo-android-2-1-0")
        ),
        timeout=30,
    )
    assert (condition(task)["status"], condition(task)["reason"]) == ("False", "PackageNotVerified")
    assert task["status"]["currentPercent"] == 0 and "currentStage" not in task["status"]
    await ready_reason(namespace, "synctopic", "demo-messages", "NotImplemented", timeout=30)
    twin = copy.deepcopy(example("SyncTopic"))
    twin["metadata"]["name"] = "demo-messages-twin"
    apply_yaml(namespace, twin)
    cond = await ready_reason(namespace, "synctopic", "demo-messages-twin", "Conflict", timeout=30)
    assert "demo-messages already serves" in cond["message"]


async def test_two_operators_do_not_fight(peering: str, namespace: str, spawn: Callable[..., Process]) -> None:
    high = start_operator(spawn, "high", priority=20)
    apply_yaml(namespace, example("SyncTopic"))
    await ready_reason(namespace, "synctopic", "demo-messages", "NotImplemented", timeout=30)
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
    await ready_reason(namespace, "synctopic", "while-standing-by", "Conflict", timeout=30)
    assert "Handler 'reconcile'" not in low.output()  # the standby handled nothing
    high.stop()  # a graceful stop takes the leader out of the peering at once
    await eventually(
        lambda: "Resuming operations after the pause" in low.output(), timeout=10, what="the standby to take over"
    )
    apply_yaml(namespace, example("DeliveryTask"))
    await ready_reason(namespace, "deliverytask", "demo-android-2-1-0", "PackageNotVerified", timeout=30)
