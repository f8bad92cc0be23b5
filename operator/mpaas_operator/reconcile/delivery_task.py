"""DeliveryTask: validation and status.

Nothing serves releases yet (the delivery component serves health only), so a
valid task reports Ready=False with reason NotImplemented and what it would
release; stage progression and package checks come with the delivery component.
"""

from __future__ import annotations

from typing import Any

from mpaas.api import DELIVERY_TASK, InvalidResource
from mpaas.api.delivery import DeliveryTaskSpec
from mpaas.kube import KubeClient

from .. import conditions
from .common import NOT_IMPLEMENTED, kstatus, report, report_invalid


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
        what = "withdrawn: clients would get no update"
        percent = 0
    elif spec.paused:
        what = f"paused at {percent}% of the targeted devices"
    else:
        what = f"would release to {percent}% of the targeted devices"
    ready = conditions.condition(
        "Ready", False, NOT_IMPLEMENTED, f"valid; {what}; no delivery component serves releases yet"
    )
    return await report(client, DELIVERY_TASK, body, kstatus(ready), currentStage=stage, currentPercent=percent)
