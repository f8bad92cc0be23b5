"""The analytics query API, on the admin port (loopback by default; docs/analytics.md):

- GET /v1/apps/{appId}/{workspaceId}/days/{YYYY-MM-DD}: a registered app's real-time figures for a UTC day;
- GET /v1/apps/{appId}/{workspaceId}/crashes[?version=V][&limit=N]: top crash groups, most frequent first;
- PUT /v1/apps/{appId}/{workspaceId}/versions/{version}/mapping: an R8 / ProGuard mapping.txt;
- PUT /v1/apps/{appId}/{workspaceId}/dsyms[?version=V][&name=N]: a zipped .dSYM bundle or a Mach-O file's DWARF;
- POST /v1/apps/{appId}/{workspaceId}/log-pulls: ask a device (or a user's) for its log files;
- GET /v1/apps/{appId}/{workspaceId}/log-pulls/{id}: the pull's status, and a download URL once uploaded.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field, model_validator

from ..apps import AppDirectory
from ..config import LiveConfig
from .dsyms import MAX_UPLOAD_BYTES, DsymError
from .logpull import LogPulls
from .realtime import Aggregates
from .symbols import MAX_MAPPING_BYTES, MappingError, Symbolicator

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class PullRequest(BaseModel):
    device_id: str | None = Field(default=None, alias="deviceId", min_length=1, max_length=200)
    user_id: str | None = Field(default=None, alias="userId", min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def one_target(self) -> PullRequest:
        if (self.device_id is None) == (self.user_id is None):
            raise ValueError("name exactly one of deviceId and userId")
        return self


def create_query_app(
    live: LiveConfig[AppDirectory],
    store: Aggregates,
    symbols: Symbolicator | None = None,
    pulls: LogPulls | None = None,
) -> FastAPI:
    app = FastAPI(title="mpaas analytics query API")

    def registered(app_id: str, workspace_id: str) -> str:
        if live.current.resolve(f"{app_id}/{workspace_id}") is None:
            raise HTTPException(404, f"app {app_id}/{workspace_id} is not registered")
        return f"{app_id}/{workspace_id}"

    def pulling() -> LogPulls:
        if pulls is None:
            raise HTTPException(503, "no object store configured (MPAAS_OBJECTS_URL): logs cannot be kept")
        return pulls

    @app.post("/v1/apps/{app_id}/{workspace_id}/log-pulls", status_code=201)
    async def start_pull(app_id: str, workspace_id: str, body: PullRequest) -> dict[str, Any]:
        key = registered(app_id, workspace_id)
        return await pulling().start(key, device=body.device_id or "", user=body.user_id or "", reason=body.reason)

    @app.get("/v1/apps/{app_id}/{workspace_id}/log-pulls/{pull_id}")
    async def pull_status(app_id: str, workspace_id: str, pull_id: str) -> dict[str, Any]:
        found = await pulling().status(registered(app_id, workspace_id), pull_id)
        if found is None:
            raise HTTPException(404, f"no log pull {pull_id[:64]} (or it is older than 7 days)")
        return found

    @app.put("/v1/apps/{app_id}/{workspace_id}/versions/{version}/mapping")
    async def upload_mapping(app_id: str, workspace_id: str, version: str, request: Request) -> dict[str, Any]:
        if live.current.resolve(f"{app_id}/{workspace_id}") is None:
            raise HTTPException(404, f"app {app_id}/{workspace_id} is not registered")
        if symbols is None:
            raise HTTPException(503, "no object store configured (MPAAS_OBJECTS_URL): mappings cannot be kept")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_MAPPING_BYTES:
                raise HTTPException(413, f"a mapping of at most {MAX_MAPPING_BYTES} bytes")
        try:
            classes = await symbols.store(f"{app_id}/{workspace_id}", version, bytes(data))
        except MappingError as e:
            raise HTTPException(400, str(e)) from None
        return {"appId": app_id, "workspaceId": workspace_id, "version": version, "classes": classes}

    @app.put("/v1/apps/{app_id}/{workspace_id}/dsyms")
    async def upload_dsyms(
        app_id: str,
        workspace_id: str,
        request: Request,
        version: str = Query(default=""),  # checked by the store: a 400 that says why, as documented
        name: str = Query(default=""),
    ) -> dict[str, Any]:
        key = registered(app_id, workspace_id)
        if symbols is None:
            raise HTTPException(503, "no object store configured (MPAAS_OBJECTS_URL): dSYMs cannot be kept")
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="mpaas-dsym-"))
        try:
            upload, size = work / "upload", 0
            with upload.open("wb") as f:  # to disk as it arrives: a dSYM is often hundreds of MiB
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise HTTPException(413, f"a dSYM upload of at most {MAX_UPLOAD_BYTES} bytes")
                    f.write(chunk)
            kept = await symbols.apple.store(key, upload, version=version, name=name)
        except DsymError as e:
            raise HTTPException(400, str(e)) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return {"appId": app_id, "workspaceId": workspace_id, "version": version or None, "dsyms": kept}

    @app.get("/v1/apps/{app_id}/{workspace_id}/days/{day}")
    async def figures(app_id: str, workspace_id: str, day: str) -> dict[str, Any]:
        if live.current.resolve(f"{app_id}/{workspace_id}") is None:
            raise HTTPException(404, f"app {app_id}/{workspace_id} is not registered")
        if not _DAY.fullmatch(day):
            raise HTTPException(400, "day must be YYYY-MM-DD")
        out = await store.day(f"{app_id}/{workspace_id}", day, day[:7])
        return {"appId": app_id, "workspaceId": workspace_id, "day": day, **out}

    @app.get("/v1/apps/{app_id}/{workspace_id}/crashes")
    async def top_crashes(
        app_id: str,
        workspace_id: str,
        version: str | None = Query(default=None, max_length=64),
        limit: int = Query(default=20, ge=1, le=100),
    ) -> dict[str, Any]:
        if live.current.resolve(f"{app_id}/{workspace_id}") is None:
            raise HTTPException(404, f"app {app_id}/{workspace_id} is not registered")
        groups = await store.crashes(f"{app_id}/{workspace_id}", version, limit)
        return {"appId": app_id, "workspaceId": workspace_id, "version": version, "groups": groups}

    return app
