"""Figures and scaling of the vendor PushChannels: every STATS_SECONDS the operator reads each channel's queue
lag from Kafka (jobs in its topic past its senders' committed offsets) and its totals from push's Redis (what
its senders count: `push:ch:{namespace}/{name}`), writes `status.queueLag`, `sent` and `failed` when they
changed, and, for a channel with `sender.autoscaling`, sets its sender pods to
ceil(lag / targetLagPerReplica) within the bounds (one pod fewer per pass at most, so a short lull does not
empty the Deployment). It also asks each vendor again about the channel's credentials every CHECK_SECONDS.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from mpaas.api import PUSH_CHANNEL
from mpaas.api.push import ChannelType, PushChannelSpec
from mpaas.kube import KubeClient
from mpaas.push.fanout import Topics

from .kubeapi import patch_status
from .reconcile import push_channel

log = logging.getLogger(__name__)

STATS_SECONDS = 15.0
PREFIX = "push:"  # the sender pods' MPAAS_REDIS_PREFIX (the builder sets none)
TOPICS = Topics()  # the sender pods' topics and groups (the builder sets none)


class Lag:
    """Jobs waiting per channel, from the broker."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def _open(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await consumer.start()
            try:
                await admin.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def of(self, channel: tuple[str, str]) -> int:
        consumer, admin = await self._open()
        topic = TOPICS.vendor_topic(channel)
        (described,) = await admin.describe_topics([topic])
        partitions = (
            {p["partition"] for p in described.get("partitions") or []} if not described["error_code"] else set()
        )
        if not partitions:
            return 0  # nothing was ever sent through the channel
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(TOPICS.sender_group_of(channel), partitions=tps)
        done = {tp: (meta.offset if meta is not None and meta.offset >= 0 else 0) for tp, meta in committed.items()}
        return sum(max(end - done.get(tp, 0), 0) for tp, end in ends.items())

    async def close(self) -> None:
        for part in (self._consumer, self._admin):
            if part is not None:
                with contextlib.suppress(Exception):
                    await (part.stop() if isinstance(part, AIOKafkaConsumer) else part.close())
        self._consumer = self._admin = None


class PushStats:
    def __init__(self, bootstrap: str) -> None:
        self.lag = Lag(bootstrap) if bootstrap else None
        self._failing = False

    async def refresh(self, client: KubeClient, redis: Any, namespaces: list[str]) -> None:
        channels: list[dict[str, Any]] = []
        wanted: list[str | None] = [*namespaces] or [None]
        for ns in wanted:
            channels += (await client.list(PUSH_CHANNEL.resource, ns)).get("items") or []
        for body in channels:
            meta = body.get("metadata") or {}
            if (body.get("spec") or {}).get("type") in (None, ChannelType.LINK) or meta.get("deletionTimestamp"):
                continue
            try:
                spec: PushChannelSpec = PUSH_CHANNEL.parse_spec(body)  # type: ignore[assignment]
            except Exception:  # invalid: the reconcile says so
                continue
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            await self._credentials(client, body, namespace, name, spec)
            try:
                fields = await self._figures(redis, namespace, name)
                self._failing = False
            except Exception as e:  # Kafka or Redis away: the figures stay as they were
                if not self._failing:
                    log.warning("vendor channel figures not read (push's Kafka or Redis): %r", e)
                self._failing = True
                if self.lag is not None:
                    await self.lag.close()
                return
            status = body.get("status") or {}
            if any(status.get(k) != v for k, v in fields.items()):
                await patch_status(client, PUSH_CHANNEL, namespace, name, fields)
            if spec.sender is not None and spec.sender.autoscaling is not None and "queueLag" in fields:
                await self._scale(client, body, namespace, name, spec, fields["queueLag"])

    async def _figures(self, redis: Any, namespace: str, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.lag is not None:
            out["queueLag"] = await self.lag.of((namespace, name))
        if redis is not None:
            row = await redis.hgetall(f"{PREFIX}ch:{namespace}/{name}")
            totals = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in row.items()}
            out["sent"], out["failed"] = totals.get("sent", 0), totals.get("failed", 0)
        return out

    async def _scale(
        self, client: KubeClient, body: dict[str, Any], namespace: str, name: str, spec: PushChannelSpec, lag: int
    ) -> None:
        assert spec.sender is not None and spec.sender.autoscaling is not None
        scale = spec.sender.autoscaling
        want = min(max(math.ceil(lag / scale.target_lag_per_replica), scale.min_replicas), scale.max_replicas)
        now = push_channel.SCALED.get((namespace, name), scale.min_replicas)
        if want < now:
            want = now - 1  # down one pod a pass
        if want != now or (namespace, name) not in push_channel.SCALED:
            push_channel.SCALED[(namespace, name)] = want
            if want != now:
                log.info("PushChannel %s/%s: %d jobs waiting, %d sender pods", namespace, name, lag, want)
            await push_channel.reconcile(client, body)

    async def _credentials(
        self, client: KubeClient, body: dict[str, Any], namespace: str, name: str, spec: PushChannelSpec
    ) -> None:
        """Ask the vendor again when due; a changed answer is written into the status at once."""
        if await push_channel.credentials_problem(client, namespace, spec):
            return
        before = push_channel.last_check(namespace, name)
        after = await push_channel.check_credentials(client, namespace, name, spec)
        if before is not None and after != before:
            await push_channel.refresh(client, body)

    async def close(self) -> None:
        if self.lag is not None:
            await self.lag.close()
