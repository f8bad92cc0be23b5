"""The demo app's backend: the upstream the example MpaasGateway routes to."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

app = FastAPI(title="demo backend")


@app.post("/profile")
async def profile(request: Request) -> dict[str, object]:
    body = await request.json() if await request.body() else {}
    user = body.get("userId", "anonymous") if isinstance(body, dict) else "anonymous"
    return {"userId": user, "nickname": f"user-{user}", "level": 3, "served_by": "demo-backend"}


@app.post("/echo")
async def echo(request: Request) -> dict[str, object]:
    raw = await request.body()
    return {
        "echo": raw.decode(errors="replace"),
        "traceId": request.headers.get("mgw-traceid"),
        "appId": request.headers.get("appid"),
    }


@app.get("/time")
async def server_time() -> dict[str, float]:
    return {"epochSeconds": time.time()}
