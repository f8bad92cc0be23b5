"""Compile MpaasGateway resources into the gateway's request-ready route table.

Everything a request needs is resolved here, once per config change: the
upstream URL of each API, weights, timeouts, allowed apps. The hot path only
does dictionary lookups on the compiled table.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..api.gateway import DEFAULT_TIMEOUT_MS, ApiState, GatewaySpec, Upstream
from ..config import Resource, Resources

KIND = "MpaasGateway"


@dataclass(frozen=True)
class CompiledUpstream:
    name: str
    base_urls: tuple[str, ...]
    cumulative_weights: tuple[int, ...]
    timeout_seconds: float

    def pick(self) -> str:
        if len(self.base_urls) == 1:
            return self.base_urls[0]
        total = self.cumulative_weights[-1]
        return self.base_urls[bisect.bisect_right(self.cumulative_weights, random.random() * total)]


@dataclass(frozen=True)
class CompiledApi:
    operation_type: str
    upstream: CompiledUpstream
    path: str
    method: str
    timeout_seconds: float
    online: bool
    allowed_apps: frozenset[str]  # empty: every app
    header_mappings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RouteTable:
    gateway: str  # namespace/name of the resource this table came from
    generation: int
    apis: dict[str, CompiledApi] = field(default_factory=dict)
    apps: frozenset[tuple[str, str]] = frozenset()  # (appId, workspaceId); empty: no app check
    max_body_bytes: int = 1_048_576


EMPTY = RouteTable(gateway="", generation=0)


def _upstream(u: Upstream, namespace: str) -> CompiledUpstream:
    if u.service_ref is not None:
        ref = u.service_ref
        urls: list[str] = [f"{ref.scheme}://{ref.name}.{ref.namespace or namespace}.svc:{ref.port}"]
        weights = [1]
    else:
        live = [e for e in u.endpoints if e.weight > 0] or u.endpoints
        urls = [e.url.rstrip("/") for e in live]
        weights = [max(e.weight, 1) for e in live]
    return CompiledUpstream(
        name=u.name,
        base_urls=tuple(urls),
        cumulative_weights=tuple(itertools.accumulate(weights)),
        timeout_seconds=u.timeout_milliseconds / 1000,
    )


def compile_gateway(res: Resource) -> RouteTable:
    spec: GatewaySpec = res.spec
    upstreams = {u.name: _upstream(u, res.namespace) for u in spec.upstreams}
    apis = {}
    for a in spec.apis:
        up = upstreams.get(a.upstream)
        if up is None:  # the CRD's CEL rule rejects this; directory mode has no such guard
            raise ValueError(f"api {a.operation_type!r} names unknown upstream {a.upstream!r}")
        timeout_ms = a.timeout_milliseconds or (up.timeout_seconds * 1000) or DEFAULT_TIMEOUT_MS
        apis[a.operation_type] = CompiledApi(
            operation_type=a.operation_type,
            upstream=up,
            path=a.path,
            method=a.method,
            timeout_seconds=timeout_ms / 1000,
            online=a.state == ApiState.ONLINE,
            allowed_apps=frozenset(a.apps),
            header_mappings=tuple((m.from_, m.to) for m in a.header_mappings),
        )
    return RouteTable(
        gateway=f"{res.namespace}/{res.name}",
        generation=res.generation,
        apis=apis,
        apps=frozenset((app.app_id, app.workspace_id) for app in spec.apps),
        max_body_bytes=spec.max_body_bytes,
    )


def select(resources: Resources, namespace: str | None, name: str | None) -> Resource | None:
    """The gateway resource this process serves: the named one, or the only one there is."""
    gateways = resources.get(KIND, {})
    if name:
        for (ns, n), res in gateways.items():
            if n == name and (namespace is None or ns == namespace):
                return res
        return None
    if len(gateways) == 1:
        return next(iter(gateways.values()))
    if gateways:
        raise ValueError(
            f"{len(gateways)} MpaasGateway resources found; set MPAAS_GATEWAY_NAME to pick one "
            f"({', '.join(sorted(f'{ns}/{n}' for ns, n in gateways))})"
        )
    return None


def compiler(namespace: str | None, name: str | None) -> Callable[[Resources], RouteTable]:
    def compile_(resources: Resources) -> RouteTable:
        res = select(resources, namespace, name)
        return compile_gateway(res) if res is not None else EMPTY

    return compile_
