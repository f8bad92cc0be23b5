"""The Argo CD health script the docs ship (docs/gitops/argocd-health.lua), run in Lua on DeliveryTask statuses."""

from typing import Any

import pytest

from conftest import argocd_health

pytestmark = pytest.mark.unit


def task(ready: str, reason: str) -> dict[str, Any]:
    conditions = [
        {"type": "Ready", "status": ready, "reason": reason, "message": "m"},
        {"type": "Reconciling", "status": "False", "reason": "Reconciled"},
        {"type": "Stalled", "status": "False", "reason": "Reconciled"},
    ]
    return {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": conditions}}


@pytest.mark.parametrize(
    ("ready", "reason", "health"),
    [
        ("True", "Serving", "Healthy"),
        ("True", "Paused", "Suspended"),
        ("True", "AutoPaused", "Degraded"),
        ("False", "RolledBack", "Suspended"),
        ("False", "PackageNotVerified", "Progressing"),
        ("False", "NotImplemented", "Suspended"),
    ],
)
def test_delivery_task_health(ready: str, reason: str, health: str) -> None:
    assert argocd_health(task(ready, reason))[0] == health
