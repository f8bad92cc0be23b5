"""Status pieces every kind shares."""

from __future__ import annotations

import logging
from typing import Any

from mpaas.api import InvalidResource, Kind
from mpaas.kube import KubeClient

from .. import conditions
from ..kubeapi import patch_status

log = logging.getLogger(__name__)


def identity(body: dict[str, Any]) -> tuple[str, str, int]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], int(meta.get("generation") or 0)


def previous_conditions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return (body.get("status") or {}).get("conditions") or []


async def report_invalid(client: KubeClient, kind: Kind, body: dict[str, Any], err: InvalidResource) -> None:
    """Ready=False/InvalidSpec with what to fix. Children stay as the last valid spec left them."""
    namespace, name, generation = identity(body)
    log.warning("%s %s/%s has an invalid spec: %s", kind.kind, namespace, name, err.detail)
    conds = conditions.merge(
        previous_conditions(body),
        [
            conditions.condition("Ready", False, "InvalidSpec", err.detail),
        ],
        generation,
    )
    await patch_status(client, kind, namespace, name, {"observedGeneration": generation, "conditions": conds})


async def report(
    client: KubeClient, kind: Kind, body: dict[str, Any], conds: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    namespace, name, generation = identity(body)
    status = {
        "observedGeneration": generation,
        "conditions": conditions.merge(previous_conditions(body), conds, generation),
        **fields,
    }
    await patch_status(client, kind, namespace, name, status)
    return status


def workload_conditions(deployment: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Ready and Progressing from a Deployment's status, plus its replica counts."""
    if deployment is None:
        return [
            conditions.condition("Ready", False, "DeploymentMissing", "waiting for the Deployment"),
            conditions.condition("Progressing", True, "Creating", ""),
        ], {}
    spec, st = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = int(spec.get("replicas") or 0)
    counts = {
        "replicas": int(st.get("replicas") or 0),
        "readyReplicas": int(st.get("readyReplicas") or 0),
        "updatedReplicas": int(st.get("updatedReplicas") or 0),
    }
    seen = int(st.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0)
    settled = seen and counts["updatedReplicas"] >= desired and counts["replicas"] == desired
    msg = f"{counts['readyReplicas']}/{desired} replicas ready"
    if desired == 0:
        ready = conditions.condition("Ready", True, "ScaledToZero", "0 replicas requested")
    elif settled and counts["readyReplicas"] >= desired:
        ready = conditions.condition("Ready", True, "Available", msg)
    elif counts["readyReplicas"] > 0:
        ready = conditions.condition("Ready", False, "Progressing", msg)
    else:
        ready = conditions.condition("Ready", False, "Unavailable", msg)
    progressing = conditions.condition(
        "Progressing",
        not (settled and counts["readyReplicas"] >= desired),
        "RolloutInProgress" if not settled else "Settled",
        msg,
    )
    return [ready, progressing], counts
