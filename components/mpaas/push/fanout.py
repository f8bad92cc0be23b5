"""The fan-out: from an accepted message to the devices it targets (docs/push.md, "Delivery").

It reads the sends topic as one consumer group. For each message it resolves the target page by page (500
devices), routes each device (routing.py), appends the link ones to their inboxes with the message id as
dedupe id, and publishes each vendor channel's share as a job on the vendor topic for the senders. After each
page it writes a checkpoint, so a fan-out killed mid-way resumes at its last page: a page done again appends
nothing twice to an inbox (the dedupe id), and the senders claim each (message, device) before sending.

A broadcast to every device of an app with a Link channel is one append to the app's link broadcast stream
(every connected device gets it at once); the scan that follows sends only to the devices offline on link
that have a vendor token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
from aiokafka.errors import MessageSizeTooLargeError

from ..background import Background
from ..stores import EventLog, Record
from .config import PushConfig
from .messages import PushMessage, Target, version_key
from .registry import Device, Registry
from .routing import LINK, NO_CHANNEL, route
from .state import Failed, PushState

log = logging.getLogger("mpaas.push")

PAGE = 500
SENDABLE = ("Accepted", "Sending", "Unstored")  # the states a message is fanned out from
NOW_OR_NEVER_MS = 60_000  # a message with ttlSeconds 0 not fanned out within a minute is not sent
JOB_ITEMS = 500  # (device, token) pairs in one vendor job
LINK_TTL_FOR_NOW_OR_NEVER = 60  # ttlSeconds 0 on link: kept a minute for a device reconnecting right now
CONCURRENCY = 16  # messages fanned out at once by one process


class LinkDelivery(Protocol):
    """What the fan-out needs from link (mpaas.link.deliver.Deliverer)."""

    async def online(self, app_id: str, workspace_id: str, device_ids: list[str]) -> set[str]: ...

    async def deliver(
        self,
        app_id: str,
        workspace_id: str,
        device_ids: list[str],
        payload: bytes,
        *,
        urgent: bool,
        ttl_seconds: float,
        dedupe: str,
        receipt: bool,
    ) -> object: ...

    async def broadcast(
        self, app_key: str, payload: bytes, *, urgent: bool, ttl_seconds: float, dedupe: str
    ) -> object: ...


@dataclass(frozen=True)
class Topics:
    sends: str = "mpaas.push.sends"
    vendor: str = "mpaas.push.vendor"  # each vendor channel's jobs: {vendor}.{namespace}.{name}
    fanout_group: str = "mpaas-push-fanout"
    sender_group: str = "mpaas-push-senders"  # each channel's senders: {sender_group}.{namespace}.{name}

    def vendor_topic(self, channel: tuple[str, str]) -> str:
        return f"{self.vendor}.{channel[0]}.{channel[1]}"

    def sender_group_of(self, channel: tuple[str, str]) -> str:
        return f"{self.sender_group}.{channel[0]}.{channel[1]}"


def vendor_job(message: PushMessage, channel: tuple[str, str], items: list[tuple[str, str]]) -> bytes:
    """A job: the message without its target (the items are the job's part of it), the channel, the items. At
    most JOB_ITEMS items of tokens of at most 1 KiB: well under Kafka's 1 MiB per record."""
    m = replace(message, target=Target(message.target.type))
    return orjson.dumps({"message": m.to_dict(), "channel": channel, "items": items})


class NotYet(Exception):
    """The message cannot be fanned out yet (the configuration is still loading): it waits, nothing is lost."""


# A message that fails with one of these will fail the same way every time: it is marked Failed and skipped,
# instead of holding its partition back for ever.
PERMANENT = (ValueError, TypeError, KeyError, IndexError, MessageSizeTooLargeError)


def matches(device: Device, message: PushMessage) -> bool:
    t = message.target
    if t.platforms and device.platform not in t.platforms:
        return False
    if t.tags and not set(t.tags) & set(device.tags):
        return False
    if t.min_app_version or t.max_app_version:
        if not device.app_version[:1].isdigit():  # no version known ("", "beta"): no version range holds it
            return False
        try:
            v = version_key(device.app_version)
        except ValueError:
            return False
        if t.min_app_version and v < version_key(t.min_app_version):
            return False
        if t.max_app_version and v > version_key(t.max_app_version):
            return False
    return True


class Fanout(Background):
    def __init__(
        self,
        events: EventLog,
        state: PushState,
        registry: Registry,
        link: Callable[[], LinkDelivery | None],
        config: Callable[[], PushConfig],
        topics: Topics = Topics(),
    ):
        self.events, self.state, self.registry, self.link, self.config = events, state, registry, link, config
        self.topics = topics

    def start(self) -> None:
        self._launch(self._run(), "push fan-out")

    async def _run(self) -> None:
        while True:
            try:
                async for batch in self.events.batches(self.topics.sends, self.topics.fanout_group, wait=1.0):
                    if batch:
                        await self._batch(batch)
                        await self.events.commit_batch(self.topics.fanout_group, batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the event log away: join again; what was not committed comes back
                log.warning("push fan-out: %r; joining again in 2 s", e)
                await asyncio.sleep(2.0)

    async def _batch(self, batch: list[Record]) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        messages: list[PushMessage] = []
        for record in batch:  # a record holds one message or a batch's, a JSON line each
            for line in record.value.split(b"\n"):
                try:
                    messages.append(PushMessage.from_json(line))
                except (ValueError, KeyError, TypeError) as e:
                    log.error(
                        "push fan-out: a message that does not parse is skipped (offset %d): %r", record.offset, e
                    )

        async def one(message: PushMessage) -> None:
            async with gate:
                delay = 0.5
                while True:  # a store failure: this message waits (and its batch), nothing is skipped
                    try:
                        await self.process(message)
                        return
                    except PERMANENT as e:
                        log.error("push fan-out of %s failed for good: %r", message.message_id, e)
                        with contextlib.suppress(Exception):
                            await self.state.set_state(message.message_id, "Failed")
                            await self.state.add_failed(
                                message.message_id, [Failed("", "", "", f"Failed: {e!r}"[:300])]
                            )
                        return
                    except Exception as e:
                        log.warning("push fan-out of %s failed, again in %.1f s: %r", message.message_id, delay, e)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 30.0)

        await asyncio.gather(*(one(m) for m in messages))

    async def process(self, m: PushMessage) -> None:
        config = self.config()
        if not config.settled:
            raise NotYet("the channels' credentials are still being read")
        status = await self.state.status(m.message_id)
        if status is None:
            await self.state.save(m, "Sending")
        elif not await self.state.set_state(m.message_id, "Sending", only_from=SENDABLE):
            return  # canceled, revoked, done, expired or failed meanwhile
        if m.expires_ms + (0 if m.ttl_seconds else NOW_OR_NEVER_MS) <= time.time() * 1000:
            await self.state.set_state(m.message_id, "Expired")
            return
        step = await self.state.checkpoint(m.message_id)
        if m.link_only and m.target.type == "token":  # a recall of a send by tokens: link has none of them
            await self.state.set_state(m.message_id, "Done", only_from=("Sending",))
            return
        link = self.link() if config.has_link(m.app_id, m.workspace_id) else None
        if m.target.type == "token":
            await self._tokens(m, config, step)
        else:
            broadcast = m.target.type == "all" and not m.target.filtered and link is not None
            if broadcast and not step:
                assert link is not None
                await link.broadcast(
                    m.app, m.link_payload(), urgent=m.urgent, ttl_seconds=self._link_ttl(m), dedupe=m.message_id
                )
                await self.state.count(m, {"Link.Broadcast": 1})
                step = await self.state.checkpoint(m.message_id, "a:")
            async for ids, next_step in self._pages(m, step):
                if await self._recalled(m):
                    return
                await self._page(m, ids, config, link, broadcast=broadcast, page=step)
                await self.state.checkpoint(m.message_id, next_step)
                step = next_step
        await self.state.set_state(m.message_id, "Done", only_from=("Sending",))

    async def _recalled(self, m: PushMessage) -> bool:
        status = await self.state.status(m.message_id)
        return status is not None and status.state == "Revoked"

    async def deliver_to(self, m: PushMessage, device_ids: list[str]) -> None:
        """The message to these devices now (a user's newly bound device), routed like any page of it."""
        config = self.config()
        link = self.link() if config.has_link(m.app_id, m.workspace_id) else None
        await self._page(m, device_ids, config, link, broadcast=False)

    @staticmethod
    def _link_ttl(m: PushMessage) -> float:
        return m.ttl_seconds or LINK_TTL_FOR_NOW_OR_NEVER

    async def _pages(self, m: PushMessage, step: str) -> AsyncIterator[tuple[list[str], str]]:
        """Pages of device ids from the checkpoint `step`, each with the checkpoint after it."""
        t, app = m.target, m.app
        kind, _, rest = step.partition(":")
        if t.type in ("device", "alias"):
            start = int(rest or 0) if kind == "i" else 0
            for i in range(start, len(t.ids), PAGE):
                chunk = list(t.ids[i : i + PAGE])
                if t.type == "alias":
                    found = await self.registry.alias_devices(app, chunk)
                    chunk = [d for d in found if d is not None]
                yield chunk, f"i:{i + PAGE}"
        elif t.type == "user":
            index, _, offset = rest.partition(":") if kind == "u" else ("0", "", "0")
            for i in range(int(index or 0), len(t.ids)):
                await self.state.wait_for_user(app, t.ids[i], m.message_id, m.expires_ms)
                devices = await self.registry.user_devices(app, t.ids[i])
                start = int(offset or 0) if i == int(index or 0) else 0
                for j in range(start, len(devices), PAGE):
                    end = j + PAGE
                    yield devices[j:end], (f"u:{i}:{end}" if end < len(devices) else f"u:{i + 1}:0")
                if not devices:
                    yield [], f"u:{i + 1}:0"
        elif t.type == "tag":
            index, _, cursor = rest.partition(":") if kind == "t" else ("0", "", "")
            for i in range(int(index or 0), len(t.ids)):
                while True:
                    cursor, ids = await self.registry.scan(app, cursor, PAGE, tag=t.ids[i])
                    yield ids, (f"t:{i}:{cursor}" if cursor else f"t:{i + 1}:")
                    if not cursor:
                        break
        elif t.type == "all":
            if kind == "a" and rest == "done":
                return
            cursor = rest if kind == "a" else ""
            while True:
                cursor, ids = await self.registry.scan(app, cursor, PAGE)
                yield ids, (f"a:{cursor}" if cursor else "a:done")
                if not cursor:
                    break

    async def _page(
        self,
        m: PushMessage,
        ids: list[str],
        config: PushConfig,
        link: LinkDelivery | None,
        *,
        broadcast: bool,
        page: str | None = None,
    ) -> None:
        """One page of the message's devices; `page`, its checkpoint: done again after a kill, it sends what
        was not sent (link and the senders dedupe the rest) and counts nothing twice."""
        if not ids:
            return
        devices = [d for d in await self.registry.get_many(m.app, ids) if d is not None and matches(d, m)]
        online = await link.online(m.app_id, m.workspace_id, [d.device_id for d in devices]) if link else set()
        vendors = {} if m.link_only else config.vendors(m.app_id, m.workspace_id)
        to_link: list[str] = []
        jobs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        failed: list[Failed] = []
        for d in devices:
            if m.recalls is not None:  # a recall notice: over link to the app (now, or when it reconnects), and
                if link is not None and not broadcast:  # to its vendor channel (whose sender sends it only
                    to_link.append(d.device_id)  # where the recalled message went that way)
                name, channel, token = route(d, online=False, vendors=vendors, has_link=False)
                if channel is not None:
                    jobs[(channel.namespace, channel.name)].append((d.device_id, token))
                continue
            name, channel, token = route(d, online=d.device_id in online, vendors=vendors, has_link=link is not None)
            if name == LINK:
                if not broadcast:  # a broadcast's stream already reaches every device on link
                    to_link.append(d.device_id)
            elif channel is not None:
                jobs[(channel.namespace, channel.name)].append((d.device_id, token))
            else:
                failed.append(Failed(d.device_id, NO_CHANNEL, "", "NoChannel"))
        counts: dict[str, int] = {}
        if to_link and link is not None:
            await link.deliver(
                m.app_id,
                m.workspace_id,
                to_link,
                m.link_payload(),
                urgent=m.urgent,
                ttl_seconds=self._link_ttl(m),
                dedupe=m.message_id,
                receipt=True,  # each device's ack of it counts as delivered (receipts.LinkReceipts)
            )
            counts["Link.Sent"] = len(to_link)
        for channel_key, items in jobs.items():
            for i in range(0, len(items), JOB_ITEMS):
                part = items[i : i + JOB_ITEMS]
                await self.events.publish(
                    self.topics.vendor_topic(channel_key), vendor_job(m, channel_key, part), key=m.message_id.encode()
                )
        if page is not None and not await self.state.first_page(m.message_id, page):
            return
        if failed:
            counts["None.NoChannel"] = len(failed)
            await self.state.add_failed(m.message_id, failed)
        await self.state.count(m, counts, targets=len(devices))

    async def _tokens(self, m: PushMessage, config: PushConfig, step: str) -> None:
        """gorush's tokens: each to the app's channel of its type, without the registry."""
        vendors = config.vendors(m.app_id, m.workspace_id)
        if step == "k:done":
            return
        jobs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        failed: list[Failed] = []
        for kind, token in m.target.tokens:
            channel = next((c for t, c in vendors.items() if t.value == kind), None)
            if channel is None or channel.client is None:
                failed.append(Failed("", kind, token, "NoChannel"))
            else:
                jobs[(channel.namespace, channel.name)].append(("", token))
        for channel_key, items in jobs.items():
            for i in range(0, len(items), JOB_ITEMS):
                await self.events.publish(
                    self.topics.vendor_topic(channel_key),
                    vendor_job(m, channel_key, items[i : i + JOB_ITEMS]),
                    key=m.message_id.encode(),
                )
        counts: dict[str, Any] = {}
        if await self.state.first_page(m.message_id, "k:"):  # counted once, if done again after a kill
            if failed:
                counts["None.NoChannel"] = len(failed)
                await self.state.add_failed(m.message_id, failed)
            await self.state.count(m, counts, targets=len(m.target.tokens))
        await self.state.checkpoint(m.message_id, "k:done")
