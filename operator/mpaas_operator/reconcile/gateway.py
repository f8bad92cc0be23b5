"""MpaasGateway: the gateway workload and its status."""

from __future__ import annotations

from typing import Any

from mpaas.api import MPAAS_GATEWAY, InvalidResource
from mpaas.api.gateway import GatewaySpec
from mpaas.kube import KubeClient

from .. import conditions
from ..builders import gateway as builder
from ..builders.common import selector_string
from ..kubeapi import apply_children
from ..settings import SETTINGS
from .applied import summarize, with_lag
from .common import identity, kstatus, report_applied_only, report_invalid, report_workload, workload_conditions


async def reconcile(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    namespace, name, _ = identity(body)
    try:
        spec: GatewaySpec = MPAAS_GATEWAY.parse_spec(body)  # type: ignore[assignment]
        if spec.workers_per_pod > 1 and spec.shared_state is None and not SETTINGS.redis_url:
            raise InvalidResource(
                MPAAS_GATEWAY.kind,
                body,
                "spec.workersPerPod > 1 needs spec.sharedState (or the operator's redis.url): "
                "the workers must share nonces and rate limits",
            )
        if spec.image and not SETTINGS.image_allowed(spec.image):
            raise InvalidResource(
                MPAAS_GATEWAY.kind,
                body,
                f"spec.image {spec.image} is not allowed: this operator runs only "
                f"{SETTINGS.allowed_images or 'its own image repository'} (Helm value allowedImages); "
                "remove spec.image or ask the platform team to allow it",
            )
    except InvalidResource as e:
        await report_invalid(client, MPAAS_GATEWAY, body, e)
        await report_applied_only(client, MPAAS_GATEWAY, body, builder.selector(name))
        return None
    children = builder.build(
        name,
        namespace,
        spec,
        image=SETTINGS.image,
        pull_policy=SETTINGS.image_pull_policy,
        redis_url=SETTINGS.redis_url,
    )
    await apply_children(client, body, children)
    return await report_from(client, body, spec)


async def report_from(client: KubeClient, body: dict[str, Any], spec: GatewaySpec) -> dict[str, Any] | None:
    namespace, name, generation = identity(body)

    def compute(
        deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ready, reconciling, progress, counts = workload_conditions(deployment)
        applied = summarize(pods, MPAAS_GATEWAY.kind, namespace, name, generation)
        ready, reconciling, progress, reason = with_lag(applied, ready, reconciling, progress)
        conds = [
            *kstatus(ready, reconciling=reconciling, progress=progress, reason=reason),
            shared_state_condition(spec),
        ]
        fields = {
            **counts,
            **applied.fields(),
            "selector": selector_string(builder.selector(body["metadata"]["name"])),
            "apiCount": len(spec.apis),
        }
        return conds, fields

    return await report_workload(client, MPAAS_GATEWAY, body, builder.child_name(name), builder.selector(name), compute)


async def refresh(client: KubeClient, body: dict[str, Any]) -> None:
    """Recompute status after the Deployment changed (pods became ready, scaled, ...)."""
    try:
        spec: GatewaySpec = MPAAS_GATEWAY.parse_spec(body)  # type: ignore[assignment]
    except InvalidResource:  # the InvalidSpec condition stays until the spec is fixed
        await report_applied_only(client, MPAAS_GATEWAY, body, builder.selector(body["metadata"]["name"]))
        return
    await report_from(client, body, spec)


def shared_state_condition(spec: GatewaySpec) -> dict[str, Any]:
    """Degraded=True when several pods keep nonces and rate limits each: a replay is accepted by another pod."""
    pods = spec.autoscaling.max_replicas if spec.autoscaling else spec.replicas
    if pods > 1 and spec.shared_state is None and not SETTINGS.redis_url:
        return conditions.condition(
            "Degraded",
            True,
            "NoSharedState",
            f"up to {pods} pods keep nonces and rate-limit buckets each: a request replayed to another pod is "
            "accepted and each pod allows the full rate; set spec.sharedState or the operator's redis.url",
        )
    return conditions.condition("Degraded", False, "SharedState" if pods > 1 else "SinglePod", "")
