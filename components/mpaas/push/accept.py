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

from ..stores import EventLog
from .fanout import Topics
from .messages import PushMessage
from .state import PushState

log = logging.getLogger("mpaas.push")

IDEMPOTENCY_SECONDS = 86400  # an idempotency key is remembered this long (or the message's TTL, if longer)


class Unavailable(Exception):
    """The event log or the state store did not take the send: nothing was accepted."""


class Accepter:
    def __init__(self, events: EventLog, state: PushState, topics: Topics = Topics()):
        self.events, self.state, self.topics = events, state, topics
        self._task: asyncio.Task[None] | None = None

    async def accept(self, message: PushMessage, idempotency_key: str | None) -> tuple[str, bool]:
        """(the message id, False; or the first message's id and True when the key was used before).

        A publish whose outcome is unknown (the broker may have stored it before the error) leaves the message
        Unstored with its key still bound: a retry with the key publishes that same message again, which the
        fan-out sends once whichever copies arrived (it dedupes by message id)."""
        if idempotency_key is not None:
            ahead = (message.scheduled_ms - message.created_ms) / 1000 if message.scheduled_ms else 0
            ttl = max(IDEMPOTENCY_SECONDS, ahead + message.ttl_seconds)
            try:
                first = await self.state.claim_idempotency(message.app, idempotency_key, message.message_id, ttl)
                if first is not None:
                    await self._publish_again(first)
                    return first, True
            except Unavailable:
                raise
            except Exception as e:
                raise Unavailable(f"the state store did not answer: {e!r}") from e
        try:
            await self.state.save(message, "Scheduled" if message.scheduled_ms is not None else "Accepted")
            if message.scheduled_ms is not None:
                await self.state.schedule(message)
        except Exception as e:  # nothing was published: the key is free for a retry
            if idempotency_key is not None:
                with contextlib.suppress(Exception):
                    await self.state.release_idempotency(message.app, idempotency_key, message.message_id)
            raise Unavailable(f"the send was not stored: {e!r}") from e
        if message.scheduled_ms is None:
            try:
                await self.events.publish(self.topics.sends, message.to_json(), key=message.app.encode())
            except Exception as e:
                with contextlib.suppress(Exception):
                    await self.state.set_state(message.message_id, "Unstored", only_from=("Accepted",))
                raise Unavailable(f"the send may not have been stored (retry with its idempotency key): {e!r}") from e
        return message.message_id, False

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

    def start_scheduler(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule_loop(), name="push scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

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
