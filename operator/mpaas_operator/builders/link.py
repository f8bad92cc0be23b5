"""PushChannel of type Link -> the long-connection workload (RBAC, Deployment, Service, HPA, PDB)."""

from __future__ import annotations

from mpaas.api.push import LinkSettings
from mpaas.component import load

from .common import Children, Workload, reads_of, selector_labels, workload_children

LINK = load("link")
COMPONENT = LINK.name


def child_name(channel: str) -> str:
    return f"link-{channel}"


def selector(channel: str) -> dict[str, str]:
    return selector_labels(COMPONENT, channel)


def build(name: str, namespace: str, link: LinkSettings, *, image: str, pull_policy: str) -> Children:
    return workload_children(
        Workload(
            component=COMPONENT,
            child_name=child_name(name),
            namespace=namespace,
            instance=name,
            owner_kind="PushChannel",
            image=image,
            pull_policy=pull_policy,
            port=link.port,
            service_port=link.port,
            env={
                "MPAAS_PUSH_CHANNEL": name,
                "MPAAS_CONFIG_SOURCE": "kube",
                "MPAAS_LINK_MAX_CONNECTIONS": str(link.max_connections_per_pod),
            },
            resources=link.resources.wire(),
            replicas=link.replicas,
            autoscaling=link.autoscaling,
            reads=reads_of(LINK),
        )
    )
