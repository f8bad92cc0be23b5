"""The vendor senders: jobs from the vendor topic through each channel's client (docs/push.md, "Delivery").

A job is one message for up to 500 (device, token) pairs of one channel. The sender claims each pair before
sending (state.claim_devices): a pair another sender has in flight waits for that claim to end, a pair sent
already is skipped, so a job done twice (a sender killed before its commit) sends nothing twice, except the
requests in flight at the moment of the kill, which the vendor may have taken: those are sent again once
their claim lapses, with the same collapse id (apns-collapse-id, FCM collapse_key...), so the device shows one.

Per channel: `messagesPerSecond` as a token bucket shared by every pod (the hot store), retries with backoff
on RateLimited and Retry (the vendor's Retry-After when it gives one), and no send at all while a daily quota
is used up. A token the vendor calls dead is removed from the registry and listed with the failed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from prometheus_client import Counter

from ..stores import EventLog, HotStore, Record
from .config import PENDING, PushConfig, VendorChannel
from .fanout import NOW_OR_NEVER_MS, NotYet, Topics
from .feedback import Feedback
from .messages import PushMessage
from .receipts import callback_fields
from .registry import Registry
from .state import CLAIM_LEASE_SECONDS, Failed, PushState, sent_and_failed
from .vendors.base import Notification, Outcome, SendResult

log = logging.getLogger("mpaas.push")

SENT = Counter("mpaas_push_vendor_messages_total", "Messages through vendor channels", ["channel", "result"])
ATTEMPTS = 4  # sends of one pair on RateLimited/Retry before it counts as failed
MAX_BACKOFF = 30.0
CONCURRENCY = 16  # jobs at once in one process
CLAIM_GROUP = 32  # pairs claimed, sent and marked together


def notification(m: PushMessage, channel: VendorChannel | None = None) -> Notification:
    """What the vendor client sends; with the fields asking for receipts when the channel's are on."""
    c = m.content
    extra = callback_fields(channel.type, channel.receipt_url, m.message_id) if channel and channel.receipt_url else {}
    return Notification(
        message_id=m.message_id,
        title=c.title,
        body=c.body,
        data=c.data,
        ttl_seconds=max(int(m.expires_ms / 1000 - time.time()), 0) if m.ttl_seconds else 0,
        urgent=m.urgent,
        collapse_key=m.collapse_key or m.message_id,  # a send made twice shows once
        badge=c.badge,
        sound=c.sound,
        category=c.category,
        extra=extra,
    )


def claim_id(device_id: str, token: str) -> str:
    """What a send is claimed by: the device, or the token itself for sends by token (gorush)."""
    return device_id or "t" + hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass
class Job:
    message: PushMessage
    channel: tuple[str, str]
    items: list[tuple[str, str]]  # (device id or "", token)

    @staticmethod
    def parse(raw: bytes) -> Job:
        d = orjson.loads(raw)
        message = PushMessage.from_dict(d["message"])
        return Job(message, (d["channel"][0], d["channel"][1]), [(a, b) for a, b in d["items"]])


class Senders:
    """One consumer per vendor channel (its topic and group), started and stopped as channels come and go; with
    `only`, the one channel a sender pod serves (the operator's push-<name> Deployments)."""

    def __init__(
        self,
        events: EventLog,
        state: PushState,
        registry: Registry,
        hot: HotStore,
        config: Callable[[], PushConfig],
        topics: Topics = Topics(),
        *,
        only: tuple[str, str] | None = None,
    ):
        self.events, self.state, self.registry, self.hot, self.config = events, state, registry, hot, config
        self.topics, self.only = topics, only
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._quota_until: dict[tuple[str, str], float] = {}  # channel -> epoch seconds its daily quota returns
        self.feedback = Feedback()

    def sync(self, config: PushConfig) -> None:
        """Consume the topics of the channels `config` has (of `only`), and no others."""
        wanted = {(c.namespace, c.name) for c in config.channels if self.only in (None, (c.namespace, c.name))}
        for key in [k for k in self._tasks if k not in wanted]:
            self._tasks.pop(key).cancel()
        loop = asyncio.get_running_loop()
        for key in wanted - self._tasks.keys():
            self._tasks[key] = loop.create_task(self._run(key), name=f"push senders {key[0]}/{key[1]}")

    async def stop(self) -> None:
        await self.feedback.close()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self, channel: tuple[str, str]) -> None:
        topic, group = self.topics.vendor_topic(channel), self.topics.sender_group_of(channel)
        while True:
            try:
                async for batch in self.events.batches(topic, group, wait=1.0):
                    if batch:
                        await self._batch(batch)
                        await self.events.commit_batch(group, batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("push senders of %s/%s: %r; joining again in 2 s", *channel, e)
                await asyncio.sleep(2.0)

    async def _batch(self, batch: list[Record]) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(record: Record) -> None:
            async with gate:
                try:
                    job = Job.parse(record.value)
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    log.error("push senders: a job that does not parse is skipped (offset %d): %r", record.offset, e)
                    return
                delay = 0.5
                while True:
                    try:
                        await self.process(job)
                        return
                    except Exception as e:  # a store failure: the job waits, nothing is skipped
                        log.warning("push job of %s failed, again in %.1f s: %r", job.message.message_id, delay, e)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, MAX_BACKOFF)

        await asyncio.gather(*(one(r) for r in batch))

    async def process(self, job: Job) -> None:
        m = job.message
        status = await self.state.status(m.message_id)
        if status is not None and status.state in ("Canceled", "Revoked"):
            return
        channel = self.config().channel(*job.channel)
        if channel is not None and channel.client is None and channel.problem == PENDING:
            raise NotYet(f"the credentials of {job.channel[0]}/{job.channel[1]} are still being read")
        if m.expires_ms + (0 if m.ttl_seconds else NOW_OR_NEVER_MS) <= time.time() * 1000:
            # Its TTL passed while it waited: a vendor would show it now, out of its time.
            await self.state.count(m, {f"{channel.type.value if channel else 'None'}.Expired": len(job.items)})
            return
        pending = list(job.items)
        if m.recalls is not None:  # a recall notice replaces the recalled message where it went this way alone
            sent = await self.state.sent_devices(m.recalls, [claim_id(d, t) for d, t in pending])
            pending = [p for p, was in zip(pending, sent, strict=True) if was]
        looked = True  # the state was just read
        while pending:
            waiting: list[tuple[str, str]] = []
            # Claimed a group at a time, right before sending it: a kill leaves at most the groups in flight
            # claimed and sent but not marked, the only sends a restart can make twice.
            for i in range(0, len(pending), CLAIM_GROUP):
                if not looked and await self._recalled(m.message_id):
                    return  # recalled meanwhile: the rest is not sent
                looked = False
                group = pending[i : i + CLAIM_GROUP]
                claims = await self.state.claim_devices(m.message_id, [claim_id(d, t) for d, t in group])
                mine = [p for p, c in zip(group, claims, strict=True) if c is None]
                waiting += [p for p, c in zip(group, claims, strict=True) if c == "p"]
                if mine:
                    await self._send(job, mine)
            if not waiting:
                return
            # Another sender (or one that died) holds these: wait for its claim to end, then look again.
            await asyncio.sleep(CLAIM_LEASE_SECONDS / 3)
            pending = waiting

    async def _send(self, job: Job, items: list[tuple[str, str]]) -> None:
        m, key = job.message, job.channel
        label = "/".join(key)
        channel = self.config().channel(*key)
        counts: dict[str, int] = defaultdict(int)
        failed: list[Failed] = []
        done: list[str] = []
        shown: list[str] = []  # the claims of the sends the vendor took: what a recall replaces
        kind = channel.type.value if channel is not None else "None"
        keep = max(m.expires_ms / 1000 - time.time(), 0) + 86400  # what is kept of the sends: the message's life
        if channel is None or channel.client is None:
            reason = "ChannelUnavailable" if channel is None else f"ChannelUnavailable: {channel.problem}"
            failed = [Failed(d, kind, t, reason) for d, t in items]
            counts[f"{kind}.Failed"] += len(items)
            done = [claim_id(d, t) for d, t in items]
        elif m.recalls is not None and not channel.client.replaces_shown:  # nothing it sends replaces one shown
            counts[f"{kind}.NotRecallable"] += len(items)
            done = [claim_id(d, t) for d, t in items]
        else:
            if channel.receipt_url:  # before the sends: a receipt may come before their answers
                await self.state.remember_tokens(m.message_id, items, keep)
            results = await self._attempts(channel, notification(m, channel), items)
            for (device, token), r in zip(items, results, strict=True):
                done.append(claim_id(device, token))
                if r.ok:
                    counts[f"{kind}.Sent"] += 1
                    shown.append(done[-1])
                    continue
                counts[f"{kind}.{r.outcome.value}"] += 1
                failed.append(Failed(device, kind, token, f"{r.outcome.value}: {r.reason}" if r.reason else r.outcome))
                if r.outcome is Outcome.INVALID_TOKEN and device:
                    await self.registry.remove_token(m.app, device, kind, token)
        await self.state.finish_sends(m, done, keep, dict(counts), failed, key, sent=set(shown))
        if channel is not None and channel.feedback_url:
            self.feedback.post(channel.feedback_url, m, kind, failed)
        sent, failures = sent_and_failed(counts)
        SENT.labels(label, "sent").inc(sent)
        SENT.labels(label, "failed").inc(failures)

    async def _recalled(self, message_id: str) -> bool:
        st = await self.state.status(message_id)
        return st is not None and st.state == "Revoked"

    async def _attempts(
        self, channel: VendorChannel, n: Notification, items: list[tuple[str, str]]
    ) -> list[SendResult]:
        assert channel.client is not None
        key = (channel.namespace, channel.name)
        results: dict[int, SendResult] = {}
        todo = list(range(len(items)))
        delay = 1.0
        for attempt in range(ATTEMPTS):
            quota = self._quota_until.get(key, 0.0)
            if quota > time.time():
                for i in todo:
                    results[i] = SendResult(items[i][1], Outcome.QUOTA_EXCEEDED, "the daily quota is used up")
                break
            await self._take_rate(channel, len(todo))
            # Still ours after the rate wait and any backoff: the claims are renewed right before the send.
            await self.state.renew_devices(n.message_id, [claim_id(*items[i]) for i in todo])
            sent = await channel.client.send(n, [items[i][1] for i in todo])
            again: list[int] = []
            wait = 0.0
            for i, r in zip(todo, sent, strict=True):
                results[i] = r
                if r.outcome is Outcome.QUOTA_EXCEEDED:
                    self._quota_until[key] = time.time() + (r.retry_after or 3600)
                elif r.outcome in (Outcome.RATE_LIMITED, Outcome.RETRY) and attempt + 1 < ATTEMPTS:
                    again.append(i)
                    wait = max(wait, min(r.retry_after or delay, MAX_BACKOFF))
            if not again:
                break
            await self.state.renew_devices(n.message_id, [claim_id(*items[i]) for i in again])
            await asyncio.sleep(wait)
            if await self._recalled(n.message_id):  # recalled during the backoff: their last answer stands
                break
            delay = min(delay * 2, MAX_BACKOFF)
            todo = again
        return [results[i] for i in range(len(items))]

    async def _take_rate(self, channel: VendorChannel, n: int) -> None:
        rate = channel.messages_per_second
        if not rate:
            return
        bucket = f"push:rate:{channel.namespace}/{channel.name}"
        burst = max(rate, 1)
        while n > 0:
            step = min(n, burst)
            if await self.hot.take_tokens(bucket, rate=rate, burst=burst, n=step):
                n -= step
            else:
                await asyncio.sleep(min(step / rate, 1.0))
