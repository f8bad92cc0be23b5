"""Stage `rate limit` — `spec.apis[].rateLimit` and `spec.apps[].rateLimit` (requestsPerSecond, burst): token
buckets in the hot store, shared by every replica when it is Redis (local while Redis is away)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from ...api.base import RateLimit as RateLimitSpec
from ...stores import HotStore
from .. import codes
from ..codes import ResultCode

RATE_LIMITED = Counter("mpaas_gateway_rate_limited_total", "Requests refused by a rate limit", ["scope"])


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: int


def from_spec(spec: RateLimitSpec | None) -> RateLimit | None:
    if spec is None:
        return None
    rps = float(spec.requests_per_second)
    return RateLimit(rps, int(spec.burst or max(1, int(rps))))


async def admit(
    hot: HotStore,
    gateway: str,
    op: str,
    api_limit: RateLimit | None,
    app_id: str,
    workspace_id: str,
    app_limit: RateLimit | None,
) -> ResultCode | None:
    """None when both buckets (the API's, then the app's) had a token; else 1002 naming the one that did not."""
    if api_limit is not None and not await hot.take_tokens(
        f"rl:{gateway}:api:{op}", rate=api_limit.per_second, burst=api_limit.burst
    ):
        RATE_LIMITED.labels("api").inc()
        return codes.RATE_LIMITED.because(f"rate limit of {op} reached")
    if app_limit is not None and not await hot.take_tokens(
        f"rl:{gateway}:app:{app_id}:{workspace_id}", rate=app_limit.per_second, burst=app_limit.burst
    ):
        RATE_LIMITED.labels("app").inc()
        return codes.RATE_LIMITED.because(f"rate limit of app {app_id} reached")
    return None
