"""PushChannel: one way of reaching an app's devices (our long connection, or a vendor service)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import APP_ID, ApiModel, Autoscaling, CommonStatus, ResourceRequirements, SecretRef, cel, immutable


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
    team_id: str = Field(max_length=10, pattern=r"^[A-Z0-9]{10}$")
    key_id: str = Field(max_length=10, pattern=r"^[A-Z0-9]{10}$")
    topic: str = Field(max_length=255, pattern=r"^[A-Za-z0-9.-]+$")
    environment: ApnsEnvironment = ApnsEnvironment.PRODUCTION


class FcmSettings(ApiModel):
    project_id: str = Field(max_length=128, pattern=r"^[a-z][a-z0-9-]{4,127}$")


class HeartbeatBounds(ApiModel):
    """Adaptive heartbeat: the server steers clients between these intervals."""

    __cel__ = [cel("self.minSeconds <= self.maxSeconds", "heartbeat minSeconds must not exceed maxSeconds")]
    min_seconds: int = Field(default=30, ge=5, le=3600)
    max_seconds: int = Field(default=270, ge=5, le=3600)


class LinkSettings(ApiModel):
    replicas: int = Field(default=2, ge=0, le=1000)
    autoscaling: Autoscaling | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    heartbeat: HeartbeatBounds = Field(default_factory=HeartbeatBounds)
    max_connections_per_pod: int = Field(default=100_000, ge=1, le=2_000_000)
    port: int = Field(default=8443, ge=1024, le=65535)


class PushChannelSpec(ApiModel):
    __cel__ = [
        cel(
            "self.type == 'Link' || has(self.credentialsSecretRef)",
            "vendor channels need credentialsSecretRef naming the Secret with their credentials",
        ),
        cel("self.type == 'Link' || !has(self.link)", "link settings apply only to type Link"),
        cel("self.type == 'APNs' || !has(self.apns)", "apns settings apply only to type APNs"),
        cel("self.type != 'APNs' || has(self.apns)", "type APNs needs apns settings (teamId, keyId, topic)"),
        cel("self.type == 'FCM' || !has(self.fcm)", "fcm settings apply only to type FCM"),
        cel("self.type != 'FCM' || has(self.fcm)", "type FCM needs fcm settings (projectId)"),
    ]
    app_id: str = Field(max_length=64, pattern=APP_ID, json_schema_extra=immutable("appId is immutable"))
    workspace_id: str | None = Field(default=None, max_length=64, pattern=APP_ID)
    type: ChannelType = Field(json_schema_extra=immutable("type is immutable: create another PushChannel"))
    credentials_secret_ref: SecretRef | None = None
    # Vendor endpoint override (tests, private deployments, regional endpoints).
    endpoint: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    messages_per_second: int | None = Field(default=None, ge=1, le=1_000_000)
    apns: ApnsSettings | None = None
    fcm: FcmSettings | None = None
    link: LinkSettings | None = None


class PushChannelStatus(CommonStatus):
    connections: int | None = Field(default=None, ge=0)
    sent: int | None = Field(default=None, ge=0)
    failed: int | None = Field(default=None, ge=0)
    queue_lag: int | None = Field(default=None, ge=0)
    ready_replicas: int | None = Field(default=None, ge=0)


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
        {"name": "Connections", "type": "integer", "jsonPath": ".status.connections"},
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


# Keys each vendor channel's credentials Secret must hold.
REQUIRED_SECRET_KEYS: dict[ChannelType, list[str]] = {
    ChannelType.LINK: [],
    ChannelType.APNS: ["authKey"],  # the .p8 signing key; teamId/keyId are in spec.apns
    ChannelType.FCM: ["serviceAccount"],  # the service-account JSON
    ChannelType.HUAWEI: ["appId", "appSecret"],
    ChannelType.XIAOMI: ["appSecret"],
    ChannelType.OPPO: ["appKey", "masterSecret"],
    ChannelType.VIVO: ["appId", "appKey", "appSecret"],
    ChannelType.HONOR: ["clientId", "clientSecret"],
}
