"""PushChannel of type Link -> the long-connection workload (RBAC, Deployment, Service, HPA, PDB).

The pods listen on two ports: `link.port` for devices' WebSockets (and /dispatch), and the component's HTTP
port for health, metrics and the delivery API push and sync call. Both are on the Service.
"""

from __future__ import annotations

from typing import Any

from mpaas.api.push import LinkSettings
from mpaas.component import load

from .common import PRE_STOP_SECONDS, Children, Workload, reads_of, selector_labels, workload_children

LINK = load("link")
COMPONENT = LINK.name
CONNECTIONS_METRIC = "mpaas_link_connections"
DEFAULT_TARGET_SHARE = 0.7  # of maxConnectionsPerPod, when no target is given


def child_name(channel: str) -> str:
    return f"link-{channel}"


def selector(channel: str) -> dict[str, str]:
    return selector_labels(COMPONENT, channel)


def connections_metric(link: LinkSettings) -> list[dict[str, Any]]:
    target = link.target_connections_per_pod or max(1, int(link.max_connections_per_pod * DEFAULT_TARGET_SHARE))
    return [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": CONNECTIONS_METRIC},
                "target": {"type": "AverageValue", "averageValue": str(target)},
            },
        }
    ]


def build(
    name: str,
    namespace: str,
    link: LinkSettings,
    *,
    image: str,
    pull_policy: str,
    redis_url: str | None = None,
    custom_metrics: bool = False,
) -> Children:
    """`redis_url`: the inboxes' and routes' Redis (the operator's MPAAS_OPERATOR_REDIS_URL); `custom_metrics`: the
    cluster serves custom.metrics.k8s.io, so the autoscaler follows connections per pod instead of CPU."""
    env = {
        "MPAAS_PUSH_CHANNEL": name,
        "MPAAS_CONFIG_SOURCE": "kube",
        "MPAAS_LINK_PORT": str(link.port),
        "MPAAS_LINK_MAX_CONNECTIONS": str(link.max_connections_per_pod),
        "MPAAS_DRAIN_SECONDS": str(link.drain_seconds),
    }
    if redis_url:
        env["MPAAS_REDIS_URL"] = redis_url
    ref = link.token_secret_ref
    children = workload_children(
        Workload(
            component=COMPONENT,
            child_name=child_name(name),
            namespace=namespace,
            instance=name,
            owner_kind="PushChannel",
            image=image,
            pull_policy=pull_policy,
            port=LINK.port,
            service_port=LINK.port,
            env=env,
            field_env={"POD_IP": "status.podIP"},
            extra_ports=[("link", link.port)],
            resources=link.resources.wire(),
            replicas=link.replicas,
            autoscaling=link.autoscaling,
            reads=reads_of(LINK),
            reads_only=[name],  # its own channel, watched by name
            reads_secrets=[ref.name] if ref is not None else [],
            grace_seconds=PRE_STOP_SECONDS + link.drain_seconds + 10,
            hpa_metrics=connections_metric(link) if custom_metrics else None,
        )
    )
    if link.ingress is not None:
        children.apply.append(ingress(child_name(name), namespace, children, link))
    else:
        children.absent.append(("Ingress", child_name(name)))
    return children


def ingress(name: str, namespace: str, children: Children, link: LinkSettings) -> dict[str, Any]:
    """Devices' WebSockets (/v1/link) and /dispatch, to the Service's link port."""
    assert link.ingress is not None
    service = next(c for c in children.apply if c["kind"] == "Service")
    paths = [
        {"path": p, "pathType": "Prefix", "backend": {"service": {"name": name, "port": {"name": "link"}}}}
        for p in ("/v1/link", "/dispatch")
    ]
    spec: dict[str, Any] = {"rules": [{"host": link.ingress.host, "http": {"paths": paths}}]}
    if link.ingress.class_name:
        spec["ingressClassName"] = link.ingress.class_name
    if link.ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [link.ingress.host], "secretName": link.ingress.tls_secret_name}]
    metadata = {**service["metadata"], "annotations": dict(link.ingress.annotations)}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}
