"""Failed tokens posted to a vendor channel's `feedbackUrl` (docs/push.md, "Failed tokens"), as gorush's
feedback hook posts them: after each group of sends with failures, one JSON POST

    {"appId", "workspaceId", "messageId", "channel", "failed": [{"deviceId", "token", "reason"}]}

in the background, so a slow or dead endpoint never holds a send back: at most MAX_PENDING posts wait (more
are dropped and counted), each tried up to ATTEMPTS times with backoff, within TIMEOUT seconds each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

import httpx
from prometheus_client import Counter

from .messages import PushMessage
from .state import Failed

log = logging.getLogger("mpaas.push")

MAX_PENDING = 1000
ATTEMPTS = 3
TIMEOUT = 5.0
POSTS = Counter("mpaas_push_feedback_posts_total", "Failed-token posts to feedback URLs", ["result"])


class Feedback:
    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def post(self, url: str, m: PushMessage, channel: str, failed: Sequence[Failed]) -> None:
        if not failed:
            return
        if len(self._pending) >= MAX_PENDING:
            POSTS.labels("dropped").inc()
            return
        body = {
            "appId": m.app_id,
            "workspaceId": m.workspace_id,
            "messageId": m.message_id,
            "channel": channel,
            "failed": [{"deviceId": f.device_id, "token": f.token, "reason": f.reason} for f in failed],
        }
        task = asyncio.get_running_loop().create_task(self._send(url, json.dumps(body).encode()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, url: str, body: bytes) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        delay = 1.0
        for attempt in range(ATTEMPTS):
            try:
                r = await self._http.post(url, content=body, headers={"Content-Type": "application/json"})
                if r.status_code < 300:
                    POSTS.labels("sent").inc()
                    return
                if r.status_code < 500 and r.status_code != 429:
                    break  # refused: again would be refused too
            except httpx.HTTPError as e:
                if attempt + 1 == ATTEMPTS:
                    log.warning("push: failed tokens not posted to %s: %r", url, e)
            await asyncio.sleep(delay)
            delay *= 2
        POSTS.labels("failed").inc()

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        for task in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.aclose()
