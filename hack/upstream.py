"""A test upstream that says who it is: `python hack/upstream.py NAME PORT [HOST]` (HOST: 127.0.0.1).

Paths: /slow sleeps 2 s, /fail answers 500, /biz answers a 6001 business code,
/session/validate accepts Session-Id "good-<user>", /_count tells how many
requests arrived, anything else echoes {upstream, path,
method, body, headers}. An upstream named broken* answers 500 to everything.
"""

from __future__ import annotations

import asyncio
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

NAME = sys.argv[1] if len(sys.argv) > 1 else "upstream"
SEEN = {"requests": 0}


async def handle(request: Request) -> Response:
    path = request.url.path
    if path == "/_count":
        return JSONResponse(SEEN)
    SEEN["requests"] += 1
    if path == "/session/validate":  # sessions "good-<user>" are valid
        token = request.headers.get("session-id", "")
        if token.startswith("good-"):
            return JSONResponse({"valid": True}, headers={"Uid": token[5:]})
        return JSONResponse({"valid": False}, status_code=401)
    if NAME.startswith("broken"):
        return JSONResponse({"error": "broken"}, status_code=503)
    if path == "/slow":
        await asyncio.sleep(2)
    if path == "/fail":
        return JSONResponse({"error": "boom"}, status_code=500)
    if path == "/biz":
        return JSONResponse({"error": "insufficient balance"}, headers={"Result-Status": "6001", "Memo": "balance"})
    body = await request.body()
    return JSONResponse(
        {
            "upstream": NAME,
            "path": path,
            "method": request.method,
            "body": body.decode(errors="replace"),
            "headers": dict(request.headers),
            "query": str(request.url.query),
        }
    )


app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

if __name__ == "__main__":
    import uvicorn

    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    uvicorn.run(app, host=host, port=int(sys.argv[2]), log_level="warning", access_log=False)
