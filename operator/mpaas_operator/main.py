"""Operator start-up: kopf settings, the shared API client, and `run()` for `mpaas operator`."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import kopf

from mpaas.kube import ApiError, KubeClient, ResourceType
from mpaas.service import setup_logging

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import SETTINGS

log = logging.getLogger(__name__)

CLUSTER_KOPF_PEERINGS = ResourceType("kopf.dev", "v1", "clusterkopfpeerings")
KOPF_PEERINGS = ResourceType("kopf.dev", "v1", "kopfpeerings")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Active/standby: every replica joins one peering; the highest priority works, the others pause.
    # Equal priorities freeze everyone, so each process draws its own.
    settings.peering.name = SETTINGS.peering
    settings.peering.mandatory = True
    settings.peering.priority = SETTINGS.priority if SETTINGS.priority is not None else random.randint(1, 2**31 - 1)
    settings.peering.stealth = False
    # Keep kopf's bookkeeping in annotations under our group, not in our status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.mpaas.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.mpaas.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "operator.mpaas.io/finalizer"
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    memo.kube = KubeClient()
    await ensure_peering(memo.kube, settings.peering.name, SETTINGS.namespace)
    log.info(
        "operator starting: peering %s, priority %s, image %s",
        settings.peering.name,
        settings.peering.priority,
        SETTINGS.image,
    )


async def ensure_peering(client: KubeClient, name: str, namespace: str | None) -> None:
    """Create the peering object replicas meet on, if it is not there yet (kopf does not)."""
    if namespace:
        rt, obj = (
            KOPF_PEERINGS,
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name, "namespace": namespace}},
        )
    else:
        rt, obj = (
            CLUSTER_KOPF_PEERINGS,
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}},
        )
    if await client.get(rt, namespace, name) is None:
        try:
            await client.create(rt, obj)
            log.info("created %s %s", obj["kind"], name)
        except ApiError as e:
            if e.status != 409:  # another replica was faster
                raise


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()


@kopf.on.probe(id="apiserver")
async def apiserver_probe(memo: kopf.Memo, **_: Any) -> str:
    return "ok" if getattr(memo, "kube", None) is not None else "starting"


def run() -> int:
    setup_logging(SETTINGS.log_level, SETTINGS.log_format)
    namespaces = [SETTINGS.namespace] if SETTINGS.namespace else None
    asyncio.run(
        kopf.operator(
            clusterwide=namespaces is None,
            namespaces=namespaces or (),
            liveness_endpoint=f"http://0.0.0.0:{SETTINGS.health_port}/healthz",
            memo=kopf.Memo(),
        )
    )
    return 0
