"""DeliveryTask: validation and status. (Stage progression and package checks: the delivery component.)"""

from __future__ import annotations

from typing import Any

from mpaas.api import DELIVERY_TASK, InvalidResource
from mpaas.api.delivery import DeliveryTaskSpec
from mpaas.kube import KubeClient

from .. import conditions
from .common import report, report_invalid


async def reconcile(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        spec: DeliveryTaskSpec = DELIVERY_TASK.parse_spec(body)  # type: ignore[assignment]
    except InvalidResource as e:
        await report_invalid(client, DELIVERY_TASK, body, e)
        return None
    status = body.get("status") or {}
    stage = int(status.get("currentStage") or 0)
    percent = spec.stages[min(stage, len(spec.stages) - 1)].percent if spec.stages else spec.targeting.percent
    if spec.rollback:
        ready = conditions.condition("Ready", True, "RolledBack", "the release is withdrawn; clients get no update")
        percent = 0
    elif spec.paused:
        ready = conditions.condition("Ready", True, "Paused", f"held at {percent}%")
    else:
        ready = conditions.condition("Ready", True, "Accepted", f"releasing to {percent}% of the targeted devices")
    return await report(client, DELIVERY_TASK, body, [ready], currentStage=stage, currentPercent=percent)
