"""The gateway's stages, one module per MpaasGateway field, run in this fixed order by `gateway.app`:

    route (apis[], apps[], maxBodyBytes) -> signature (apps[].signature) -> encryption (apps[].encryption)
    -> rate_limit (apis[].rateLimit, apps[].rateLimit) -> session (sessionValidation, apis[].authRequired)
    -> cache (apis[].cache) -> mock (apis[].mock) -> canary (apis[].canary)
    -> forward (upstreams[], apis[] path/method/timeout/retries/headerMappings)

Each module owns its field's compile step (`from_spec`: resource -> the compiled form the route table holds)
and its run step, which either lets the request go on or answers it with a result code (docs/gateway.md).
The order is code, not configuration: each step is a direct call, compiled with the rest of the hot path.
"""
