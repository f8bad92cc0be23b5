"""MpaasGateway: one mobile API gateway, its apps, upstreams and APIs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import (
    APP_ID,
    DNS_LABEL,
    ApiModel,
    Autoscaling,
    RateLimit,
    ResourceRequirements,
    SecretKeyRef,
    SecretRef,
    WorkloadStatus,
    cel,
    named_list,
)
from .delivery import Platform

OPERATION_TYPE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DEFAULT_TIMEOUT_MS = 3000


class SignatureAlgorithm(StrEnum):
    NONE = "None"
    HMAC_SHA256 = "HmacSha256"
    ECDSA_P256 = "EcdsaP256"
    RSA2048 = "Rsa2048"
    SM2 = "Sm2"


class EncryptionMode(StrEnum):
    DISABLED = "Disabled"
    OPTIONAL = "Optional"
    REQUIRED = "Required"


class KeyWrap(StrEnum):
    RSA_OAEP = "RsaOaep"
    ECIES_P256 = "EciesP256"
    SM2 = "Sm2"


class BodyCipher(StrEnum):
    AES_GCM = "AesGcm"
    SM4_GCM = "Sm4Gcm"


class SignaturePolicy(ApiModel):
    """How the gateway checks an app's request signatures: the Sign, Ts and Nonce headers (docs/gateway.md)."""

    algorithm: SignatureAlgorithm = Field(
        default=SignatureAlgorithm.NONE,
        description="Algorithm the app's requests are signed with; the app's setting, never the client, picks it. "
        "None: requests are not signed. HmacSha256 checks with the key hmacKey of the app's Secret; EcdsaP256, "
        "Rsa2048 and Sm2 with publicKey (PEM). Default None.",
    )
    timestamp_window_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="How far a request's Ts header (epoch milliseconds) may be from the gateway's clock, either way, "
        "in seconds, 1-86400; older or newer requests get result 7004. Default 300.",
    )
    require_nonce: bool = Field(
        default=False,
        description="Refuse signed requests without a Nonce header (result 7005). Required or not, a Nonce is "
        "accepted only once within twice timestampWindowSeconds (result 7006 on a replay). Default false.",
    )


class EncryptionPolicy(ApiModel):
    """End-to-end encryption of bodies: the client seals the request body with a fresh session key, wrapped for
    the gateway's key; the answer comes back sealed with the same session key (docs/gateway.md)."""

    __cel__ = [
        cel(
            "self.mode == 'Disabled' || size(self.keyWraps) > 0",
            "encryption needs at least one keyWrap unless mode is Disabled",
        )
    ]
    mode: EncryptionMode = Field(
        default=EncryptionMode.DISABLED,
        description="Disabled: bodies are not decrypted. Optional: sealed and plain request bodies are both "
        "accepted. Required: plain request bodies are refused (result 7011). Default Disabled.",
    )
    key_wraps: list[KeyWrap] = Field(
        default_factory=list,
        max_length=3,
        description="How clients may wrap the session key (their Mgw-Key-Type header): RsaOaep, EciesP256 or Sm2, "
        "opened with the gateway key rsaPrivateKey, ecPrivateKey or sm2PrivateKey of the app's Secret. "
        "At least one unless mode is Disabled.",
    )
    cipher: BodyCipher = Field(
        default=BodyCipher.AES_GCM,
        description="Body cipher under the 16-byte session key: AesGcm (AES-128-GCM) or Sm4Gcm (SM4-GCM). "
        "Default AesGcm.",
    )


CODE_PUSH_KEY = r"^[A-Za-z0-9_.=-]{8,128}$"


class CodePushDeployment(ApiModel):
    """A CodePush deployment of the app: the deployment key its React Native build compiles in names the app,
    its workspace and platform to the delivery component's CodePush routes."""

    name: str = Field(
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The deployment's name, e.g. Production or Staging; a DeliveryTask whose "
        "targeting.filters.channels is set serves the deployments it names (any case), one without channels "
        "serves every deployment of its app and platform.",
    )
    platform: Platform = Field(description="The platform the deployment's builds run on: Android, IOS or Harmony.")
    key: str = Field(
        max_length=128,
        pattern=CODE_PUSH_KEY,
        description="The deployment key, 8-128 letters, digits, _ . = or -. Public by design (compiled into the "
        "app), so not a Secret. Unique across the cluster: within one MpaasGateway a repeated key is refused; "
        "of two MpaasGateways that list one key, the one created first keeps it.",
    )


class CodePush(ApiModel):
    """The app's CodePush deployments (react-native-code-push clients), served by the delivery component."""

    deployments: list[CodePushDeployment] = Field(
        max_length=16,
        min_length=1,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "platform"]},
        description="The deployments, keyed by name and platform. 1 to 16.",
    )


class GatewayApp(ApiModel):
    """A mobile app allowed through this gateway, known by the AppId and WorkspaceId headers of its requests.
    Its keys live in the referenced Secret."""

    app_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        description="The app's id, as clients send it in the AppId header: letters, digits, _ and -, at most 64.",
    )
    workspace_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        description="The app's workspace (an environment such as prod or test), as clients send it in the "
        "WorkspaceId header; appId and workspaceId together identify the app.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with the app's keys: hmacKey or publicKey for signatures, rsaPrivateKey, ecPrivateKey "
        "or sm2PrivateKey for encryption. Required when signature or encryption is on. The gateway may read "
        "only the Secrets its apps name; a changed Secret applies live.",
    )
    signature: SignaturePolicy = Field(
        default_factory=SignaturePolicy,
        description="Request signature check. Default: requests are not signed (algorithm None).",
    )
    encryption: EncryptionPolicy = Field(
        default_factory=EncryptionPolicy, description="Body encryption. Default: off (mode Disabled)."
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        description="Limit on all of the app's requests through the gateway, whatever the API; over it requests "
        "get result 1002. Unset: no limit per app.",
    )
    key_overlap_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="After the app's Secret changes, how long the previous keys still work, in seconds, 0-86400, "
        "so that clients can move to the new ones; 0: at once. Default 300.",
    )
    code_push: CodePush | None = Field(
        default=None,
        description="The app's CodePush deployment keys, for React Native apps built with react-native-code-push "
        "(docs/delivery.md, CodePush). Unset: the app has no CodePush deployments.",
    )
    delivery_public_key: str | None = Field(
        default=None,
        max_length=8192,
        pattern=r"^-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----\s*$",
        description="PEM public key (ECDSA P-256 or RSA) of the app's delivery key: the operator checks every "
        "DeliveryTask package of the app against it before any client is offered it (package.signature, as "
        "`mpaas delivery publish --signing-key` makes it), and refuses unsigned ones. Unset: signatures are "
        "passed on to clients unchecked.",
    )

    __cel__ = [
        cel(
            "self.signature.algorithm == 'None' || has(self.credentialsSecretRef)",
            "a signature algorithm needs credentialsSecretRef naming the Secret with the app's keys",
        ),
        cel(
            "self.encryption.mode == 'Disabled' || has(self.credentialsSecretRef)",
            "encryption needs credentialsSecretRef naming the Secret with the app's keys",
        ),
    ]


class Endpoint(ApiModel):
    """One backend address of an upstream."""

    url: str = Field(
        max_length=2048,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Base URL, http:// or https://, with an optional path prefix; the API's path is appended to it.",
    )
    weight: int = Field(
        default=100,
        ge=0,
        le=10000,
        description="Share of the upstream's requests, relative to its other endpoints, 0-10000. 0: no requests "
        "(unless every endpoint has weight 0: then they share alike). Default 100.",
    )


class ServiceReference(ApiModel):
    """A Kubernetes Service in the gateway's namespace (or `namespace`), called at <name>.<namespace>.svc:<port>."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Name of the Service.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the Service. Unset: the gateway's own namespace.",
    )
    port: int = Field(default=80, ge=1, le=65535, description="Service port to call, 1-65535. Default 80.")
    scheme: str = Field(default="http", pattern=r"^https?$", description="http or https. Default http.")


class CircuitBreaker(ApiModel):
    """Eject an endpoint whose error share in a window passes a threshold (Xiaomi-style).

    Failures are connect errors, timeouts and 5xx answers. Each gateway process keeps its own counts.
    """

    error_threshold_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="Share of an endpoint's requests in the window that must fail to eject it, in percent, 1-100. "
        "Default 50.",
    )
    minimum_requests: int = Field(
        default=20,
        ge=1,
        le=100000,
        description="Requests an endpoint must have had in the window before it can be ejected, 1-100000. Default 20.",
    )
    window_seconds: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="Length of the sliding window requests and failures are counted in, in seconds, 1-3600. "
        "Default 10.",
    )
    ejection_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="How long an ejected endpoint gets no requests, in seconds, 1-3600; it then comes back with "
        "a fresh window. Default 30.",
    )
    max_ejection_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="When more than this share of the upstream's endpoints is ejected, in percent, 0-100, the "
        "upstream takes no requests rather than overload the rest: they go to a sibling cluster or "
        "failoverUpstream, else fail fast with result 4004. Default 50.",
    )


class ClusterMember(ApiModel):
    """One cluster of a cluster group: another upstream of this gateway, and its share of the group's traffic."""

    upstream: str = Field(
        max_length=63,
        pattern=DNS_LABEL,
        description="Name of another entry of spec.upstreams: a plain upstream (endpoints or serviceRef), "
        "not a group and not this upstream itself.",
    )
    weight: int = Field(
        default=100,
        ge=0,
        le=10000,
        description="Share of the group's requests, relative to the other members, 0-10000. 0: a standby, "
        "called only when the weighted members cannot take a request. Default 100.",
    )


class Upstream(ApiModel):
    """Where calls go: weighted endpoints, a Service, or a group of clusters (other upstreams) mixed by weight.

    A request to a group goes to one member picked by weight; when that cluster cannot take it (too many
    endpoints ejected, every endpoint tried, its concurrency limit reached) a sibling takes it instead.
    """

    # Absent lists have no key in CEL (no schema default): `has` before `size`.
    __cel__ = [
        cel(
            "(has(self.serviceRef) ? 1 : 0) + (has(self.endpoints) && size(self.endpoints) > 0 ? 1 : 0)"
            " + (has(self.clusters) && size(self.clusters) > 0 ? 1 : 0) == 1",
            "set exactly one of endpoints, serviceRef or clusters",
        ),
        cel(
            "!has(self.clusters) || size(self.clusters) == 0"
            " || (!has(self.circuitBreaker) && !has(self.maxConcurrency))",
            "a cluster group has no endpoints of its own: set circuitBreaker and maxConcurrency on its members",
        ),
        cel(
            "!has(self.clusters) || size(self.clusters) == 0 || self.clusters.exists(c, c.weight > 0)",
            "a cluster group needs at least one member with weight > 0",
        ),
    ]
    name: str = Field(
        max_length=63,
        pattern=DNS_LABEL,
        description="Name the APIs, canaries, cluster groups and sessionValidation use for this upstream; "
        "unique in the gateway.",
    )
    endpoints: list[Endpoint] = Field(
        default_factory=list,
        max_length=64,
        description="Backend addresses, each request to one picked at random by weight. Set exactly one of "
        "endpoints, serviceRef or clusters. At most 64.",
    )
    service_ref: ServiceReference | None = Field(
        default=None, description="A Kubernetes Service to call, instead of endpoints."
    )
    clusters: list[ClusterMember] = Field(
        default_factory=list,
        max_length=16,
        description="Makes this upstream a cluster group: other upstreams mixed by weight (e.g. one per data "
        "centre); when the chosen member cannot take a request, the others take it in turn, by weight, then "
        "the standbys. A group has no circuitBreaker or maxConcurrency of its own. At most 16.",
    )
    failover_upstream: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Upstream that takes the requests this one cannot (for a group: none of its members can). "
        "A group member's own failoverUpstream applies only where the member is named directly. "
        "Unset: such requests fail.",
    )
    timeout_milliseconds: int = Field(
        default=DEFAULT_TIMEOUT_MS,
        ge=1,
        le=600_000,
        description="Time limit of each call, in milliseconds, 1-600000, for the APIs that name this upstream and "
        "set no timeoutMilliseconds of their own; for a cluster group, whichever member serves the call. "
        f"Default {DEFAULT_TIMEOUT_MS}.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Most calls in flight to this upstream at once, per gateway process, 1-1000000; beyond it "
        "requests go to a sibling cluster or failoverUpstream, else get result 1004. Unset: no limit.",
    )
    circuit_breaker: CircuitBreaker | None = Field(
        default=None, description="Ejects failing endpoints for a while. Unset: endpoints are never ejected."
    )


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class ApiState(StrEnum):
    ONLINE = "Online"
    OFFLINE = "Offline"


class HeaderMapping(ApiModel):
    """Copy request header `from` to upstream header `to`."""

    from_: str = Field(
        alias="from", max_length=128, pattern=r"^[A-Za-z0-9-]+$", description="Name of the client's request header."
    )
    to: str = Field(
        max_length=128,
        pattern=r"^[A-Za-z0-9-]+$",
        description="Header name the upstream receives the value under (the original header is forwarded too). "
        "Headers the gateway controls (Host, Sign, X-User-Id, hop-by-hop ones) cannot be set this way.",
    )


class ResponseCache(ApiModel):
    """Successful answers kept in each gateway process (at most 10000, least recently used go first) and served
    with an ETag: a request whose If-None-Match matches gets 304."""

    ttl_seconds: int = Field(
        ge=1, le=86400, description="How long an answer is served from the cache, in seconds, 1-86400."
    )
    key_fields: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Top-level fields of the JSON request body whose values, with the app (and the user on "
        "authRequired APIs), key the cache. Empty: the whole body. When set, requests whose body is not a JSON "
        "object are not cached. At most 16.",
    )


class MockResponse(ApiModel):
    """A canned answer in place of the upstream call (result 1000, Memo mock), e.g. while the backend is built."""

    enabled: bool = Field(
        default=True, description="Answer with the mock; false keeps it defined but calls the upstream. Default true."
    )
    status_code: int = Field(
        default=200,
        ge=100,
        le=599,
        description="HTTP status of the mock on the REST path (/api/<operationType>), 100-599; /mgw.htm always "
        "answers 200. Default 200.",
    )
    body: Any = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="JSON body of the answer. Unset: {}.",
    )
    template: bool = Field(
        default=False,
        description="Fill placeholders in body's strings from the request: {{body.a.b}} (a field of the JSON "
        "request body) and {{header.Name}}. A string that is only a placeholder takes the value with its JSON "
        "type. Default false.",
    )


class CanaryRoute(ApiModel):
    """Send part of one API's traffic to a second upstream: by percent, by rule, or both (requests matching the
    rule, and of those the percent)."""

    __cel__ = [cel("has(self.percent) || has(self.rule)", "a canary needs percent or rule")]
    upstream: str = Field(
        max_length=63,
        pattern=DNS_LABEL,
        description="Name of the entry of spec.upstreams the canary traffic goes to; not the API's own upstream.",
    )
    percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Share of devices sent to the canary, in percent, 0-100, picked by a stable hash of the device "
        "id (Did header, else the client IP) and the operation type. Unset: every request the rule matches.",
    )
    rule: str | None = Field(
        default=None,
        max_length=2048,
        description="Gray-rule expression over request attributes (DEVICE_ID, USER_ID, APP_VERSION, CITY, ... from "
        "the client's headers), e.g. DEVICE_ID MOD 1000 IN (0..99) && APP_VERSION >= 2.1. Unset: percent alone "
        "decides.",
    )


class GatewayApi(ApiModel):
    """One API: the operation type clients call, and how the gateway serves it."""

    operation_type: str = Field(
        max_length=128,
        pattern=OPERATION_TYPE,
        description="Name clients call the API by: the Operation-Type header on /mgw.htm, or /api/<operationType>. "
        "Unique in the gateway; letters, digits and _ . : -, at most 128.",
    )
    upstream: str = Field(
        max_length=63, pattern=DNS_LABEL, description="Name of the entry of spec.upstreams that serves the API."
    )
    path: str = Field(
        default="/",
        max_length=1024,
        pattern=r"^/[^\s]*$",
        description="Path of the upstream call, appended to the endpoint's URL. Default /.",
    )
    method: HttpMethod = Field(
        default=HttpMethod.POST,
        description="HTTP method of the upstream call. Only GET, PUT and DELETE calls are retried after a timeout "
        "or a 5xx answer. Default POST.",
    )
    timeout_milliseconds: int | None = Field(
        default=None,
        ge=1,
        le=600_000,
        description="Time limit of each upstream call of this API, in milliseconds, 1-600000 (result 4001 when "
        "exceeded). Unset: the upstream's timeoutMilliseconds.",
    )
    retries: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Further attempts after a failed upstream call, 0-5, on endpoints not tried yet when there are "
        "any: after a connection failure for any method, after a timeout or 5xx answer only for GET, PUT and "
        "DELETE. Default 0.",
    )
    state: ApiState = Field(
        default=ApiState.ONLINE,
        description="Online: the API is served. Offline: calls get result 3002 without reaching the upstream. "
        "Default Online.",
    )
    apps: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="appIds (of spec.apps) that may call the API; other apps get result 1001. Empty: every app.",
    )
    auth_required: bool = Field(
        default=False,
        description="Calls need a valid login session, checked through spec.sessionValidation (result 2000 "
        "otherwise); the upstream receives the session's user id in X-User-Id. Default false.",
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        description="Limit on all calls of this API, whatever the app; over it calls get result 1002. Unset: no limit.",
    )
    header_mappings: list[HeaderMapping] = Field(
        default_factory=list,
        max_length=32,
        description="Request headers also sent to the upstream under another name. At most 32.",
    )
    cache: ResponseCache | None = Field(default=None, description="Caches successful answers. Unset: no caching.")
    mock: MockResponse | None = Field(
        default=None, description="Answers with a canned response instead of calling the upstream. Unset: no mock."
    )
    canary: CanaryRoute | None = Field(
        default=None, description="Sends part of the calls to another upstream. Unset: all go to upstream."
    )
    description: str | None = Field(
        default=None,
        max_length=1024,
        description="What the API does, for people: the summary in the admin API's OpenAPI document "
        "(GET /admin/openapi/{appId}).",
    )
    request_schema: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="JSON Schema of the request body, published in the admin API's OpenAPI document. Requests are "
        "not checked against it.",
    )
    response_schema: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="JSON Schema of a successful answer's body, published in the admin API's OpenAPI document. "
        "Answers are not checked against it.",
    )


class PauseStep(ApiModel):
    """Not used yet: a pause between rollout steps."""

    duration_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400 * 7,
        description="Not used yet: how long to wait before the next step, in seconds, 1-604800 (7 days). "
        "Unset: wait until promoted.",
    )


class RolloutStep(ApiModel):
    """Not used yet: one rollout step, setting a traffic weight or pausing."""

    __cel__ = [cel("has(self.setWeight) != has(self.pause)", "each step sets exactly one of setWeight or pause")]
    set_weight: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Not used yet: share of traffic for the new version from this step on, in percent, 0-100.",
    )
    pause: PauseStep | None = Field(default=None, description="Not used yet: wait before the next step.")


class RolloutAnalysis(ApiModel):
    """Not used yet: health checks that would halt a rollout."""

    max_error_rate_percent: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Not used yet: error share, in percent of requests, above which the rollout would halt, "
        "0-100. Default 5.",
    )
    max_p99_latency_milliseconds: int | None = Field(
        default=None,
        ge=1,
        le=600_000,
        description="Not used yet: 99th-percentile latency, in milliseconds, above which the rollout would halt, "
        "1-600000. Unset: latency is not checked.",
    )
    interval_seconds: int = Field(
        default=30, ge=5, le=3600, description="Not used yet: time between checks, in seconds, 5-3600. Default 30."
    )


class Rollout(ApiModel):
    """Not used yet: a stepwise rollout of gateway changes. Neither the operator nor the gateway reads it:
    config changes apply to every gateway process at once, pod changes roll out as the Deployment's rolling
    update."""

    steps: list[RolloutStep] = Field(
        default_factory=list, max_length=32, description="Not used yet: the steps, in order. At most 32."
    )
    analysis: RolloutAnalysis | None = Field(
        default=None, description="Not used yet: health checks that would halt the rollout."
    )
    paused: bool = Field(
        default=False, description="Not used yet: hold the rollout at its current step. Default false."
    )


class SessionValidation(ApiModel):
    """How `authRequired` APIs check a login: the gateway asks this upstream about the session.

    It POSTs to `path` with the session token in `header`: a 2xx answer means valid (its Uid header names the
    user), 401, 403 or 404 not logged in (result 2000), anything else result 4003.
    """

    upstream: str = Field(
        max_length=63, pattern=DNS_LABEL, description="Name of the entry of spec.upstreams that validates sessions."
    )
    path: str = Field(
        default="/session/validate",
        max_length=1024,
        pattern=r"^/[^\s]*$",
        description="Path of the validation call. Default /session/validate.",
    )
    header: str = Field(
        default="Session-Id",
        max_length=128,
        pattern=r"^[A-Za-z0-9-]+$",
        description="Request header carrying the session token; it is sent on to the validation upstream. "
        "Requests without it get result 2000. Default Session-Id.",
    )
    cache_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="How long each gateway process remembers a valid session, in seconds, 0-3600; 0: ask on "
        "every call. Default 60.",
    )


class SharedState(ApiModel):
    """The Redis the gateway's pods and workers share nonces and rate-limit buckets through."""

    __cel__ = [cel("has(self.url) != has(self.urlSecretRef)", "give exactly one of url or urlSecretRef")]
    url: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^(rediss?|unix)://",
        description="Redis URL: redis://host:port/db, rediss:// for TLS, or unix://. A URL with a password belongs "
        "in a Secret: use urlSecretRef instead.",
    )
    url_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The Secret key holding the Redis URL. Give exactly one of url or urlSecretRef."
    )


class GatewaySpec(ApiModel):
    """Desired state of an MpaasGateway: its pods, and the apps, upstreams and APIs it serves.

    The gateway applies changes to apps, upstreams and APIs live, without restarting; image, resources,
    workersPerPod and sharedState roll out new pods.
    """

    __cel__ = [
        cel(
            "self.apis.all(a, self.upstreams.exists(u, u.name == a.upstream))",
            "every api.upstream must name an entry of spec.upstreams",
            field_path=".apis",
        ),
        cel(
            "!has(self.sessionValidation) || self.upstreams.exists(u, u.name == self.sessionValidation.upstream)",
            "sessionValidation.upstream must name an entry of spec.upstreams",
        ),
        cel(
            "self.upstreams.all(u, !has(u.clusters)"
            " || u.clusters.all(c, self.upstreams.exists(v, v.name == c.upstream)))",
            "every upstreams[].clusters[].upstream must name an entry of spec.upstreams",
        ),
        cel(
            "!self.apis.exists(a, has(a.authRequired) && a.authRequired) || has(self.sessionValidation)",
            "APIs with authRequired need spec.sessionValidation",
        ),
        cel(
            "!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        cel(
            "!has(self.rollout)",
            "spec.rollout: stepwise rollouts are not implemented yet; remove it "
            "(gateway pods roll out with their Deployment's rolling update)",
        ),
    ]
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Container image of the gateway pods. Unset: the operator's image (its Helm value image).",
    )
    replicas: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="Number of gateway pods, 0-1000 (kubectl scale sets it); ignored while autoscaling is set. "
        "Above 1 the operator also creates a PodDisruptionBudget. Default 2.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scales the pods with their CPU load through a HorizontalPodAutoscaler. Unset: replicas pods.",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory requests and limits of the gateway container. Default: none.",
    )
    workers_per_pod: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway processes per pod, sharing its port, 1-64; match the pod's CPU limit. More than one "
        "needs sharedState or the operator's redis.url (else Ready=False, InvalidSpec). Default 1.",
    )
    shared_state: SharedState | None = Field(
        default=None,
        description="Redis through which every gateway pod and worker shares nonces and rate-limit buckets. "
        "Unset: the operator's Helm value redis.url; without that either, each gateway process keeps its own.",
    )
    rollout: Rollout | None = Field(
        default=None,
        description="Not implemented yet, so refused: a stepwise rollout of changes. Gateway pods roll out with "
        "their Deployment's rolling update.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest request body accepted, in bytes, 1024-67108864 (64 MiB); larger ones get result 3003. "
        "Default 1048576 (1 MiB).",
    )
    session_validation: SessionValidation | None = Field(
        default=None,
        description="How authRequired APIs check a login. Required when any API sets authRequired.",
    )
    apps: list[GatewayApp] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["appId", "workspaceId"]},
        description="Apps allowed through the gateway, keyed by appId and workspaceId; requests from other apps "
        "get result 1003. Empty: any caller, with no signature, encryption or app limit. At most 64.",
    )
    upstreams: list[Upstream] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra=named_list(),
        description="Backends the APIs are sent to, keyed by name. At most 64.",
    )
    apis: list[GatewayApi] = Field(
        default_factory=list,
        max_length=512,
        json_schema_extra=named_list("operationType"),
        description="APIs the gateway serves, keyed by operationType; other operation types get result 3001. "
        "At most 512.",
    )

    def secret_names(self) -> list[str]:
        """The Secrets (in the gateway's namespace) the gateway process reads: its apps' keys. The operator grants
        the gateway read access to these names only, and the gateway watches each of them by name."""
        return sorted({a.credentials_secret_ref.name for a in self.apps if a.credentials_secret_ref is not None})


class GatewayStatus(WorkloadStatus):
    """Observed state of an MpaasGateway: its pods, as the operator last saw them."""

    replicas: int | None = Field(
        default=None, ge=0, description="Gateway pods that exist (the scale subresource reads it)."
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Gateway pods ready to serve.")
    updated_replicas: int | None = Field(
        default=None, ge=0, description="Gateway pods that run the current pod template."
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the gateway pods, for the scale subresource (kubectl scale, autoscalers).",
    )
    api_count: int | None = Field(default=None, ge=0, description="Number of APIs in the last valid spec.")


KIND_INFO: dict[str, Any] = {
    "kind": "MpaasGateway",
    "plural": "mpaasgateways",
    "singular": "mpaasgateway",
    "shortNames": ["mgw"],
    "spec": GatewaySpec,
    "status": GatewayStatus,
    "scale": {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
    "rootRules": [
        cel(
            "size(self.metadata.name) <= 58",
            "metadata.name must be at most 58 characters: its Deployment and Service are named mgw-<name>",
        )
    ],
    "printerColumns": [
        {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {
            "name": "Applied",
            "type": "integer",
            "jsonPath": ".status.podsOnCurrentGeneration",
            "description": "Ready pods that have applied the current spec generation",
        },
        {"name": "APIs", "type": "integer", "jsonPath": ".status.apiCount"},
        {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
