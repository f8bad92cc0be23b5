"""Stage `canary` — `spec.apis[].canary` (upstream, percent, rule): send the matching share of an API's
requests to another upstream.

`rule` is the gray-rule language (mpaas.rules) over the attributes clients send as headers; `percent` picks
devices by a stable hash of `Did` (the client IP without one), so a device stays on one side. Both set: a
request must match the rule and fall in the percent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...api.gateway import CanaryRoute
from ...http1 import Request
from ...rules import Predicate, compile_rule, percent_of

# Rule attributes the client sends as headers (canary rules, docs/gateway.md).
ATTRIBUTE_HEADERS = {
    "DEVICE_ID": "did",
    "USER_ID": "uid",
    "APP_VERSION": "app-version",
    "OS_VERSION": "os-version",
    "PLATFORM": "platform",
    "BRAND": "brand",
    "MODEL": "model",
    "CITY": "city",
    "NETWORK": "network",
    "CHANNEL": "channel",
}


@dataclass(frozen=True)
class Canary:
    upstream: str
    percent: int | None
    rule: Predicate | None


def from_spec(spec: CanaryRoute | None) -> Canary | None:
    if spec is None:
        return None
    return Canary(spec.upstream, spec.percent, compile_rule(spec.rule) if spec.rule else None)


def chosen(canary: Canary, request: Request, op: str, app_id: str, workspace_id: str) -> bool:
    """Whether this request goes to the canary upstream."""
    h = request.headers
    hit = True
    if canary.rule is not None:
        attrs = {attr: h.get(name, "") for attr, name in ATTRIBUTE_HEADERS.items()}
        attrs.update(APP_ID=app_id, WORKSPACE_ID=workspace_id, CLIENT_IP=request.client_ip)
        hit = canary.rule(attrs)
    if hit and canary.percent is not None:
        hit = percent_of(h.get("did") or request.client_ip, canary.percent, salt=op)
    return hit
