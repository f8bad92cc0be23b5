"""EventLog: durable, partitioned topics with consumer groups (analytics logs, fan-out jobs, receipts)."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class EventLog(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> Record:
        """Returns once the record is durably accepted (acks=all on Kafka)."""

    @abstractmethod
    def consume(
        self, topic: str, group: str, *, max_records: int | None = None, idle_timeout: float | None = 5.0
    ) -> AsyncIterator[Record]:
        """Records after the group's committed position; stops after `max_records`, or when idle for
        `idle_timeout` seconds (None: never, the group's member stays joined)."""

    @abstractmethod
    def batches(self, topic: str, group: str, *, wait: float, max_records: int = 10_000) -> AsyncIterator[list[Record]]:
        """Endless batches of the records after the group's committed position, each within `wait` seconds:
        an empty one when none came (a consumer that flushes on time learns the time passed), the member stays
        joined meanwhile."""

    @abstractmethod
    async def commit(self, group: str, record: Record) -> None:
        """Mark `record` (and everything before it in its partition) processed for `group`."""

    async def commit_batch(self, group: str, records: list[Record]) -> None:
        """Mark every record of `records` processed: the last one of each partition is committed."""
        last: dict[tuple[str, int], Record] = {}
        for r in records:
            last[(r.topic, r.partition)] = r
        for r in last.values():
            await self.commit(group, r)


class KafkaEventLog(EventLog):
    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._consumers: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            # zstd: a quarter of gzip's CPU (aiokafka's gzip is level 9) and smaller records (docs/benchmarks.md).
            compression_type="zstd",
        )
        try:
            await self._producer.start()
        except BaseException:  # broker unreachable: leave nothing half-started, so start() can be called again
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()
            raise

    async def close(self) -> None:
        for c in list(self._consumers.values()):  # a consumer's own generator may remove it meanwhile
            await c.stop()
        self._consumers.clear()
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> Record:
        assert self._producer is not None, "start() first"
        md = await self._producer.send_and_wait(topic, value, key=key)
        return Record(topic, md.partition, md.offset, key, value)

    async def _join(self, topic: str, group: str) -> AIOKafkaConsumer:
        """A started member of `group` on `topic`: manual commits, from the earliest offset, committed reads."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        self._consumers[group] = consumer
        return consumer

    async def consume(
        self, topic: str, group: str, *, max_records: int | None = None, idle_timeout: float | None = 5.0
    ) -> AsyncIterator[Record]:
        consumer = await self._join(topic, group)
        seen = 0
        try:
            while max_records is None or seen < max_records:
                batch = await consumer.getmany(timeout_ms=int((idle_timeout or 5.0) * 1000))
                if not batch:
                    if idle_timeout is None:
                        continue
                    return
                for tp, msgs in batch.items():
                    for m in msgs:
                        yield Record(tp.topic, tp.partition, m.offset, m.key, m.value)
                        seen += 1
                        if max_records is not None and seen >= max_records:
                            return
        finally:
            self._consumers.pop(group, None)
            await consumer.stop()

    async def batches(
        self, topic: str, group: str, *, wait: float, max_records: int = 10_000
    ) -> AsyncIterator[list[Record]]:
        consumer = await self._join(topic, group)
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=max_records)
                yield [
                    Record(tp.topic, tp.partition, m.offset, m.key, m.value) for tp, msgs in batch.items() for m in msgs
                ]
        finally:
            self._consumers.pop(group, None)
            await consumer.stop()

    async def commit(self, group: str, record: Record) -> None:
        consumer = self._consumers[group]
        await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})


class MemoryEventLog(EventLog):
    """One in-process partition per topic; committed positions per group survive consumer restarts."""

    def __init__(self) -> None:
        self._topics: dict[str, list[Record]] = defaultdict(list)
        self._committed: dict[tuple[str, str], int] = {}
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> Record:
        log = self._topics[topic]
        rec = Record(topic, 0, len(log), key, value)
        log.append(rec)
        async with self._changed:
            self._changed.notify_all()
        return rec

    async def consume(
        self, topic: str, group: str, *, max_records: int | None = None, idle_timeout: float | None = 5.0
    ) -> AsyncIterator[Record]:
        pos = self._committed.get((group, topic), 0)
        seen = 0
        while max_records is None or seen < max_records:
            log = self._topics[topic]
            if pos >= len(log):
                try:
                    async with self._changed:
                        await asyncio.wait_for(self._changed.wait(), idle_timeout or 5.0)
                except TimeoutError:
                    if idle_timeout is None:
                        continue
                    return
                continue
            yield log[pos]
            pos += 1
            seen += 1

    async def batches(
        self, topic: str, group: str, *, wait: float, max_records: int = 10_000
    ) -> AsyncIterator[list[Record]]:
        pos = self._committed.get((group, topic), 0)
        while True:
            log = self._topics[topic]
            if pos >= len(log):
                try:
                    async with self._changed:
                        await asyncio.wait_for(self._changed.wait(), wait)
                except TimeoutError:
                    yield []
                continue
            batch = log[pos : pos + max_records]
            pos += len(batch)
            yield batch

    async def commit(self, group: str, record: Record) -> None:
        key = (group, record.topic)
        self._committed[key] = max(self._committed.get(key, 0), record.offset + 1)
