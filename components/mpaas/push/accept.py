"""Accepting a send: persisted before the API answers (docs/push.md, "Durability").

A send is checked, given its message id, bound to its idempotency key (a repeat gets the first id and sends
nothing again), then written to the sends topic (Kafka, acks from every in-sync replica) or, scheduled, to
the schedule in Redis; only then does the API answer. A send the event log does not take is refused (503)
with its idempotency key released, so a retry is a fresh send.

The scheduler: each push process takes the due messages (leased, so two pods never both take one, and a pod
that dies with one gives it back after a minute) and writes them to the sends topic like a new send; a due
message handed out twice is fanned out once (the fan-out skips a message already done, and dedupes per device).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from ..background import Background
from ..stores import EventLog
from .fanout import Topics
from .messages import Content, PushMessage, new_message_id
from .state import PushState

log = logging.getLogger("mpaas.push")

RECALLABLE = ("Accepted", "Sending", "Done", "Unstored")
RECALL_KEY = "mpaasRecall"  # the data key of a recall notice: the id of the message recalled
# What a recall at a vendor shows in place of the message (Xiaomi needs both a title and a text).
RECALLED_TITLE, RECALLED_TEXT = "Recalled", "This message was recalled."
IDEMPOTENCY_SECONDS = 86400  # an idempotency key is remembered this long (or the message's TTL, if longer)
RECORD_BYTES = 256 * 1024  # messages of one app packed into one log record, as JSON lines, up to this size


def _records(messages: list[PushMessage], indexes: list[int]) -> list[tuple[list[int], bytes, str]]:
    """Log records of the messages: JSON lines (a message's JSON holds no raw newline), one app's per record,
    at most RECORD_BYTES each (or one message)."""
    out: list[tuple[list[int], bytes, str]] = []
    by_app: dict[str, list[tuple[int, bytes]]] = {}
    for i, m in zip(indexes, messages, strict=True):
        by_app.setdefault(m.app, []).append((i, m.to_json()))
    for app, lines in by_app.items():
        part: list[tuple[int, bytes]] = []
        size = 0
        for i, line in lines:
            if part and size + len(line) + 1 > RECORD_BYTES:
                out.append(([j for j, _ in part], b"\n".join(x for _, x in part), app))
                part, size = [], 0
            part.append((i, line))
            size += len(line) + 1
        if part:
            out.append(([j for j, _ in part], b"\n".join(x for _, x in part), app))
    return out


class Unavailable(Exception):
    """The event log or the state store did not take the send: nothing was accepted."""


class Accepter(Background):
    def __init__(self, events: EventLog, state: PushState, topics: Topics = Topics()):
        self.events, self.state, self.topics = events, state, topics

    async def accept(self, message: PushMessage, idempotency_key: str | None) -> tuple[str, bool]:
        """(the message id, False; or the first message's id and True when the key was used before).

        A publish whose outcome is unknown (the broker may have stored it before the error) leaves the message
        Unstored with its key still bound: a retry with the key publishes that same message again, which the
        fan-out sends once whichever copies arrived (it dedupes by message id)."""
        (result,) = await self.accept_many([(message, idempotency_key)])
        if isinstance(result, Unavailable):
            raise result
        return result

    async def accept_many(self, items: list[tuple[PushMessage, str | None]]) -> list[tuple[str, bool] | Unavailable]:
        """Several sends (a batch) stored together: one Redis round trip for their keys, one for their states,
        and one log record per RECORD_BYTES of messages, so that a send of a batch costs a fraction of a lone
        one. Each gets its own result: a record the log did not take fails its messages alone."""
        results: list[tuple[str, bool] | Unavailable | None] = [None] * len(items)
        keyed = [i for i, (_, key) in enumerate(items) if key is not None]
        try:
            if keyed:
                claims = []
                for i in keyed:
                    m, key = items[i]
                    ahead = (m.scheduled_ms - m.created_ms) / 1000 if m.scheduled_ms else 0
                    claims.append((m.app, str(key), m.message_id, max(IDEMPOTENCY_SECONDS, ahead + m.ttl_seconds)))
                for i, first in zip(keyed, await self.state.claim_idempotency_many(claims), strict=True):
                    if first is not None:
                        try:
                            await self._publish_again(first)
                            results[i] = (first, True)
                        except Unavailable as e:
                            results[i] = e
            fresh = [i for i in range(len(items)) if results[i] is None]
            await self.state.save_many(
                [(items[i][0], "Scheduled" if items[i][0].scheduled_ms is not None else "Accepted") for i in fresh]
            )
            for i in fresh:
                if items[i][0].scheduled_ms is not None:
                    await self.state.schedule(items[i][0])
                    results[i] = (items[i][0].message_id, False)
        except Exception as e:  # the state store: nothing of these was published, their keys are freed
            for i in [i for i in range(len(items)) if results[i] is None]:
                m, key = items[i]
                if key is not None:
                    with contextlib.suppress(Exception):
                        await self.state.release_idempotency(m.app, key, m.message_id)
            failure = Unavailable(f"the send was not stored: {e!r}")
            return [failure if r is None else r for r in results]
        now = [i for i in range(len(items)) if results[i] is None]
        for part in _records([items[i][0] for i in now], [i for i in now]):
            indexes, value, app = part
            try:
                await self.events.publish(self.topics.sends, value, key=app.encode())
                for i in indexes:
                    results[i] = (items[i][0].message_id, False)
            except Exception as e:
                failure = Unavailable(f"the send may not have been stored (retry with its idempotency key): {e!r}")
                for i in indexes:
                    with contextlib.suppress(Exception):
                        await self.state.set_state(items[i][0].message_id, "Unstored", only_from=("Accepted",))
                    results[i] = failure
        return [r if r is not None else Unavailable("not stored") for r in results]

    async def _publish_again(self, message_id: str) -> None:
        """The first message of a key, if its publish failed: published again (the same id)."""
        status = await self.state.status(message_id)
        if status is None or status.state != "Unstored":
            return
        try:
            await self.events.publish(self.topics.sends, status.message.to_json(), key=status.message.app.encode())
        except Exception as e:
            raise Unavailable(f"the send may not have been stored (retry with its idempotency key): {e!r}") from e
        await self.state.set_state(message_id, "Accepted", only_from=("Unstored",))

    async def cancel(self, message_id: str) -> bool:
        """Cancel a scheduled message not yet sent; False when it is not (or no longer) scheduled."""
        if not await self.state.set_state(message_id, "Canceled", only_from=("Scheduled",)):
            return False
        await self.state.unschedule(message_id)
        return True

    async def recall(
        self, message_id: str, title: str = RECALLED_TITLE, text: str = RECALLED_TEXT
    ) -> PushMessage | None:
        """Recall a message being sent or sent (docs/push.md, "Recall"): what is not sent yet never is (the
        fan-out and the senders stop at their next page or group), and a recall notice goes to the same target:
        over link for the app to take down the notification it may show, and, to each device the message went
        to through a vendor that can, a notification with its collapse key that replaces it where it is shown.
        The notice (None when the message could not be recalled: canceled, expired, failed or recalled before)
        is accepted like a send."""
        status = await self.state.status(message_id)
        if status is None or not await self.state.set_state(message_id, "Revoked", only_from=RECALLABLE):
            return None
        m = status.message
        shown = m.content.title is not None or m.content.body is not None  # a data-only one showed nothing
        notice = replace(
            m,
            message_id=new_message_id(),
            content=Content(title=title, body=text, data={RECALL_KEY: m.message_id}),
            collapse_key=m.collapse_key or m.message_id,  # the vendors' collapse id of the message (senders)
            scheduled_ms=None,
            created_ms=int(time.time() * 1000),
            sync=False,
            link_only=not shown,
            recalls=m.message_id,
        )
        await self.accept(notice, None)
        return notice

    def start_scheduler(self) -> None:
        self._launch(self._schedule_loop(), "push scheduler")

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self.release_due()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("push scheduler: %r", e)
            await asyncio.sleep(1.0)

    async def release_due(self) -> int:
        due = await self.state.take_due(int(time.time() * 1000), 100)
        for message in due:
            # Accepted before it is published: a cancel from now on fails (409) instead of being overtaken.
            status = await self.state.status(message.message_id)
            if status is None or await self.state.set_state(message.message_id, "Accepted", only_from=("Scheduled",)):
                await self.events.publish(self.topics.sends, message.to_json(), key=message.app.encode())
            elif status.state == "Accepted":  # taken again after a publish whose unschedule was lost
                await self.events.publish(self.topics.sends, message.to_json(), key=message.app.encode())
            await self.state.unschedule(message.message_id)
        return len(due)
