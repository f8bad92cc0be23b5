"""The generated CRDs in a real API server: defaults, bounds, CEL rules, immutability, SSA, subresources."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from conftest import apply_yaml, example, kubectl

pytestmark = pytest.mark.api
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"


def get(namespace: str, kind: str, name: str) -> dict:
    return json.loads(kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout)


@pytest.mark.parametrize("kind", ["MpaasGateway", "DeliveryTask", "PushChannel", "SyncTopic"])
def test_examples_are_accepted(namespace: str, kind: str) -> None:
    r = apply_yaml(namespace, example(kind))
    assert r.returncode == 0, r.stderr


def test_schema_defaults_are_filled_in(namespace: str) -> None:
    apply_yaml(
        namespace,
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "SyncTopic",
            "metadata": {"name": "t"},
            "spec": {"appId": "APP", "bizType": "chat"},
        },
    )
    spec = get(namespace, "synctopic", "t")["spec"]
    assert spec["scope"] == "User" and spec["persistence"] == "Persistent"
    assert spec["retention"] == {"maxOplogs": 1000, "ttlSeconds": 604800}
    gw = example("MpaasGateway")
    apply_yaml(namespace, gw)
    api = get(namespace, "mpaasgateway", "demo-gateway")["spec"]["apis"][0]
    assert api["method"] == "POST" and api["retries"] == 0 and api["state"] == "Online"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["apis"][0].update(upstream="ghost"), "every api.upstream must name an entry of spec.upstreams"),
        (
            lambda s: s["upstreams"][0].update(serviceRef={"name": "svc"}),
            "set exactly one of endpoints, serviceRef or clusters",
        ),
        (lambda s: s["upstreams"][0].update(endpoints=[]), "set exactly one of endpoints, serviceRef or clusters"),
        (
            lambda s: s["upstreams"].append({"name": "group", "clusters": [{"upstream": "ghost"}]}),
            "every upstreams[].clusters[].upstream must name an entry of spec.upstreams",
        ),
        (
            lambda s: s["upstreams"].append({"name": "idle", "clusters": [{"upstream": "demo-backend", "weight": 0}]}),
            "a cluster group needs at least one member with weight > 0",
        ),
        (
            lambda s: s["upstreams"].append(
                {"name": "guarded", "clusters": [{"upstream": "demo-backend"}], "circuitBreaker": {}}
            ),
            "set circuitBreaker and maxConcurrency on its members",
        ),
        (lambda s: s.update(autoscaling={"minReplicas": 5, "maxReplicas": 2}), "minReplicas must not exceed"),
        (lambda s: s["apis"][0].update(operationType="bad op!"), "spec.apis[0].operationType"),
        (lambda s: s.update(replicas=-1), "spec.replicas"),
        (
            lambda s: s["apps"][0].update(signature={"algorithm": "EcdsaP256"}, credentialsSecretRef=None),
            "needs credentialsSecretRef",
        ),
        (lambda s: s["apis"][0].update(method="TRACE"), 'supported values: "GET"'),
        (lambda s: s.update(sharedState={}), "give exactly one of url or urlSecretRef"),
        (
            lambda s: s.update(sharedState={"url": "redis://r", "urlSecretRef": {"name": "r", "key": "url"}}),
            "give exactly one of url or urlSecretRef",
        ),
        (lambda s: s.update(sharedState={"url": "http://r"}), "spec.sharedState.url"),
        (lambda s: s.update(workersPerPod=0), "spec.workersPerPod"),
        (lambda s: s.update(rollout={"steps": [{"setWeight": 10}]}), "stepwise rollouts are not implemented yet"),
    ],
)
def test_gateway_rules_reject_with_a_message(namespace: str, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    gw = example("MpaasGateway")
    mutate(gw["spec"])
    r = apply_yaml(namespace, gw)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def test_service_references_and_cluster_groups_are_accepted(namespace: str) -> None:
    gw = example("MpaasGateway")
    gw["spec"]["upstreams"] += [
        {"name": "svc", "serviceRef": {"name": "backend", "port": 8080}},
        {"name": "group", "clusters": [{"upstream": "demo-backend", "weight": 3}, {"upstream": "svc", "weight": 0}]},
    ]
    gw["spec"]["apis"][0]["upstream"] = "group"
    r = apply_yaml(namespace, gw)
    assert r.returncode == 0, r.stderr
    members = get(namespace, "mpaasgateway", "demo-gateway")["spec"]["upstreams"][2]["clusters"]
    assert members == [{"upstream": "demo-backend", "weight": 3}, {"upstream": "svc", "weight": 0}]


def test_name_length_is_bounded_by_child_names(namespace: str) -> None:
    gw = example("MpaasGateway")
    gw["metadata"]["name"] = "g" * 59
    r = apply_yaml(namespace, gw)
    assert "at most 58 characters" in r.stderr


def test_push_channel_rules(namespace: str) -> None:
    ch = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "PushChannel",
        "metadata": {"name": "apns"},
        "spec": {"appId": "APP", "type": "APNs"},
    }
    r = apply_yaml(namespace, ch)
    assert "vendor channels need credentialsSecretRef" in r.stderr
    ch["spec"]["credentialsSecretRef"] = {"name": "apns-key"}
    r = apply_yaml(namespace, ch)
    assert "type APNs needs apns settings" in r.stderr
    ch["spec"]["apns"] = {"teamId": "ABCDE12345", "keyId": "KEY1234567", "topic": "com.example.app"}
    ch["spec"]["receiptUrl"] = "https://push.example.com"
    assert "receiptUrl applies only to types Huawei" in apply_yaml(namespace, ch).stderr  # APNs sends none
    del ch["spec"]["receiptUrl"]
    assert apply_yaml(namespace, ch).returncode == 0


def test_immutable_fields(namespace: str) -> None:
    task = example("DeliveryTask")
    assert apply_yaml(namespace, task).returncode == 0
    changed = copy.deepcopy(task)
    changed["spec"]["package"]["version"] = "2.1.1"
    r = apply_yaml(namespace, changed)
    assert "package is immutable" in r.stderr
    changed = copy.deepcopy(task)
    changed["spec"]["platform"] = "IOS"
    assert "platform is immutable" in apply_yaml(namespace, changed).stderr
    changed = copy.deepcopy(task)
    changed["spec"]["stages"][0]["percent"] = 20  # mutable fields still change
    assert apply_yaml(namespace, changed).returncode == 0


def test_time_window_order(namespace: str) -> None:
    task = example("DeliveryTask")
    task["spec"]["targeting"]["window"] = {"start": "2026-12-02T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    assert "window.end must be after window.start" in apply_yaml(namespace, task).stderr


def test_status_is_a_subresource(namespace: str) -> None:
    apply_yaml(namespace, example("SyncTopic"))
    # A spec write cannot set status ...
    patched = kubectl(
        "patch",
        "-n",
        namespace,
        "synctopic",
        "demo-messages",
        "--type=merge",
        "-p",
        json.dumps({"status": {"oplogCount": 5}}),
    )
    assert patched.returncode == 0
    assert (
        "status" not in get(namespace, "synctopic", "demo-messages")
        or get(namespace, "synctopic", "demo-messages")["status"].get("oplogCount") is None
    )
    # ... the status subresource can, and validates conditions.
    status = {
        "status": {
            "oplogCount": 5,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "lastTransitionTime": "2026-11-22T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        }
    }
    r = kubectl(
        "patch",
        "-n",
        namespace,
        "synctopic",
        "demo-messages",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    assert r.returncode == 0, r.stderr
    assert get(namespace, "synctopic", "demo-messages")["status"]["oplogCount"] == 5
    bad = copy.deepcopy(status)
    bad["status"]["conditions"][0]["status"] = "Maybe"
    r = kubectl(
        "patch",
        "-n",
        namespace,
        "synctopic",
        "demo-messages",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert r.returncode != 0 and "Unsupported value" in r.stderr


def test_scale_subresource(namespace: str) -> None:
    apply_yaml(namespace, example("MpaasGateway"))
    r = kubectl("scale", "-n", namespace, "mpaasgateway/demo-gateway", "--replicas=5")
    assert r.returncode == 0, r.stderr
    assert get(namespace, "mpaasgateway", "demo-gateway")["spec"]["replicas"] == 5


def test_server_side_apply_merges_apis_by_operation_type(namespace: str) -> None:
    gw = example("MpaasGateway")
    base = yaml.safe_dump(gw)
    assert (
        kubectl("apply", "--server-side", "--field-manager=team-a", "-n", namespace, "-f", "-", input=base).returncode
        == 0
    )
    extra = {
        "apiVersion": gw["apiVersion"],
        "kind": gw["kind"],
        "metadata": {"name": gw["metadata"]["name"]},
        "spec": {"apis": [{"operationType": "com.team.b", "upstream": "demo-backend"}]},
    }
    r = kubectl(
        "apply", "--server-side", "--field-manager=team-b", "-n", namespace, "-f", "-", input=yaml.safe_dump(extra)
    )
    assert r.returncode == 0, r.stderr
    ops = [a["operationType"] for a in get(namespace, "mpaasgateway", "demo-gateway")["spec"]["apis"]]
    assert ops == ["com.demo.user.profile", "com.demo.echo", "com.demo.time", "com.team.b"]


def test_printer_columns(namespace: str) -> None:
    apply_yaml(namespace, example("MpaasGateway"))
    out = kubectl("get", "-n", namespace, "mpaasgateways").stdout.splitlines()[0].split()
    assert out[:6] == ["NAME", "DESIRED", "READY", "APPLIED", "APIS", "STATUS"]


def test_offline_app_id_goes_with_the_offline_types(namespace: str) -> None:
    task = example("DeliveryTask")
    task["metadata"]["name"] = "h5"
    task["spec"]["resourceType"] = "H5Offline"
    rule = "offlineAppId is required for H5Offline and MiniProgram, and only for them"
    assert rule in apply_yaml(namespace, task).stderr
    task["spec"]["offlineAppId"] = "20000123"
    assert apply_yaml(namespace, task).returncode == 0
    other = example("DeliveryTask")
    other["spec"]["offlineAppId"] = "20000123"
    assert rule in apply_yaml(namespace, other).stderr
    task["spec"]["offlineAppId"] = "20000456"
    assert "offlineAppId is immutable" in apply_yaml(namespace, task).stderr
