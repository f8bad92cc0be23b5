"""Stage `route` — `spec.apis[]` (operationType, state, apps) and `spec.apps[]`, with `spec.maxBodyBytes`: which
API and which app a request is for, and may that app call it now? Also the route table itself.

The route table is everything a request needs, compiled once per config change from the MpaasGateway resource
and the Secrets it names: each stage compiles its own fields (`<stage>.from_spec`) into the API's or app's
entry. The hot path only does dictionary lookups on it; a request reads the current table once, so a config
swap never changes the rules under an in-flight request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from ...api.gateway import ApiState, GatewayApp, GatewaySpec
from ...config import Resource, Resources
from ...http1 import Request
from ...keyring import SECRET, KeyRing
from ...rules import parse_uint
from .. import codes
from ..codes import ResultCode
from . import cache, canary, encryption, forward, mock, rate_limit, session, signature
from .cache import CachePolicy
from .canary import Canary
from .encryption import Encryption
from .forward import CompiledUpstream, Forward
from .mock import CompiledMock
from .rate_limit import RateLimit
from .session import SessionValidation
from .signature import Signature

KIND = "MpaasGateway"
__all__ = ["EMPTY", "KIND", "SECRET", "CompiledApi", "CompiledApp", "Compiler", "RouteTable", "compile_gateway"]


@dataclass(frozen=True)
class CompiledApi:
    operation_type: str
    online: bool
    allowed_apps: frozenset[str]  # empty: every app
    forward: Forward
    rate_limit: RateLimit | None = None
    auth_required: bool = False  # the session stage runs
    cache: CachePolicy | None = None
    mock: CompiledMock | None = None
    canary: Canary | None = None


@dataclass(frozen=True)
class CompiledApp:
    app_id: str
    workspace_id: str
    signature: Signature | None = None  # None: requests are not signed
    encryption: Encryption | None = None  # None: bodies are never sealed
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class RouteTable:
    gateway: str  # namespace/name of the resource this table came from
    generation: int
    apis: dict[str, CompiledApi] = field(default_factory=dict)
    apps: dict[tuple[str, str], CompiledApp] = field(default_factory=dict)  # empty: every call refused (1003)
    upstreams: dict[str, CompiledUpstream] = field(default_factory=dict)
    max_body_bytes: int = 1_048_576
    session: SessionValidation | None = None


EMPTY = RouteTable(gateway="", generation=0)


class Compiler:
    """Resources -> RouteTable for one gateway; keeps the key ring between compilations."""

    def __init__(self, namespace: str | None, name: str | None, keyring: KeyRing | None = None):
        self.namespace, self.name = namespace, name
        self.keyring = keyring or KeyRing()

    def __call__(self, resources: Resources) -> RouteTable:
        res = select(resources, self.namespace, self.name)
        return self.compile(res, resources) if res is not None else EMPTY

    def _app(self, namespace: str, app: GatewayApp, resources: Resources) -> CompiledApp:
        return CompiledApp(
            app_id=app.app_id,
            workspace_id=app.workspace_id,
            signature=signature.from_spec(app, namespace, resources, self.keyring),
            encryption=encryption.from_spec(app, namespace, resources, self.keyring),
            rate_limit=rate_limit.from_spec(app.rate_limit),
        )

    def compile(self, res: Resource, resources: Resources) -> RouteTable:
        spec: GatewaySpec = res.spec
        upstreams = {u.name: forward.upstream_from_spec(u, res.namespace) for u in spec.upstreams}
        apis = {
            a.operation_type: CompiledApi(
                operation_type=a.operation_type,
                online=a.state == ApiState.ONLINE,
                allowed_apps=frozenset(a.apps),
                forward=forward.from_spec(a, upstreams),
                rate_limit=rate_limit.from_spec(a.rate_limit),
                auth_required=a.auth_required,
                cache=cache.from_spec(a.cache),
                mock=mock.from_spec(a.mock),
                canary=canary.from_spec(a.canary),
            )
            for a in spec.apis
        }
        return RouteTable(
            gateway=f"{res.namespace}/{res.name}",
            generation=res.generation,
            apis=apis,
            apps={(app.app_id, app.workspace_id): self._app(res.namespace, app, resources) for app in spec.apps},
            upstreams=upstreams,
            max_body_bytes=spec.max_body_bytes,
            session=session.from_spec(spec.session_validation),
        )


def compile_gateway(res: Resource, resources: Resources | None = None) -> RouteTable:
    return Compiler(res.namespace, res.name).compile(res, resources or {})


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


def compiler(namespace: str | None, name: str | None) -> Compiler:
    return Compiler(namespace, name)


def secrets_named(resources: Resources) -> set[tuple[str, str]]:
    """The Secrets to watch: those the gateway resources name (the operator grants access to these only)."""
    return {
        (res.namespace, secret)
        for res in resources.get(KIND, {}).values()
        for secret in cast(GatewaySpec, res.spec).secret_names()
    }


# ---- the stage ----------------------------------------------------------------------------------------------

# Protocol headers that hold one value: sent twice they would be read one way and forwarded another (3005).
# The API's session header counts too (table.session.header).
SINGLE_VALUED = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "expect",
        "appid",
        "workspaceid",
        "operation-type",
        "ts",
        "nonce",
        "sign",
        "mgw-key",
        "mgw-key-type",
        "mgw-traceid",
        "traceparent",
        "if-none-match",
        "x-user-id",
        "did",
        "uid",
        "app-version",
        "os-version",
        "platform",
        "brand",
        "model",
        "city",
        "network",
        "channel",
    }
)


def match(
    table: RouteTable, request: Request, op: str | None, app_id: str, workspace_id: str
) -> ResultCode | tuple[CompiledApi, CompiledApp]:
    """The API and app of a request that may go on; else the code to refuse it with."""
    if table is EMPTY:
        return codes.GATEWAY_NOT_READY
    headers = request.headers
    if len(headers) != len(headers.items()):  # a name repeats (rare: checked only then)
        twice = headers.repeated()
        doubled = sorted(twice & SINGLE_VALUED)
        if table.session is not None and table.session.header in twice:
            doubled.append(table.session.header)
        if doubled:
            return codes.DUPLICATE_HEADER.because(f"{codes.DUPLICATE_HEADER.memo}: {', '.join(doubled)}")
    if not op:
        return codes.OPERATION_TYPE_MISSING
    api = table.apis.get(op)
    if api is None:
        return codes.OPERATION_TYPE_UNKNOWN
    app = table.apps.get((app_id, workspace_id))
    if app is None:  # never an app it does not know, also when it knows none (spec.apps empty)
        return codes.UNKNOWN_APP
    if api.allowed_apps and app_id not in api.allowed_apps:
        return codes.ACCESS_DENIED
    if not api.online:
        return codes.API_OFFLINE
    declared = headers.get("content-length")
    if declared is not None:
        size = parse_uint(declared)  # the server checked it (ASCII digits); other servers may not
        if size is None or size > table.max_body_bytes:
            return codes.REQUEST_TOO_LARGE
    return api, app
