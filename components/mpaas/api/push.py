"""PushChannel: one way of reaching an app's devices (our long connection, or a vendor service)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import (
    APP_ID,
    ApiModel,
    Autoscaling,
    ResourceRequirements,
    SecretKeyRef,
    SecretRef,
    WorkloadStatus,
    cel,
    immutable,
)


class ChannelType(StrEnum):
    LINK = "Link"
    APNS = "APNs"
    FCM = "FCM"
    HUAWEI = "Huawei"
    XIAOMI = "Xiaomi"
    OPPO = "OPPO"
    VIVO = "Vivo"
    HONOR = "Honor"


class ApnsEnvironment(StrEnum):
    PRODUCTION = "Production"
    SANDBOX = "Sandbox"


class ApnsSettings(ApiModel):
    """Apple Push Notification service settings; the signing key is authKey in the credentials Secret."""

    team_id: str = Field(
        max_length=10,
        pattern=r"^[A-Z0-9]{10}$",
        description="Apple developer team id, 10 upper-case letters or digits: the issuer of the provider tokens.",
    )
    key_id: str = Field(
        max_length=10,
        pattern=r"^[A-Z0-9]{10}$",
        description="Id of the APNs signing key (authKey), 10 upper-case letters or digits.",
    )
    topic: str = Field(
        max_length=255,
        pattern=r"^[A-Za-z0-9.-]+$",
        description="Topic of the notifications (apns-topic), usually the app's bundle id.",
    )
    environment: ApnsEnvironment = Field(
        default=ApnsEnvironment.PRODUCTION,
        description="APNs servers to use: Production (api.push.apple.com), or Sandbox (api.sandbox.push.apple.com) "
        "for development builds. Default Production.",
    )


class FcmSettings(ApiModel):
    """Firebase Cloud Messaging settings; the service-account JSON is serviceAccount in the credentials Secret."""

    project_id: str = Field(
        max_length=128, pattern=r"^[a-z][a-z0-9-]{4,127}$", description="The Firebase project id messages go to."
    )


class XiaomiSettings(ApiModel):
    """Xiaomi push settings; the app secret is appSecret in the credentials Secret."""

    package_name: str = Field(
        max_length=255,
        pattern=r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$",
        description="The Android package registered with Xiaomi push (sent as restricted_package_name).",
    )


class LagAutoscaling(ApiModel):
    """Sender pods scaled by the jobs waiting in the channel's Kafka topic: every 15 s the operator sets the
    replicas to the waiting jobs divided by targetLagPerReplica, within the bounds."""

    __cel__ = [cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")]
    min_replicas: int = Field(default=1, ge=1, le=100, description="Fewest sender pods, 1-100. Default 1.")
    max_replicas: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Most sender pods, 1-100; not less than minReplicas. The topic's partitions (3 on a default "
        "broker) bound how many pods share the work. Default 10.",
    )
    target_lag_per_replica: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Waiting jobs (each one message for up to 500 devices) per sender pod, 1-1000000. Default 200.",
    )


class SenderSettings(ApiModel):
    """The sender pods of a vendor channel: Deployment push-<name>, sending the channel's jobs."""

    replicas: int = Field(
        default=1, ge=0, le=100, description="Sender pods, 0-100; ignored while autoscaling is set. Default 1."
    )
    autoscaling: LagAutoscaling | None = Field(
        default=None, description="Scales the sender pods by the channel's queue lag. Unset: replicas pods."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory requests and limits of the sender container. Default: none.",
    )


class HeartbeatBounds(ApiModel):
    """Adaptive heartbeat: the server steers clients between these intervals."""

    __cel__ = [cel("self.minSeconds <= self.maxSeconds", "heartbeat minSeconds must not exceed maxSeconds")]
    min_seconds: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="Shortest heartbeat interval a link client is asked for, in seconds, 5-3600; not more than "
        "maxSeconds. Default 30.",
    )
    max_seconds: int = Field(
        default=270,
        ge=5,
        le=3600,
        description="Longest heartbeat interval a link client is asked for, in seconds, 5-3600. Default 270.",
    )


class LinkIngress(ApiModel):
    """An Ingress for devices' WebSockets to the link pods (the Service's link port)."""

    host: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The host devices connect to, e.g. link.example.com (wss://{host}/v1/link).",
    )
    class_name: str | None = Field(
        default=None, max_length=253, description="The IngressClass to use. Unset: the cluster's default."
    )
    tls_secret_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A Secret of this namespace with the host's TLS certificate (kubernetes.io/tls). Unset: no TLS "
        "at the Ingress (devices should use wss://: set it, or terminate TLS in front).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the Ingress, for its controller: long read timeouts, for example "
        "nginx.ingress.kubernetes.io/proxy-read-timeout above the heartbeat's maxSeconds.",
    )


class LinkSettings(ApiModel):
    """The long-connection (link) pods the operator runs for a Link channel: Deployment and Service link-<name>."""

    replicas: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="Number of link pods, 0-1000; ignored while autoscaling is set. Above 1 the operator also "
        "creates a PodDisruptionBudget. Default 2.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scales the link pods with their CPU load through a HorizontalPodAutoscaler. Unset: replicas pods.",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory requests and limits of the link container. Default: none.",
    )
    heartbeat: HeartbeatBounds = Field(
        default_factory=HeartbeatBounds,
        description='Bounds of the heartbeat interval clients are steered to (docs/link.md, "Heartbeat").',
    )
    max_connections_per_pod: int = Field(
        default=100_000,
        ge=1,
        le=2_000_000,
        description="Most client connections per link pod, 1-2000000, passed to the pods as "
        "MPAAS_LINK_MAX_CONNECTIONS: past it a new connection is closed with code 4012. Default 100000.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="The Secret key holding the HMAC key (at least 32 bytes) devices' link tokens are signed with "
        '(docs/link.md, "Tokens"). A rotated key keeps the previous one valid for a day; a deleted one is '
        "revoked, and the connections it authenticated are closed. Unset: no device can connect.",
    )
    drain_seconds: int = Field(
        default=30,
        ge=1,
        le=600,
        description="Seconds a link pod takes on shutdown to send its clients to the other pods, in waves "
        '(docs/link.md, "Drain"), 1-600; its termination grace period is this plus 15. Default 30.',
    )
    target_connections_per_pod: int | None = Field(
        default=None,
        ge=1,
        le=2_000_000,
        description="With autoscaling, where the custom metrics API serves mpaas_link_connections (a Prometheus "
        "Adapter): the connections per pod the HorizontalPodAutoscaler keeps to, 1-2000000. Unset: 70% of "
        "maxConnectionsPerPod. Without that API the autoscaler follows CPU.",
    )
    ingress: LinkIngress | None = Field(
        default=None, description="An Ingress for the devices' WebSockets and /dispatch. Unset: none."
    )
    port: int = Field(
        default=8443,
        ge=1024,
        le=65535,
        description="Port the link pods listen on, and the port of their Service, 1024-65535. Default 8443.",
    )


class PushChannelSpec(ApiModel):
    """Desired state of a PushChannel: one way of reaching an app's devices.

    For type Link the operator runs the link pods; for a vendor type it runs the channel's sender pods and
    checks its credentials against the vendor.
    """

    __cel__ = [
        cel(
            "self.type == 'Link' || has(self.credentialsSecretRef)",
            "vendor channels need credentialsSecretRef naming the Secret with their credentials",
        ),
        cel("self.type == 'Link' || !has(self.link)", "link settings apply only to type Link"),
        cel("self.type == 'APNs' || !has(self.apns)", "apns settings apply only to type APNs"),
        cel("self.type != 'APNs' || has(self.apns)", "type APNs needs apns settings (teamId, keyId, topic)"),
        cel("self.type == 'FCM' || !has(self.fcm)", "fcm settings apply only to type FCM"),
        cel("self.type != 'Link' || !has(self.sender)", "sender settings apply only to vendor channels"),
        cel("self.type != 'Link' || !has(self.feedbackUrl)", "feedbackUrl applies only to vendor channels"),
        cel("self.type != 'Link' || !has(self.fallbackPriority)", "fallbackPriority applies only to vendor channels"),
        cel("self.type == 'Xiaomi' || !has(self.xiaomi)", "xiaomi settings apply only to type Xiaomi"),
        cel("self.type != 'Xiaomi' || has(self.xiaomi)", "type Xiaomi needs xiaomi settings (packageName)"),
        cel("self.type != 'FCM' || has(self.fcm)", "type FCM needs fcm settings (projectId)"),
        cel(
            "!has(self.receiptUrl) || self.type in ['Huawei', 'Honor', 'Xiaomi', 'OPPO', 'Vivo']",
            "receiptUrl applies only to types Huawei, Honor, Xiaomi, OPPO and Vivo (the vendors that send receipts)",
        ),
    ]
    app_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        json_schema_extra=immutable("appId is immutable"),
        description="The app whose devices the channel reaches. Immutable. Shown by kubectl get.",
    )
    workspace_id: str | None = Field(
        default=None,
        max_length=64,
        pattern=APP_ID,
        description="The app's workspace, e.g. prod; for a Link channel, unset serves every workspace of the app.",
    )
    type: ChannelType = Field(
        json_schema_extra=immutable("type is immutable: create another PushChannel"),
        description="How messages reach devices: Link (the platform's own long connection, served by link pods) "
        "or a vendor service: APNs, FCM, Huawei, Xiaomi, OPPO, Vivo or Honor. Immutable.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with a vendor channel's credentials, required for every type but Link. The operator "
        "checks it holds the keys the type needs: APNs authKey (a .p8 key), or certificate and privateKey (PEM); "
        "FCM serviceAccount; Huawei appId, appSecret; Xiaomi appSecret; OPPO appKey, masterSecret; Vivo appId, "
        "appKey, appSecret; Honor clientId, clientSecret, appId. Optional caBundle: PEM CAs to trust for the "
        "endpoint (a private one).",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="The vendor's API endpoint instead of its default (private deployments, regional endpoints, "
        "a local vendor server); a vendor whose tokens come from another host is asked there too.",
    )
    messages_per_second: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Most messages per second sent through the channel by all its sender pods together, 1-1000000 "
        "(a token bucket in Redis). Unset: no limit.",
    )
    fallback_priority: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Vendor types: where the channel stands in the app's fallback order, lower first, 0-1000: a "
        "device offline on link and without a token for its brand's channel goes to the first channel of the "
        'order it has a token for (docs/push.md, "Routing"). Unset: APNs 10, FCM 20, Huawei 30, Honor 40, '
        "Xiaomi 50, OPPO 60, Vivo 70.",
    )
    feedback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="Vendor types: where the senders POST the tokens that failed, as JSON (docs/push.md, "
        "\"Failed tokens\"), as gorush's feedback hook does. Unset: failed tokens are only in each message's status.",
    )
    receipt_url: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Huawei, Honor, Xiaomi, OPPO and Vivo: the push API's address as the vendor reaches it, e.g. "
        "https://push.example.com. With a receiptToken (16-64 letters, digits, - or _) in the credentials Secret, "
        "the vendor's delivery receipts come back to <receiptUrl>/v1/push/receipts/<namespace>/<name>/<receiptToken> "
        'and count as delivered (docs/push.md, "Receipts"). Xiaomi, OPPO and Vivo are given that address with '
        "each send; for Huawei and Honor, enter it as the receipt address in the vendor's console.",
    )
    apns: ApnsSettings | None = Field(
        default=None, description="APNs settings: required for type APNs, not allowed for other types."
    )
    fcm: FcmSettings | None = Field(
        default=None, description="FCM settings: required for type FCM, not allowed for other types."
    )
    xiaomi: XiaomiSettings | None = Field(
        default=None, description="Xiaomi settings: required for type Xiaomi, not allowed for other types."
    )
    link: LinkSettings | None = Field(
        default=None,
        description="Settings of the link pods, for type Link only. Unset: the defaults of each field.",
    )
    sender: SenderSettings | None = Field(
        default=None,
        description="Settings of the sender pods, for vendor types only. Unset: the defaults of each field.",
    )


class PushChannelStatus(WorkloadStatus):
    """Observed state of a PushChannel."""

    connections: int | None = Field(
        default=None,
        ge=0,
        description="Type Link: client connections the link pods hold, as they last reported (every few seconds, "
        "through the link Redis; written by the operator every 15 s).",
    )
    delivered_per_second: int | None = Field(
        default=None, ge=0, description="Type Link: messages the link pods sent per second, over the last 15 s."
    )
    link_pods: int | None = Field(
        default=None, ge=0, description="Type Link: link pods whose figures were read (those reporting)."
    )
    sent: int | None = Field(
        default=None, ge=0, description="Vendor types: messages the vendor accepted through this channel, in all."
    )
    failed: int | None = Field(
        default=None,
        ge=0,
        description="Vendor types: messages that could not be sent (dead tokens, refusals, retries used up), in all.",
    )
    queue_lag: int | None = Field(
        default=None, ge=0, description="Vendor types: jobs (up to 500 devices each) waiting in the channel's topic."
    )
    ready_replicas: int | None = Field(
        default=None, ge=0, description="Pods ready to serve: link pods, or a vendor channel's sender pods."
    )


KIND_INFO: dict[str, Any] = {
    "kind": "PushChannel",
    "plural": "pushchannels",
    "singular": "pushchannel",
    "shortNames": ["pch"],
    "spec": PushChannelSpec,
    "status": PushChannelStatus,
    "rootRules": [
        cel(
            "size(self.metadata.name) <= 58",
            "metadata.name must be at most 58 characters: its link Deployment and Service are named link-<name>",
        )
    ],
    "printerColumns": [
        {"name": "App", "type": "string", "jsonPath": ".spec.appId"},
        {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Pods ready"},
        {
            "name": "Applied",
            "type": "integer",
            "jsonPath": ".status.podsOnCurrentGeneration",
            "description": "Ready pods that have applied the current spec generation",
        },
        {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}


# Keys each vendor channel's credentials Secret must hold: any one of the sets.
REQUIRED_SECRET_KEYS: dict[ChannelType, list[list[str]]] = {
    ChannelType.LINK: [[]],
    # the .p8 signing key (teamId/keyId are in spec.apns), or a certificate and its key
    ChannelType.APNS: [["authKey"], ["certificate", "privateKey"]],
    ChannelType.FCM: [["serviceAccount"]],  # the service-account JSON
    ChannelType.HUAWEI: [["appId", "appSecret"]],
    ChannelType.XIAOMI: [["appSecret"]],
    ChannelType.OPPO: [["appKey", "masterSecret"]],
    ChannelType.VIVO: [["appId", "appKey", "appSecret"]],
    ChannelType.HONOR: [["clientId", "clientSecret", "appId"]],
}


def missing_secret_keys(channel: ChannelType, data: dict[str, bytes]) -> list[str]:
    """The keys a credentials Secret lacks (of the set it comes closest to), [] when it has one whole set."""
    gaps = [[k for k in keys if not data.get(k, b"").strip()] for keys in REQUIRED_SECRET_KEYS[channel]]
    return min(gaps, key=len)
