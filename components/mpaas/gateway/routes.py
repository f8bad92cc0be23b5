"""Compile MpaasGateway resources (and the Secrets they name) into the request-ready route table.

Everything a request needs is resolved here, once per config change: upstream
URLs and weights, timeouts, apps with their signature verifiers, canary rules,
limits. The hot path only does dictionary lookups on the compiled table.
"""

from __future__ import annotations

import base64
import bisect
import functools
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ..api.gateway import DEFAULT_TIMEOUT_MS, ApiState, CircuitBreaker, GatewayApp, GatewaySpec, Upstream
from ..config import Resource, Resources, unlisted
from ..crypto import envelope, signing
from ..rules import Predicate, compile_rule

KIND = "MpaasGateway"
SECRET = "Secret"
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD", "OPTIONS"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledUpstream:
    name: str
    base_urls: tuple[str, ...]
    cumulative_weights: tuple[int, ...]
    timeout_seconds: float
    max_concurrency: int | None = None
    breaker: CircuitBreaker | None = None
    failover: str | None = None
    # A cluster group: the member upstreams' names (no endpoints of its own); weights in cumulative_weights.
    members: tuple[str, ...] = ()

    def pick(self, exclude: frozenset[str] | set[str] = frozenset()) -> str | None:
        """A weighted random endpoint not in `exclude` (ejected or already tried)."""
        return _weighted_pick(self.base_urls, self.cumulative_weights, exclude)


def _weighted_pick(items: tuple[str, ...], cumulative: tuple[int, ...], exclude: Set[str] = frozenset()) -> str | None:
    """One of `items` at random by weight (given as running sums), leaving out `exclude`; None if none is left."""
    if not exclude:
        if len(items) == 1:
            return items[0]
        return items[bisect.bisect_right(cumulative, random.random() * cumulative[-1])]
    weights, prev = [], 0
    for item, cum in zip(items, cumulative, strict=True):
        weights.append(0 if item in exclude else cum - prev)
        prev = cum
    if not any(weights):
        return None
    return random.choices(items, weights)[0]


def _weighted_order(items: tuple[str, ...], cumulative: tuple[int, ...]) -> list[str]:
    """All of `items` in a random order where heavier ones tend to come first; weight-0 (standby) ones last."""
    keyed, standby, prev = [], [], 0
    for item, cum in zip(items, cumulative, strict=True):
        weight, prev = cum - prev, cum
        if weight > 0:
            keyed.append((random.random() ** (1 / weight), item))  # Efraimidis-Spirakis weighted sampling
        else:
            standby.append(item)
    return [item for _, item in sorted(keyed, reverse=True)] + standby


@dataclass(frozen=True)
class CompiledCanary:
    upstream: str
    percent: int | None
    rule: Predicate | None


@dataclass(frozen=True)
class CompiledMock:
    status: int
    render: Callable[[object, Mapping[str, str]], bytes]  # (request JSON, headers) -> body


@dataclass(frozen=True)
class CompiledSession:
    upstream: str
    path: str
    header: str  # lower-case
    cache_seconds: int


_PLACEHOLDER = re.compile(r"\{\{\s*(body|header)\.([A-Za-z0-9_.-]+)\s*\}\}")


def _lookup(source: str, name: str, body: object, headers: Mapping[str, str]) -> object:
    if source == "header":
        return headers.get(name.lower(), "")
    value = body
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def compile_mock(status: int, body: object, template: bool) -> CompiledMock:
    """A mock response: static JSON, or a template with {{body.field}} and {{header.Name}} placeholders."""
    static = json.dumps(body if body is not None else {}, ensure_ascii=False).encode()
    if not template:
        return CompiledMock(status, lambda _body, _headers: static)

    def fill(node: object, req: object, headers: Mapping[str, str]) -> object:
        if isinstance(node, str):
            whole = _PLACEHOLDER.fullmatch(node)
            if whole:  # "{{body.count}}" keeps the value's JSON type
                return _lookup(whole.group(1), whole.group(2), req, headers)
            return _PLACEHOLDER.sub(lambda m: str(_lookup(m.group(1), m.group(2), req, headers) or ""), node)
        if isinstance(node, list):
            return [fill(x, req, headers) for x in node]
        if isinstance(node, dict):
            return {k: fill(v, req, headers) for k, v in node.items()}
        return node

    return CompiledMock(status, lambda req, headers: json.dumps(fill(body, req, headers), ensure_ascii=False).encode())


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
    retries: int = 0
    rate_limit: tuple[float, int] | None = None  # (per second, burst)
    canary: CompiledCanary | None = None
    auth_required: bool = False
    mock: CompiledMock | None = None
    cache: tuple[int, tuple[str, ...]] | None = None  # (ttl seconds, key fields)


@dataclass(frozen=True)
class CompiledApp:
    app_id: str
    workspace_id: str
    algorithm: str | None  # None: requests are not signed
    # (verify, valid until epoch seconds or None for the current key); current key first.
    verifiers: KeyChain[signing.Verify]
    key_problem: str | None
    timestamp_window_ms: int
    require_nonce: bool
    rate_limit: tuple[float, int] | None
    encryption: str = "Disabled"  # Disabled | Optional | Required
    cipher: str = "AesGcm"
    unwrappers: dict[str, KeyChain[envelope.Unwrap]] = field(default_factory=dict)  # keyWrap -> unwrap keys


@dataclass(frozen=True)
class RouteTable:
    gateway: str  # namespace/name of the resource this table came from
    generation: int
    apis: dict[str, CompiledApi] = field(default_factory=dict)
    apps: dict[tuple[str, str], CompiledApp] = field(default_factory=dict)  # empty: every call refused (1003)
    upstreams: dict[str, CompiledUpstream] = field(default_factory=dict)
    max_body_bytes: int = 1_048_576
    session: CompiledSession | None = None

    def member(self, upstream: CompiledUpstream) -> CompiledUpstream:
        """The upstream that serves a request sent to `upstream`: itself, or for a group a member by weight."""
        if not upstream.members:
            return upstream
        name = _weighted_pick(upstream.members, upstream.cumulative_weights)
        return self.upstreams[name] if name is not None else upstream

    def alternatives(self, first: CompiledUpstream, used: CompiledUpstream) -> list[CompiledUpstream]:
        """Who takes a request sent to `first` that `used` cannot take, in the order to try them: the other
        members of the group `first` (by weight, standbys last), then `first`'s failoverUpstream."""
        out: list[CompiledUpstream] = []
        seen = {used.name}
        fallback = self.upstreams.get(first.failover) if first.failover else None
        for u in (first, fallback):
            if u is None:
                continue
            for name in _weighted_order(u.members, u.cumulative_weights) if u.members else [u.name]:
                candidate = self.upstreams.get(name)
                if candidate is not None and name not in seen and not candidate.members:
                    seen.add(name)
                    out.append(candidate)
        return out


EMPTY = RouteTable(gateway="", generation=0)


def _upstream(u: Upstream, namespace: str) -> CompiledUpstream:
    if u.clusters:
        # All weights 0 only gets past the CRD's rule in directory mode: then share alike.
        weights = [c.weight for c in u.clusters] if any(c.weight for c in u.clusters) else [1] * len(u.clusters)
        return CompiledUpstream(
            name=u.name,
            base_urls=(),
            cumulative_weights=tuple(itertools.accumulate(weights)),
            timeout_seconds=u.timeout_milliseconds / 1000,
            failover=u.failover_upstream,
            members=tuple(c.upstream for c in u.clusters),
        )
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
        max_concurrency=u.max_concurrency,
        breaker=u.circuit_breaker,
        failover=u.failover_upstream,
    )


K = TypeVar("K")
# (key material in use, valid until epoch seconds or None for the current one); current first.
KeyChain = tuple[tuple[K, float | None], ...]


class KeyRing:
    """Every app's keys (signature verifiers, session-key unwrappers) across config changes.

    When an app's Secret changes its key (rotation), the previous key stays
    usable for the app's `keyOverlapSeconds`, so clients still on the old key
    keep working while they pick up the new one. A Secret that is deleted, or
    no longer holds the key, revokes it at once, with every previous key: that
    is how an operator withdraws a leaked key. A key that does not load (broken
    PEM, too short) keeps the last good key in use, as does a Secret not yet
    known (its watch still waiting for access); the problem is reported.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._current: dict[tuple[str, ...], tuple[bytes, Any]] = {}
        self._previous: dict[tuple[str, ...], list[tuple[Any, float]]] = {}

    def chain(
        self,
        key: tuple[str, ...],
        material: bytes | None,
        build: Callable[[bytes], K],
        overlap: int,
        *,
        known: bool = True,
    ) -> tuple[KeyChain[K], str | None]:
        """The usable keys for `key` given the Secret's current `material` (None: Secret or entry missing;
        `known` False: the Secret's content is not known yet, so its absence is not a deletion)."""
        if not material and known:  # deleted, or the entry removed: revoked now, previous keys too
            revoked = self._current.pop(key, None) is not None
            revoked = bool(self._previous.pop(key, None)) or revoked
            return (), "credentials Secret or key entry not found" + (" (key revoked)" if revoked else "")
        now = self.clock()
        previous = [(v, until) for v, until in self._previous.get(key, []) if until > now]
        problem = None
        current = None
        seen = self._current.get(key)
        if not material:
            problem = "credentials Secret not readable yet"
        elif seen is not None and seen[0] == material:
            current = seen[1]
        else:
            try:
                current = build(material)
            except (signing.KeyProblem, envelope.EnvelopeError) as e:
                problem = str(e)
            if current is not None:
                if seen is not None and overlap > 0:
                    previous.append((seen[1], now + overlap))
                self._current[key] = (material, current)
        if current is None and key in self._current:
            current = self._current[key][1]
        self._previous[key] = previous
        out: list[tuple[K, float | None]] = [(current, None)] if current is not None else []
        out += [(v, until) for v, until in previous]
        return tuple(out), problem


def _secret_data(resources: Resources, namespace: str, name: str | None) -> dict[str, bytes] | None:
    """The Secret's decoded data; {} when it does not exist; None when it is not known yet (watch not listed)."""
    if not name:
        return {}
    res = resources.get(SECRET, {}).get((namespace, name))
    if res is None:
        return None if (namespace, name) in resources.get(unlisted(SECRET), {}) else {}
    out = {}
    for k, v in (res.spec or {}).items():
        try:
            out[k] = base64.b64decode(v)
        except (ValueError, TypeError):
            continue
    return out


def _limit(rl: object) -> tuple[float, int] | None:
    if rl is None:
        return None
    rps = float(rl.requests_per_second)  # type: ignore[attr-defined]
    return rps, int(rl.burst or max(1, int(rps)))  # type: ignore[attr-defined]


class Compiler:
    """Resources -> RouteTable for one gateway; keeps the key ring between compilations."""

    def __init__(self, namespace: str | None, name: str | None, keyring: KeyRing | None = None):
        self.namespace, self.name = namespace, name
        self.keyring = keyring or KeyRing()

    def __call__(self, resources: Resources) -> RouteTable:
        res = select(resources, self.namespace, self.name)
        return self.compile(res, resources) if res is not None else EMPTY

    def _app(self, res: Resource, app: GatewayApp, resources: Resources) -> CompiledApp:
        algorithm = None if app.signature.algorithm == "None" else str(app.signature.algorithm)
        verifiers: KeyChain[signing.Verify] = ()
        problem = None
        if algorithm:
            ref = app.credentials_secret_ref.name if app.credentials_secret_ref else None
            algo = signing.ALGORITHMS[algorithm]
            secret = _secret_data(resources, res.namespace, ref)
            verifiers, problem = self.keyring.chain(
                ("sign", algorithm, res.namespace, app.app_id, app.workspace_id),
                (secret or {}).get(algo.secret_key),
                algo.make_verifier,
                app.key_overlap_seconds,
                known=secret is not None,
            )
            if problem:
                log.warning("app %s/%s: %s (Secret %s/%s)", app.app_id, app.workspace_id, problem, res.namespace, ref)
        return CompiledApp(
            app_id=app.app_id,
            workspace_id=app.workspace_id,
            algorithm=algorithm,
            verifiers=verifiers,
            key_problem=problem,
            timestamp_window_ms=app.signature.timestamp_window_seconds * 1000,
            require_nonce=app.signature.require_nonce,
            rate_limit=_limit(app.rate_limit),
            encryption=str(app.encryption.mode),
            cipher=str(app.encryption.cipher),
            unwrappers=self._unwrappers(res, app, resources),
        )

    def _unwrappers(self, res: Resource, app: GatewayApp, resources: Resources) -> dict[str, KeyChain[envelope.Unwrap]]:
        """Session-key unwrappers per allowed key wrap, from the gateway keys in the app's Secret."""
        out: dict[str, KeyChain[envelope.Unwrap]] = {}
        if app.encryption.mode == "Disabled":
            return out
        ref = app.credentials_secret_ref.name if app.credentials_secret_ref else None
        data = _secret_data(resources, res.namespace, ref)
        for wrap in map(str, app.encryption.key_wraps):
            chain, problem = self.keyring.chain(
                ("wrap", wrap, res.namespace, app.app_id, app.workspace_id),
                (data or {}).get(envelope.SECRET_KEYS[wrap]),
                functools.partial(envelope.unwrapper, wrap),
                app.key_overlap_seconds,
                known=data is not None,
            )
            if problem:
                log.warning(
                    "app %s/%s: %s for %s (Secret %s/%s)",
                    app.app_id,
                    app.workspace_id,
                    problem,
                    wrap,
                    res.namespace,
                    ref,
                )
            if chain:
                out[wrap] = chain
        return out

    def compile(self, res: Resource, resources: Resources) -> RouteTable:
        spec: GatewaySpec = res.spec
        upstreams = {u.name: _upstream(u, res.namespace) for u in spec.upstreams}
        apis = {}
        for a in spec.apis:
            up = upstreams.get(a.upstream)
            if up is None:  # the CRD's CEL rule rejects this; directory mode has no such guard
                raise ValueError(f"api {a.operation_type!r} names unknown upstream {a.upstream!r}")
            timeout_ms = a.timeout_milliseconds or (up.timeout_seconds * 1000) or DEFAULT_TIMEOUT_MS
            canary = None
            if a.canary is not None:
                canary = CompiledCanary(
                    upstream=a.canary.upstream,
                    percent=a.canary.percent,
                    rule=compile_rule(a.canary.rule) if a.canary.rule else None,
                )
            apis[a.operation_type] = CompiledApi(
                operation_type=a.operation_type,
                upstream=up,
                path=a.path,
                method=a.method,
                timeout_seconds=timeout_ms / 1000,
                online=a.state == ApiState.ONLINE,
                allowed_apps=frozenset(a.apps),
                # Request header names are kept lower-case (http1.Headers): match any spelling.
                header_mappings=tuple((m.from_.lower(), m.to) for m in a.header_mappings),
                retries=a.retries,
                rate_limit=_limit(a.rate_limit),
                canary=canary,
                auth_required=a.auth_required,
                mock=compile_mock(a.mock.status_code, a.mock.body, a.mock.template)
                if a.mock is not None and a.mock.enabled
                else None,
                cache=(a.cache.ttl_seconds, tuple(a.cache.key_fields)) if a.cache is not None else None,
            )
        return RouteTable(
            gateway=f"{res.namespace}/{res.name}",
            generation=res.generation,
            apis=apis,
            apps={(app.app_id, app.workspace_id): self._app(res, app, resources) for app in spec.apps},
            upstreams=upstreams,
            max_body_bytes=spec.max_body_bytes,
            session=CompiledSession(sv.upstream, sv.path, sv.header.lower(), sv.cache_seconds)
            if (sv := spec.session_validation) is not None
            else None,
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
