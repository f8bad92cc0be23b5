"""The analytics query API, on the admin port: a registered app's real-time figures for a UTC day.

GET /v1/apps/{appId}/{workspaceId}/days/{YYYY-MM-DD}
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, HTTPException, Query

from ..config import LiveConfig
from .apps import AppDirectory
from .realtime import Aggregates

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def create_query_app(live: LiveConfig[AppDirectory], store: Aggregates) -> FastAPI:
    app = FastAPI(title="mpaas analytics query API")

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
