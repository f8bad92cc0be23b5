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
    CommonStatus,
    RateLimit,
    ResourceRequirements,
    SecretKeyRef,
    SecretRef,
    cel,
    named_list,
)

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
    algorithm: SignatureAlgorithm = SignatureAlgorithm.NONE
    timestamp_window_seconds: int = Field(default=300, ge=1, le=86400)
    require_nonce: bool = False


class EncryptionPolicy(ApiModel):
    __cel__ = [
        cel(
            "self.mode == 'Disabled' || size(self.keyWraps) > 0",
            "encryption needs at least one keyWrap unless mode is Disabled",
        )
    ]
    mode: EncryptionMode = EncryptionMode.DISABLED
    key_wraps: list[KeyWrap] = Field(default_factory=list, max_length=3)
    cipher: BodyCipher = BodyCipher.AES_GCM


class GatewayApp(ApiModel):
    """A mobile app allowed through this gateway. Keys live in the referenced Secret."""

    app_id: str = Field(max_length=64, pattern=APP_ID)
    workspace_id: str = Field(max_length=64, pattern=APP_ID)
    credentials_secret_ref: SecretRef | None = None
    signature: SignaturePolicy = Field(default_factory=SignaturePolicy)
    encryption: EncryptionPolicy = Field(default_factory=EncryptionPolicy)
    rate_limit: RateLimit | None = None
    # When the Secret rotates, the previous keys stay valid this long.
    key_overlap_seconds: int = Field(default=300, ge=0, le=86400)

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
    url: str = Field(max_length=2048, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    weight: int = Field(default=100, ge=0, le=10000)


class ServiceReference(ApiModel):
    """A Kubernetes Service in the gateway's namespace (or `namespace`)."""

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    namespace: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    port: int = Field(default=80, ge=1, le=65535)
    scheme: str = Field(default="http", pattern=r"^https?$")


class CircuitBreaker(ApiModel):
    """Eject an endpoint whose error share in a window passes a threshold (Xiaomi-style)."""

    error_threshold_percent: int = Field(default=50, ge=1, le=100)
    minimum_requests: int = Field(default=20, ge=1, le=100000)
    window_seconds: int = Field(default=10, ge=1, le=3600)
    ejection_seconds: int = Field(default=30, ge=1, le=3600)
    # Above this share of ejected endpoints, fail fast instead of overloading the rest.
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class ClusterMember(ApiModel):
    """One cluster of a cluster group: another upstream of this gateway, and its share of the group's traffic."""

    upstream: str = Field(max_length=63, pattern=DNS_LABEL)
    # 0: a standby cluster, called only when the weighted ones cannot take the request.
    weight: int = Field(default=100, ge=0, le=10000)


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
    name: str = Field(max_length=63, pattern=DNS_LABEL)
    endpoints: list[Endpoint] = Field(default_factory=list, max_length=64)
    service_ref: ServiceReference | None = None
    clusters: list[ClusterMember] = Field(default_factory=list, max_length=16)
    # Tried when this upstream (or, for a group, every member) cannot take a request.
    failover_upstream: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    timeout_milliseconds: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=600_000)
    max_concurrency: int | None = Field(default=None, ge=1, le=1_000_000)
    circuit_breaker: CircuitBreaker | None = None


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

    from_: str = Field(alias="from", max_length=128, pattern=r"^[A-Za-z0-9-]+$")
    to: str = Field(max_length=128, pattern=r"^[A-Za-z0-9-]+$")


class ResponseCache(ApiModel):
    ttl_seconds: int = Field(ge=1, le=86400)
    key_fields: list[str] = Field(default_factory=list, max_length=16)


class MockResponse(ApiModel):
    enabled: bool = True
    status_code: int = Field(default=200, ge=100, le=599)
    # Static JSON, or a template when `template` is set ({{request.body.x}}, {{header.X}}).
    body: Any = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    template: bool = False


class CanaryRoute(ApiModel):
    """Send part of one API's traffic to a second upstream: by percent or by rule."""

    __cel__ = [cel("has(self.percent) || has(self.rule)", "a canary needs percent or rule")]
    upstream: str = Field(max_length=63, pattern=DNS_LABEL)
    percent: int | None = Field(default=None, ge=0, le=100)
    # Gray-rule expression, e.g. "DEVICE_ID MOD 1000 IN (0..99) && APP_VERSION >= 2.1".
    rule: str | None = Field(default=None, max_length=2048)


class GatewayApi(ApiModel):
    operation_type: str = Field(max_length=128, pattern=OPERATION_TYPE)
    upstream: str = Field(max_length=63, pattern=DNS_LABEL)
    path: str = Field(default="/", max_length=1024, pattern=r"^/[^\s]*$")
    method: HttpMethod = HttpMethod.POST
    timeout_milliseconds: int | None = Field(default=None, ge=1, le=600_000)
    retries: int = Field(default=0, ge=0, le=5)
    state: ApiState = ApiState.ONLINE
    # Restrict to these appIds; empty means every app of the gateway.
    apps: list[str] = Field(default_factory=list, max_length=64)
    auth_required: bool = False
    rate_limit: RateLimit | None = None
    header_mappings: list[HeaderMapping] = Field(default_factory=list, max_length=32)
    cache: ResponseCache | None = None
    mock: MockResponse | None = None
    canary: CanaryRoute | None = None
    description: str | None = Field(default=None, max_length=1024)
    request_schema: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    response_schema: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )


class PauseStep(ApiModel):
    # Absent: wait for a promote.
    duration_seconds: int | None = Field(default=None, ge=1, le=86400 * 7)


class RolloutStep(ApiModel):
    __cel__ = [cel("has(self.setWeight) != has(self.pause)", "each step sets exactly one of setWeight or pause")]
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseStep | None = None


class RolloutAnalysis(ApiModel):
    max_error_rate_percent: int = Field(default=5, ge=0, le=100)
    max_p99_latency_milliseconds: int | None = Field(default=None, ge=1, le=600_000)
    interval_seconds: int = Field(default=30, ge=5, le=3600)


class Rollout(ApiModel):
    steps: list[RolloutStep] = Field(default_factory=list, max_length=32)
    analysis: RolloutAnalysis | None = None
    paused: bool = False


class SessionValidation(ApiModel):
    """How `authRequired` APIs check a login: the gateway asks this upstream about the session."""

    upstream: str = Field(max_length=63, pattern=DNS_LABEL)
    path: str = Field(default="/session/validate", max_length=1024, pattern=r"^/[^\s]*$")
    # The request header carrying the session token; it is sent on to the validation upstream.
    header: str = Field(default="Session-Id", max_length=128, pattern=r"^[A-Za-z0-9-]+$")
    # Remember valid sessions this long (0: ask every time).
    cache_seconds: int = Field(default=60, ge=0, le=3600)


class SharedState(ApiModel):
    """The Redis the gateway's pods and workers share nonces and rate-limit buckets through."""

    __cel__ = [cel("has(self.url) != has(self.urlSecretRef)", "give exactly one of url or urlSecretRef")]
    # redis://host:port/db, rediss:// for TLS; a URL with credentials belongs in a Secret (urlSecretRef).
    url: str | None = Field(default=None, max_length=1024, pattern=r"^(rediss?|unix)://")
    url_secret_ref: SecretKeyRef | None = None


class GatewaySpec(ApiModel):
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
    ]
    image: str | None = Field(default=None, max_length=512)
    replicas: int = Field(default=2, ge=0, le=1000)
    autoscaling: Autoscaling | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    # Gateway processes per pod on one port: match the pod's CPU limit; more than one needs shared state.
    workers_per_pod: int = Field(default=1, ge=1, le=64)
    # Unset: the operator's default (its Helm value redis.url), else state is per process.
    shared_state: SharedState | None = None
    rollout: Rollout | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    session_validation: SessionValidation | None = None
    apps: list[GatewayApp] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["appId", "workspaceId"]},
    )
    upstreams: list[Upstream] = Field(default_factory=list, max_length=64, json_schema_extra=named_list())
    apis: list[GatewayApi] = Field(default_factory=list, max_length=512, json_schema_extra=named_list("operationType"))

    def secret_names(self) -> list[str]:
        """The Secrets (in the gateway's namespace) the gateway process reads: its apps' keys. The operator grants
        the gateway read access to these names only, and the gateway watches each of them by name."""
        return sorted({a.credentials_secret_ref.name for a in self.apps if a.credentials_secret_ref is not None})


class GatewayStatus(CommonStatus):
    replicas: int | None = Field(default=None, ge=0)
    ready_replicas: int | None = Field(default=None, ge=0)
    updated_replicas: int | None = Field(default=None, ge=0)
    selector: str | None = None
    api_count: int | None = Field(default=None, ge=0)


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
        {"name": "APIs", "type": "integer", "jsonPath": ".status.apiCount"},
        {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='Ready')].reason",
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
