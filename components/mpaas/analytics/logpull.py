"""Remote log pull: an engineer asks one device (or a user's device) for its local log files.

The request waits in the hot store (7 days) until the device next uploads events in the platform's format:
that answer carries `logPull` with a presigned PUT URL of the object store (15 minutes; only the first device
told gets it, and the object is written once), where the device puts its logs
(push and link will carry the request at once when they exist). Status and a download URL come from the
query API. Only the platform's own upload format carries the request: the peers' SDKs would not read it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from ..stores import HotStore, ObjectStore

KEEP_SECONDS = 7 * 86400
URL_SECONDS = 900  # a presigned URL's life
_PULL_ID = re.compile(r"[0-9a-f]{32}")
MAX_LOG_BYTES = 32 << 20  # what a device may upload for one pull (the local folder's route enforces it)


class LogPulls:
    def __init__(self, hot: HotStore, objects: ObjectStore):
        self.hot, self.objects = hot, objects

    @staticmethod
    def _key(app: str, pull_id: str) -> str:
        return f"analytics:logpull:{app}:{pull_id}"

    @staticmethod
    def _index(app: str, what: str, who: str) -> str:
        return f"analytics:logpull-target:{app}:{what}:{who}"

    @staticmethod
    def object_key(app: str, pull_id: str) -> str:
        return f"analytics/logs/{app}/{pull_id}.log"

    async def start(self, app: str, *, device: str = "", user: str = "", reason: str = "") -> dict[str, Any]:
        """A new pull for `device` or `user` (one of them); it replaces that target's earlier pending one."""
        pull_id = uuid.uuid4().hex
        pull: dict[str, Any] = {
            "id": pull_id,
            "device": device,
            "user": user,
            "reason": reason,
            "status": "pending",
            "created": int(time.time() * 1000),
        }
        await self.hot.set(self._key(app, pull_id), json.dumps(pull).encode(), ttl_seconds=KEEP_SECONDS)
        what, who = ("device", device) if device else ("user", user)
        await self.hot.set(self._index(app, what, who), pull_id.encode(), ttl_seconds=KEEP_SECONDS)
        return pull

    async def _get(self, app: str, pull_id: str) -> dict[str, Any] | None:
        raw = await self.hot.get(self._key(app, pull_id))
        return json.loads(raw) if raw else None

    async def for_upload(self, app: str, device: str, user: str) -> dict[str, Any] | None:
        """What an upload's answer tells its device: a pull waiting for it, with where to put the logs."""
        for what, who in (("device", device), ("user", user)):
            if not who:
                continue
            pull_id = await self.hot.get(self._index(app, what, who))
            pull = await self._get(app, pull_id.decode()) if pull_id else None
            if pull is None or pull["status"] == "uploaded":
                continue
            if await self.objects.stat(self.object_key(app, pull["id"])) is not None:  # landed: asked no more
                pull["status"] = "uploaded"
                await self.hot.set(self._key(app, pull["id"]), json.dumps(pull).encode(), ttl_seconds=KEEP_SECONDS)
                continue
            if pull["status"] == "requested" and pull.get("requestedFrom") != device:
                continue  # the first device told is the one that uploads: no other gets the URL
            if pull["status"] == "pending":
                pull.update(status="requested", requested=int(time.time() * 1000), requestedFrom=device)
                await self.hot.set(self._key(app, pull["id"]), json.dumps(pull).encode(), ttl_seconds=KEEP_SECONDS)
            url = await self.objects.presign_put(self.object_key(app, pull["id"]), expires_seconds=URL_SECONDS)
            return {"id": pull["id"], "uploadUrl": url, "expiresInSeconds": URL_SECONDS, "maxBytes": MAX_LOG_BYTES}
        return None

    async def status(self, app: str, pull_id: str) -> dict[str, Any] | None:
        """The pull as recorded, `uploaded` with its size and a download URL once the logs have landed."""
        if not _PULL_ID.fullmatch(pull_id):
            return None
        pull = await self._get(app, pull_id)
        if pull is None:
            return None
        info = await self.objects.stat(self.object_key(app, pull_id))
        if info is not None:
            pull.update(status="uploaded", size=info.size, sha256=info.sha256)
            pull["downloadUrl"] = await self.objects.presign_get(
                self.object_key(app, pull_id), expires_seconds=URL_SECONDS
            )
        return pull
