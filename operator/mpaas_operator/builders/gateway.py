"""MpaasGateway -> the gateway workload (RBAC, Deployment, Service, HPA, PDB)."""

from __future__ import annotations

from mpaas.api.gateway import GatewaySpec
from mpaas.component import load

from .common import Children, Workload, reads_of, selector_labels, workload_children

GATEWAY = load("gateway")
COMPONENT = GATEWAY.name
PORT = GATEWAY.port
SERVICE_PORT = 80


def child_name(gateway: str) -> str:
    return f"mgw-{gateway}"


def selector(gateway: str) -> dict[str, str]:
    return selector_labels(COMPONENT, gateway)


def build(
    name: str, namespace: str, spec: GatewaySpec, *, image: str, pull_policy: str, redis_url: str | None = None
) -> Children:
    """`redis_url`: the operator's default shared state, used when the spec names none."""
    env = {"MPAAS_GATEWAY_NAME": name, "MPAAS_CONFIG_SOURCE": "kube", "MPAAS_WORKERS": str(spec.workers_per_pod)}
    secret_env: dict[str, tuple[str, str]] = {}
    shared = spec.shared_state
    if shared is not None and shared.url_secret_ref is not None:
        secret_env["MPAAS_REDIS_URL"] = (shared.url_secret_ref.name, shared.url_secret_ref.key)
    elif shared is not None and shared.url:
        env["MPAAS_REDIS_URL"] = shared.url
    elif redis_url:
        env["MPAAS_REDIS_URL"] = redis_url
    return workload_children(
        Workload(
            component=COMPONENT,
            child_name=child_name(name),
            namespace=namespace,
            instance=name,
            owner_kind="MpaasGateway",
            image=spec.image or image,
            pull_policy=pull_policy,
            port=PORT,
            service_port=SERVICE_PORT,
            env=env,
            secret_env=secret_env,
            resources=spec.resources.wire(),
            replicas=spec.replicas,
            autoscaling=spec.autoscaling,
            reads=reads_of(GATEWAY),
            reads_only=[name],  # its own resource, watched by name
            reads_secrets=spec.secret_names(),
        )
    )
