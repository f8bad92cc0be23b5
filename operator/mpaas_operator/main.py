"""Operator start-up: kopf settings, the shared API client, and `run()` for `mpaas operator`."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import kopf
from mpaas.kube import KubeClient
from mpaas.service import setup_logging

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import SETTINGS

log = logging.getLogger(__name__)


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
    log.info(
        "operator starting: peering %s, priority %s, image %s",
        settings.peering.name,
        settings.peering.priority,
        SETTINGS.image,
    )


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
