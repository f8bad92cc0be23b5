"""Operator start-up: kopf settings, the shared API client, and `run()` for `mpaas operator`."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from typing import Any

import kopf

from mpaas.delivery.reports import counts_prefix
from mpaas.kube import KubeClient, ResourceType
from mpaas.service import setup_logging
from mpaas.stores import Counters, ObjectStore, RedisCounters, open_objectstore
from mpaas.stores.redis_common import connect_redis

from . import diff_builds, handlers, metrics, push_stats
from .builders.common import selector_string
from .releases import CLUSTER_KOPF_PEERINGS, KOPF_PEERINGS, RELEASES, Peering
from .settings import SETTINGS

log = logging.getLogger(__name__)

# This replica's key in the peering object, given to kopf, so the DeliveryTask loop can find its own entry.
IDENTITY = f"{os.environ.get('POD_NAME') or socket.gethostname()}/{secrets.token_hex(6)}"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Active/standby: every replica joins one peering; the highest priority works, the others pause.
    # Equal priorities freeze everyone, so each process draws its own. A short lifetime makes a dead
    # leader's entry expire in seconds (kopf then touches every second): the takeover after a crash.
    settings.peering.name = SETTINGS.peering
    settings.peering.standalone = SETTINGS.standalone
    settings.peering.mandatory = not SETTINGS.standalone
    settings.peering.lifetime = SETTINGS.peering_lifetime_seconds
    settings.peering.priority = SETTINGS.priority if SETTINGS.priority is not None else random.randint(1, 2**31 - 1)
    settings.peering.stealth = False
    # Keep kopf's bookkeeping in annotations under our group, not in our status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.mpaas.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.mpaas.io", key="last-handled-configuration"
    )
    # No handler needs one (handlers.py); kopf removes this one from resources an older version marked.
    settings.persistence.finalizer = "operator.mpaas.io/finalizer"
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.posting.enabled = False  # the operator posts its own Events (events.py), folded like client-go's
    settings.execution.max_workers = 8
    # Only the pods of the workloads the operator runs, filtered by the API server: not every pod in the cluster.
    settings.watching.label_selectors["", "v1", "pods"] = selector_string(handlers.MANAGED)
    if SETTINGS.metrics_port:
        memo.metrics = await metrics.serve("0.0.0.0", SETTINGS.metrics_port)
    memo.kube = KubeClient()
    if not SETTINGS.standalone:
        await check_peering(memo.kube, settings.peering.name, SETTINGS.watched_namespaces())
    peering = Peering(
        memo.kube,
        name=settings.peering.name,
        identity=IDENTITY,
        priority=settings.peering.priority,
        namespaces=SETTINGS.watched_namespaces(),
        standalone=SETTINGS.standalone,
    )
    RELEASES.start(
        memo.kube,
        object_store(),
        peering,
        SETTINGS.watched_namespaces(),
        delivery_counters(),
        diff_limits=diff_builds.Limits(
            SETTINGS.diff_max_bytes, SETTINGS.diff_max_memory, SETTINGS.diff_timeout_seconds
        ),
        link_redis=link_redis(),
        push_figures=push_figures(),
    )
    log.info(
        "operator starting: %s, priority %s, image %s",
        "standalone" if SETTINGS.standalone else f"peering {settings.peering.name}",
        settings.peering.priority,
        SETTINGS.image,
    )


def object_store() -> ObjectStore | None:
    if not SETTINGS.objects_url:
        return None
    try:
        return open_objectstore(
            SETTINGS.objects_url, access_key=SETTINGS.objects_access_key, secret_key=SETTINGS.objects_secret_key
        )
    except ValueError as e:
        raise kopf.PermanentError(f"MPAAS_OBJECTS_URL: {e}") from None


def push_figures() -> push_stats.PushStats | None:
    """The vendor channels' queue lag and totals (push's Kafka and Redis), when the operator has push's Kafka."""
    url = SETTINGS.kafka_url
    if not url:
        return None
    if not url.startswith("kafka://"):
        raise kopf.PermanentError("MPAAS_OPERATOR_KAFKA_URL: push's Kafka, kafka://host:port[,host:port]")
    return push_stats.PushStats(url.removeprefix("kafka://"))


def link_redis() -> Any:
    """The link pods' Redis (the operator gives them MPAAS_OPERATOR_REDIS_URL): their figures, for status."""
    url = SETTINGS.redis_url or ""
    return connect_redis(url) if url.startswith(("redis://", "rediss://", "unix://")) else None


def delivery_counters() -> Counters | None:
    """The delivery component's counts (mpaas.delivery.reports), read from its Redis."""
    url = SETTINGS.delivery_redis_url
    if not url:
        return None
    if url.startswith("memory:"):  # one process's own: nothing the components count is there
        log.warning("MPAAS_REDIS_URL is %s: DeliveryTask counts are not read", url)
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise kopf.PermanentError("MPAAS_REDIS_URL: the delivery component's Redis, redis://host:port/db")
    return RedisCounters(url, prefix=counts_prefix(SETTINGS.delivery_redis_prefix))


async def check_peering(client: KubeClient, name: str, namespaces: list[str]) -> None:
    """Refuse to start without the peering object: two replicas that cannot see each other would both work.

    The chart creates it (and `helm uninstall` removes it); the operator never does.
    """
    wanted: list[tuple[ResourceType, str | None]] = [(KOPF_PEERINGS, ns) for ns in namespaces]
    for rt, ns in wanted or [(CLUSTER_KOPF_PEERINGS, None)]:
        if await client.get(rt, ns, name) is None:
            kind = "KopfPeering" if ns else "ClusterKopfPeering"
            where = f" in namespace {ns}" if ns else ""
            raise kopf.PermanentError(
                f"{kind} {name}{where} not found: install the operator with its chart (which creates it), "
                f"create it (apiVersion kopf.dev/v1, kind {kind}), or run one replica with "
                "MPAAS_OPERATOR_STANDALONE=true"
            )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    counters = RELEASES.counters
    await RELEASES.stop()
    if counters is not None:
        await counters.close()
    await memo.kube.close()
    if getattr(memo, "metrics", None) is not None:
        await memo.metrics.cleanup()


@kopf.on.probe(id="apiserver")
async def apiserver_probe(memo: kopf.Memo, **_: Any) -> str:
    return "ok" if getattr(memo, "kube", None) is not None else "starting"


def run() -> int:
    setup_logging(SETTINGS.log_level, SETTINGS.log_format)
    namespaces = SETTINGS.watched_namespaces()
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=f"http://0.0.0.0:{SETTINGS.health_port}/healthz",
            memo=kopf.Memo(),
            identity=IDENTITY,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        )
    )
    return 0
