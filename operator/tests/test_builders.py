"""Builders are pure: spec in, manifests out. Checked here without a cluster."""

from typing import Any

import pytest

from mpaas.api import MPAAS_GATEWAY
from mpaas.api.push import LinkSettings, PushChannelSpec
from mpaas_operator import conditions
from mpaas_operator.builders import gateway, link, push
from mpaas_operator.reconcile.common import kstatus, workload_conditions
from mpaas_operator.reconcile.gateway import shared_state_condition
from mpaas_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def spec(**fields: Any):  # type: ignore[no-untyped-def]
    base = {"upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}]}
    return MPAAS_GATEWAY.spec.model_validate({**base, **fields})


def by_kind(children: gateway.Children) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children.apply}


def test_gateway_children() -> None:
    out = by_kind(gateway.build("shop", "prod", spec(replicas=3), image="img:1", pull_policy="Always"))
    assert set(out) == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget"}
    dep = out["Deployment"]
    assert dep["metadata"]["name"] == "mgw-shop" and dep["metadata"]["namespace"] == "prod"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "img:1" and c["args"] == ["gateway"] and c["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MPAAS_GATEWAY_NAME"] == "shop" and env["MPAAS_CONFIG_SOURCE"] == "kube"
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == "mgw-shop"
    assert dep["spec"]["selector"]["matchLabels"] == out["Service"]["spec"]["selector"]
    assert out["Role"]["rules"] == [  # its own resource only, and no Secret when no app has keys
        {
            "apiGroups": ["mpaas.io"],
            "resources": ["mpaasgateways"],
            "verbs": ["get", "list", "watch"],
            "resourceNames": ["shop"],
        },
        # the applied generation, on its own Pod: the status subresource only, never the Pod's labels or spec
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch"]},
    ]
    fields = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    assert fields["POD_NAME"] == "metadata.name" and fields["POD_NAMESPACE"] == "metadata.namespace"


def test_gateway_reads_only_the_secrets_its_apps_name() -> None:
    apps = [
        {
            "appId": "A",
            "workspaceId": "w",
            "credentialsSecretRef": {"name": "a-keys"},
            "signature": {"algorithm": "Sm2"},
        },
        {"appId": "B", "workspaceId": "w", "credentialsSecretRef": {"name": "a-keys"}},
        {"appId": "C", "workspaceId": "w", "credentialsSecretRef": {"name": "c-keys"}},
        {"appId": "D", "workspaceId": "w"},
    ]
    out = by_kind(gateway.build("shop", "prod", spec(apps=apps), image="img:1", pull_policy="Always"))
    secrets = [r for r in out["Role"]["rules"] if r["resources"] == ["secrets"]]
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get", "list", "watch"],
            "resourceNames": ["a-keys", "c-keys"],
        }
    ]


def test_pod_template_does_not_change_with_apis() -> None:
    """APIs are read live: editing them must not roll the pods."""
    a = by_kind(gateway.build("g", "ns", spec(), image="i", pull_policy="IfNotPresent"))
    b = by_kind(
        gateway.build(
            "g", "ns", spec(apis=[{"operationType": "x.y", "upstream": "u"}]), image="i", pull_policy="IfNotPresent"
        )
    )
    assert a["Deployment"] == b["Deployment"]


def test_autoscaling_hands_replicas_to_the_hpa() -> None:
    out = gateway.build(
        "g", "ns", spec(autoscaling={"minReplicas": 3, "maxReplicas": 9}), image="i", pull_policy="IfNotPresent"
    )
    kinds = by_kind(out)
    assert "replicas" not in kinds["Deployment"]["spec"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 9
    assert "PodDisruptionBudget" in kinds and out.absent == []


def test_single_replica_has_no_pdb_and_no_hpa() -> None:
    out = gateway.build("g", "ns", spec(replicas=1), image="i", pull_policy="IfNotPresent")
    assert set(out.absent) == {("HorizontalPodAutoscaler", "mgw-g"), ("PodDisruptionBudget", "mgw-g")}


def test_spec_image_overrides_the_operator_default() -> None:
    dep = by_kind(gateway.build("g", "ns", spec(image="mine:2"), image="i", pull_policy="IfNotPresent"))["Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"


def container_env(children: gateway.Children) -> dict[str, Any]:
    c = by_kind(children)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_gateway_shared_state_and_workers() -> None:
    build = gateway.build
    # Nothing named anywhere: no Redis, each process keeps its own state; one worker.
    env = container_env(build("g", "ns", spec(), image="i", pull_policy="IfNotPresent"))
    assert "MPAAS_REDIS_URL" not in env and env["MPAAS_WORKERS"] == "1"
    # The operator's default, when the spec names none.
    env = container_env(
        build("g", "ns", spec(workersPerPod=4), image="i", pull_policy="P", redis_url="redis://r:6379/0")
    )
    assert env["MPAAS_REDIS_URL"] == "redis://r:6379/0" and env["MPAAS_WORKERS"] == "4"
    # The spec wins over the default: a plain URL, or a Secret key read by the kubelet.
    own = spec(sharedState={"url": "redis://mine:6379/2"})
    assert container_env(build("g", "ns", own, image="i", pull_policy="P", redis_url="redis://r"))[
        "MPAAS_REDIS_URL"
    ] == ("redis://mine:6379/2")
    secret = spec(sharedState={"urlSecretRef": {"name": "redis-auth", "key": "url"}})
    env = container_env(build("g", "ns", secret, image="i", pull_policy="P", redis_url="redis://r"))
    assert env["MPAAS_REDIS_URL"] == {"secretKeyRef": {"name": "redis-auth", "key": "url"}}


def test_link_children() -> None:
    settings = LinkSettings(port=9443, replicas=1, drainSeconds=20, tokenSecretRef={"name": "keys", "key": "k"})
    out = by_kind(link.build("chat", "ns", settings, image="i", pull_policy="IfNotPresent", redis_url="redis://r"))
    assert out["Deployment"]["metadata"]["name"] == "link-chat"
    # Devices' WebSockets on the channel's port; health, metrics and the delivery API on the component's.
    assert [(p["name"], p["port"], p["targetPort"]) for p in out["Service"]["spec"]["ports"]] == [
        ("http", 8080, "http"),
        ("link", 9443, "link"),
    ]
    pod = out["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8080), ("link", 9443)]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MPAAS_LINK_PORT"] == "9443" and env["MPAAS_PORT"] == "8080" and env["MPAAS_REDIS_URL"] == "redis://r"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}} and env["MPAAS_DRAIN_SECONDS"] == "20"
    assert pod["terminationGracePeriodSeconds"] == 5 + 20 + 10  # preStop, the drain, a margin
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get", "list", "watch"],
        "resourceNames": ["keys"],
    } in (out["Role"]["rules"])
    assert "PodDisruptionBudget" not in out
    # The same applied-generation reporting as the gateway: its own Pod named, pods/status only.
    env = {e["name"] for e in out["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    assert {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch"]} in out["Role"]["rules"]
    assert not any("pods" in r["resources"] for r in out["Role"]["rules"])


def test_link_has_an_ingress_when_asked_for_one() -> None:
    plain = by_kind(link.build("chat", "ns", LinkSettings(), image="i", pull_policy="P"))
    assert "Ingress" not in plain
    ingress = {
        "host": "link.example.com",
        "className": "nginx",
        "tlsSecretName": "link-tls",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
    }
    out = by_kind(link.build("chat", "ns", LinkSettings(ingress=ingress), image="i", pull_policy="P"))
    ing = out["Ingress"]
    assert ing["metadata"]["name"] == "link-chat" and ing["metadata"]["annotations"] == ingress["annotations"]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["link.example.com"], "secretName": "link-tls"}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "link.example.com"
    assert [(p["path"], p["backend"]["service"]) for p in rule["http"]["paths"]] == [
        ("/v1/link", {"name": "link-chat", "port": {"name": "link"}}),
        ("/dispatch", {"name": "link-chat", "port": {"name": "link"}}),
    ]


def test_link_autoscales_on_connections_where_custom_metrics_are_served() -> None:
    settings = LinkSettings(
        maxConnectionsPerPod=18000, autoscaling={"minReplicas": 2, "maxReplicas": 10, "targetCpuUtilizationPercent": 60}
    )
    on_cpu = by_kind(link.build("chat", "ns", settings, image="i", pull_policy="P"))["HorizontalPodAutoscaler"]
    assert on_cpu["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    on_connections = by_kind(link.build("chat", "ns", settings, image="i", pull_policy="P", custom_metrics=True))
    (metric,) = on_connections["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "mpaas_link_connections"},
            "target": {"type": "AverageValue", "averageValue": "12600"},  # 70% of 18 000
        },
    }


def deployment(
    desired: int, ready: int, updated: int, replicas: int, gen: int = 2, seen: int = 2, progress: str = ""
) -> dict[str, Any]:
    return {
        "metadata": {"generation": gen},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": seen,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "replicas": replicas,
            "conditions": [{"type": "Progressing", "status": "True", "reason": progress, "message": "m"}],
        },
    }


@pytest.mark.parametrize(
    ("dep", "ready", "reason", "reconciling"),
    [
        (deployment(2, 2, 2, 2), "True", "Available", False),
        (deployment(2, 1, 2, 2), "False", "Progressing", True),
        (deployment(2, 0, 0, 0), "False", "Progressing", True),
        (deployment(2, 2, 2, 2, gen=3, seen=2), "False", "Progressing", True),
        (deployment(0, 0, 0, 0), "True", "ScaledToZero", False),
        (None, "False", "DeploymentMissing", True),
        # The rollout finished, then pods stopped being ready (crashing, failing probes).
        (deployment(2, 0, 2, 2, progress="NewReplicaSetAvailable"), "False", "Unavailable", False),
        (deployment(2, 1, 2, 2, progress="NewReplicaSetAvailable"), "False", "Degraded", False),
        (deployment(2, 0, 1, 2, progress="ProgressDeadlineExceeded"), "False", "ProgressDeadlineExceeded", False),
    ],
)
def test_workload_conditions(dep: dict[str, Any] | None, ready: str, reason: str, reconciling: bool) -> None:
    cond, rolling, _, _ = workload_conditions(dep)
    assert (cond["type"], cond["status"], cond["reason"], rolling) == ("Ready", ready, reason, reconciling)


@pytest.mark.parametrize(
    ("reason", "stalled"),
    [("InvalidSpec", True), ("CredentialsMissing", True), ("Conflict", True), ("NotImplemented", False)],
)
def test_kstatus_conditions(reason: str, stalled: bool) -> None:
    conds = {c["type"]: c for c in kstatus(conditions.condition("Ready", False, reason, "why"))}
    assert set(conds) == {"Ready", "Reconciling", "Stalled"}
    assert conds["Stalled"]["status"] == ("True" if stalled else "False")
    assert conds["Reconciling"]["status"] == "False"


def test_transition_time_moves_only_when_status_flips() -> None:
    first = conditions.merge([], [conditions.condition("Ready", False, "Progressing")], 1)
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = conditions.merge(first, [conditions.condition("Ready", False, "Unavailable", "0/2")], 2)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z" and same[0]["observedGeneration"] == 2
    flipped = conditions.merge(same, [conditions.condition("Ready", True, "Available")], 2)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("allowed", "image", "ok"),
    [
        ("", "ghcr.io/mpaas-io/mpaas:9.9.9", True),
        ("", "ghcr.io/mpaas-io/mpaas@sha256:" + "0" * 64, True),
        ("", "ghcr.io/mpaas-io/mpaas-evil:1", False),
        ("", "docker.io/attacker/miner:latest", False),
        ("registry.corp:5000/mobile/*", "registry.corp:5000/mobile/gw:2", True),
        ("registry.corp:5000/mobile/*", "ghcr.io/mpaas-io/mpaas:1", False),
    ],
)
def test_gateway_images_are_allow_listed(allowed: str, image: str, ok: bool) -> None:
    settings = OperatorSettings(image="ghcr.io/mpaas-io/mpaas:0.1.0", allowed_images=allowed)
    assert settings.image_allowed(image) is ok


def test_pods_outlive_their_endpoints_before_draining() -> None:
    out = by_kind(gateway.build("shop", "ns", spec(), image="i", pull_policy="Always"))
    pod = out["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert pod["terminationGracePeriodSeconds"] > 5 + 10  # preStop, then the drain


@pytest.mark.parametrize(
    ("fields", "degraded"),
    [
        ({"replicas": 2}, "True"),
        ({"replicas": 1}, "False"),
        ({"replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, "True"),
        ({"replicas": 3, "sharedState": {"url": "redis://r:6379/0"}}, "False"),
    ],
)
def test_replicas_without_shared_state_are_degraded(fields: dict[str, Any], degraded: str) -> None:
    parsed = spec(**fields)
    assert shared_state_condition(parsed)["status"] == degraded


@pytest.mark.parametrize(
    "children",
    [
        gateway.build("shop", "prod", spec(), image="i", pull_policy="IfNotPresent"),
        link.build("chat", "ns", LinkSettings(port=9443, replicas=1), image="i", pull_policy="IfNotPresent"),
    ],
    ids=["gateway", "link"],
)
def test_workloads_run_registered_components_with_the_rights_their_entry_names(children: gateway.Children) -> None:
    from mpaas.api import KINDS
    from mpaas.component import REGISTRY, load

    out = by_kind(children)
    container = out["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    name = container["args"][0]
    assert name in REGISTRY and container["name"] == name
    read = [r["resources"] for r in out["Role"]["rules"] if r["apiGroups"] == ["mpaas.io"]]
    assert read == [[KINDS[kind].plural for kind in load(name).kinds]]


def test_the_chart_lets_the_operator_grant_every_right_a_workload_needs() -> None:
    """Kubernetes lets a Role grant only what its creator holds: the chart's operator rules must cover the Role of
    every workload built for a registered component."""
    import re
    from pathlib import Path

    import yaml

    rbac = (Path(__file__).resolve().parents[2] / "charts/mpaas-operator/templates/rbac.yaml").read_text()
    block = re.search(r'define "mpaas-operator.namespacedRules" -}}\n(.*?)\{\{- end }}', rbac, re.S)
    assert block is not None
    held = {
        (group, resource, verb)
        for rule in yaml.safe_load(block.group(1))
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    workloads = [
        gateway.build(
            "shop",
            "prod",
            spec(
                apps=[
                    {
                        "appId": "A",
                        "workspaceId": "w",
                        "credentialsSecretRef": {"name": "k"},
                        "signature": {"algorithm": "HmacSha256"},
                    }
                ]
            ),
            image="i",
            pull_policy="IfNotPresent",
        ),
        link.build("chat", "ns", LinkSettings(port=9443, replicas=1), image="i", pull_policy="IfNotPresent"),
        push.build(
            "ios", "ns", apns_channel(), image="i", pull_policy="P", redis_url="redis://r", kafka_url="kafka://k"
        ),
    ]
    for children in workloads:
        for rule in by_kind(children)["Role"]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert (group, resource, verb) in held, f"the chart's operator cannot grant {verb} {resource}"


def apns_channel(**fields: Any) -> PushChannelSpec:
    return PushChannelSpec.model_validate(
        {
            "appId": "SHOP",
            "type": "APNs",
            "credentialsSecretRef": {"name": "apns-creds"},
            "apns": {"teamId": "TEAM123456", "keyId": "KEY1234567", "topic": "com.shop.app"},
            **fields,
        }
    )


def test_a_vendor_channel_gets_sender_pods_reading_its_channel_alone() -> None:
    out = by_kind(push.build("ios", "ns", apns_channel(), image="i", pull_policy="P", redis_url="redis://r",
                             kafka_url="kafka://k"))  # fmt: skip
    dep = out["Deployment"]
    assert dep["metadata"]["name"] == "push-ios" and dep["spec"]["replicas"] == 1
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["args"] == ["push"]
    assert env["MPAAS_PUSH_CHANNEL"] == "ios" and env["MPAAS_KAFKA_URL"] == "kafka://k"
    assert (env["MPAAS_FANOUT"], env["MPAAS_SCHEDULER"]) == ("false", "false")  # the API pods do those
    rules = {tuple(r["resources"]): r.get("resourceNames") for r in out["Role"]["rules"]}
    assert rules[("pushchannels",)] == ["ios"] and rules[("secrets",)] == ["apns-creds"]
    assert "HorizontalPodAutoscaler" not in out and "PodDisruptionBudget" not in out


@pytest.mark.parametrize(("scaled", "replicas"), [(None, 2), (1, 2), (4, 4), (9, 5)])
def test_lag_scaling_sets_the_sender_replicas_within_the_bounds(scaled: int | None, replicas: int) -> None:
    channel = apns_channel(sender={"replicas": 7, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}})
    out = by_kind(push.build("ios", "ns", channel, image="i", pull_policy="P", redis_url="r", kafka_url="k",
                             replicas=scaled))  # fmt: skip
    assert out["Deployment"]["spec"]["replicas"] == replicas  # spec.sender.replicas is ignored while autoscaling
    assert ("PodDisruptionBudget" in out) is (replicas > 1)
