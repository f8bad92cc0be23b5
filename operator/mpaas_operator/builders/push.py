"""PushChannel of a vendor type -> its sender workload (RBAC, Deployment, Service, PDB): push-<name>.

The sender pods run `mpaas push` for that one channel (MPAAS_PUSH_CHANNEL): they consume the channel's jobs
from its Kafka topic and send them through the vendor, with the credentials Secret the channel names. Their
replicas follow `spec.sender` or, with `sender.autoscaling`, the operator's lag scaling (push_stats.py), which
sets the Deployment's replicas itself: there is no HPA, as the lag is a figure of Kafka, not of the pods.
"""

from __future__ import annotations

from mpaas.api import KINDS
from mpaas.api.push import PushChannelSpec, SenderSettings
from mpaas.component import load

from .common import Children, Workload, selector_labels, workload_children

PUSH = load("push")
CHANNEL = "PushChannel"
COMPONENT = PUSH.name


def child_name(channel: str) -> str:
    return f"push-{channel}"


def selector(channel: str) -> dict[str, str]:
    return selector_labels(COMPONENT, channel)


def build(
    name: str,
    namespace: str,
    spec: PushChannelSpec,
    *,
    image: str,
    pull_policy: str,
    redis_url: str,
    kafka_url: str,
    replicas: int | None = None,
) -> Children:
    """`redis_url`, `kafka_url`: the push stores (the operator's MPAAS_OPERATOR_REDIS_URL and _KAFKA_URL);
    `replicas`: what lag scaling decided last, when the channel autoscales."""
    sender = spec.sender or SenderSettings()
    env = {
        "MPAAS_PUSH_CHANNEL": name,
        "MPAAS_CONFIG_SOURCE": "kube",
        "MPAAS_REDIS_URL": redis_url,
        "MPAAS_KAFKA_URL": kafka_url,
        "MPAAS_FANOUT": "false",
        "MPAAS_SCHEDULER": "false",
    }
    scale = sender.autoscaling
    count = sender.replicas if scale is None else min(max(replicas or scale.min_replicas, scale.min_replicas),
                                                      scale.max_replicas)  # fmt: skip
    ref = spec.credentials_secret_ref
    return workload_children(
        Workload(
            component=COMPONENT,
            child_name=child_name(name),
            namespace=namespace,
            instance=name,
            owner_kind="PushChannel",
            image=image,
            pull_policy=pull_policy,
            port=PUSH.port,
            service_port=PUSH.port,
            env=env,
            resources=sender.resources.wire(),
            replicas=count,
            autoscaling=None,
            reads=[KINDS[CHANNEL].plural],  # a sender pod reads its channel alone, no MpaasGateway
            reads_only=[name],  # its own channel, watched by name
            reads_secrets=[ref.name] if ref is not None else [],
        )
    )
