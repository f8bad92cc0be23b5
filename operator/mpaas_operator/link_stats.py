"""Figures of the Link PushChannels, from what their pods publish in the link Redis (mpaas.link.pods): the
connections they hold and the messages they send per second, written into each channel's status.

Each link pod refreshes its record every 2 s (`{prefix}pods:{namespace}/{channel}:{pod}`, kept 10 s): its
connections and the messages it has sent since it started. The operator's releases loop reads them every
STATS_SECONDS and writes `status.connections`, `status.deliveredPerSecond` (from the growth of each pod's
counter since the last read) and `status.linkPods` (pods that reported), when they changed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mpaas.api import PUSH_CHANNEL
from mpaas.api.push import ChannelType
from mpaas.kube import KubeClient

from .kubeapi import patch_status

log = logging.getLogger(__name__)

STATS_SECONDS = 15.0
PREFIX = "link:"  # the link pods' MPAAS_REDIS_PREFIX (the builder sets none)


class LinkStats:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}  # channel -> pod -> (sent, at)
        self._failing = False

    async def refresh(self, client: KubeClient, redis: Any, namespaces: list[str]) -> None:
        channels: list[dict[str, Any]] = []
        wanted: list[str | None] = [*namespaces] or [None]
        for ns in wanted:
            channels += (await client.list(PUSH_CHANNEL.resource, ns)).get("items") or []
        for body in channels:
            meta = body.get("metadata") or {}
            if (body.get("spec") or {}).get("type") != ChannelType.LINK or meta.get("deletionTimestamp"):
                continue
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            try:
                fields = await self._figures(redis, namespace, name)
                self._failing = False
            except Exception as e:  # Redis away: the figures stay as they were
                if not self._failing:
                    log.warning("Link channel figures not read (the link Redis): %r", e)
                self._failing = True
                return
            status = body.get("status") or {}
            if any(status.get(k) != v for k, v in fields.items()):
                await patch_status(client, PUSH_CHANNEL, namespace, name, fields)

    async def _figures(self, redis: Any, namespace: str, name: str) -> dict[str, int]:
        prefix = f"{PREFIX}pods:{namespace}/{name}:"
        names = sorted(n.decode() if isinstance(n, bytes) else n for n in await redis.smembers(f"{prefix}names"))
        records = await redis.mget([f"{prefix}{n}" for n in names]) if names else []
        seen = self._seen.setdefault((namespace, name), {})
        connections = pods = 0
        rate = 0.0
        now: dict[str, tuple[int, float]] = {}
        for pod, raw in zip(names, records, strict=True):
            if raw is None:
                continue
            try:
                r = json.loads(raw)
                sent, at, held = int(r.get("sent", 0)), float(r.get("at", time.time())), int(r["connections"])
            except (ValueError, KeyError, TypeError):
                continue
            pods += 1
            connections += held
            before = seen.get(pod)
            if before is not None and at > before[1] and sent >= before[0]:  # a restarted pod counts from 0 again
                rate += (sent - before[0]) / (at - before[1])
            now[pod] = (sent, at)
        self._seen[(namespace, name)] = now
        return {"connections": connections, "deliveredPerSecond": round(rate), "linkPods": pods}
