"""Stage `session` — `spec.sessionValidation` (upstream, path, header, cacheSeconds) for the APIs with
`authRequired`: is the caller logged in, and as which user?

The session token is checked by a POST to the validation upstream (2xx: valid, the user id in its `uid`
header; 401/403/404: not logged in); valid sessions are remembered for `cacheSeconds`. The user id reaches
the API's upstream as `X-User-Id`, set only here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp

from ...api.gateway import SessionValidation as SessionValidationSpec
from ...http1 import Request
from .. import codes
from ..codes import ResultCode
from .forward import CompiledUpstream, member


@dataclass(frozen=True)
class SessionValidation:
    upstream: str
    path: str
    header: str  # lower-case
    cache_seconds: int


def from_spec(spec: SessionValidationSpec | None) -> SessionValidation | None:
    if spec is None:
        return None
    return SessionValidation(spec.upstream, spec.path, spec.header.lower(), spec.cache_seconds)


class SessionCache:
    """Sessions the validation upstream accepted, remembered for `cacheSeconds`."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, token: str) -> str | None:
        """The user id of a remembered valid session ("" when the upstream named none)."""
        item = self._items.get(token)
        if item is None or item[0] <= time.monotonic():
            self._items.pop(token, None)
            return None
        return item[1]

    def put(self, token: str, user_id: str, seconds: int) -> None:
        if seconds <= 0:
            return
        self._items[token] = (time.monotonic() + seconds, user_id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


async def check_login(
    request: Request,
    validation: SessionValidation | None,
    upstreams: dict[str, CompiledUpstream],
    sessions: SessionCache,
    http: aiohttp.ClientSession | None,
) -> ResultCode | str:
    """The user id of a valid session (may be ""), or the code to answer with."""
    if validation is None:  # the CRD requires sessionValidation for authRequired APIs
        return codes.LOGIN_REQUIRED
    token = request.headers.get(validation.header)
    if not token:
        return codes.LOGIN_REQUIRED
    known = sessions.get(token)
    if known is not None:
        return known
    upstream = upstreams.get(validation.upstream)
    if upstream is not None:
        upstream = member(upstreams, upstream)
    url = upstream.pick() if upstream is not None else None
    if upstream is None or url is None or http is None:
        return codes.UPSTREAM_UNAVAILABLE
    asked = time.perf_counter()
    try:
        async with http.post(
            url + validation.path,
            headers={validation.header: token},
            timeout=aiohttp.ClientTimeout(total=upstream.timeout_seconds),
        ) as resp:
            status, user = resp.status, resp.headers.get("uid", "")
    except TimeoutError:
        return codes.UPSTREAM_TIMEOUT
    except aiohttp.ClientError:
        return codes.UPSTREAM_UNAVAILABLE
    finally:
        request.waited += time.perf_counter() - asked
    if 200 <= status < 300:
        sessions.put(token, user, validation.cache_seconds)
        return user
    if status in (401, 403, 404):
        return codes.LOGIN_REQUIRED
    return codes.UPSTREAM_ERROR
