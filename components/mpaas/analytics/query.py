"""The analytics query API, on the admin port: a registered app's real-time figures for a UTC day.

GET /v1/apps/{appId}/{workspaceId}/days/{YYYY-MM-DD}
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request

from ..config import LiveConfig
from .apps import AppDirectory
from .realtime import Aggregates
from .symbols import MAX_MAPPING_BYTES, MappingError, Symbolicator

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def create_query_app(live: LiveConfig[AppDirectory], store: Aggregates, symbols: Symbolicator | None = None) -> FastAPI:
    app = FastAPI(title="mpaas analytics query API")

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
