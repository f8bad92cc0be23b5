"""The benchmark's backend: a minimal ASGI service answering every request with a small JSON body.

uvicorn --app-dir hack/bench upstream_fast:app --port PORT
"""

BODY = b'{"userId":"10086","nickname":"user-10086","level":3}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
