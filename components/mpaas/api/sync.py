"""SyncTopic: an ordered per-user or per-device oplog stream of one business type."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import APP_ID, ApiModel, CommonStatus, cel, immutable


class Scope(StrEnum):
    USER = "User"
    DEVICE = "Device"


class DeviceMode(StrEnum):
    MULTI_DEVICE = "MultiDevice"
    SINGLE_DEVICE = "SingleDevice"


class Persistence(StrEnum):
    PERSISTENT = "Persistent"
    TRANSIENT = "Transient"


class Distribution(StrEnum):
    TARGETED = "Targeted"
    GLOBAL = "Global"


class Retention(ApiModel):
    max_oplogs: int = Field(default=1000, ge=1, le=1_000_000)
    ttl_seconds: int = Field(default=7 * 86400, ge=60, le=365 * 86400)


class SyncTopicSpec(ApiModel):
    __cel__ = [
        cel(
            "self.scope == 'User' || self.deviceMode == 'MultiDevice'",
            "deviceMode SingleDevice applies only to scope User",
        ),
    ]
    app_id: str = Field(max_length=64, pattern=APP_ID, json_schema_extra=immutable("appId is immutable"))
    biz_type: str = Field(
        max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", json_schema_extra=immutable("bizType is immutable")
    )
    scope: Scope = Field(default=Scope.USER, json_schema_extra=immutable("scope is immutable"))
    device_mode: DeviceMode = DeviceMode.MULTI_DEVICE
    persistence: Persistence = Persistence.PERSISTENT
    distribution: Distribution = Distribution.TARGETED
    retention: Retention = Field(default_factory=Retention)


class SyncTopicStatus(CommonStatus):
    oplog_count: int | None = Field(default=None, ge=0)
    last_id: int | None = Field(default=None, ge=0)
    online_subscribers: int | None = Field(default=None, ge=0)


KIND_INFO: dict[str, Any] = {
    "kind": "SyncTopic",
    "plural": "synctopics",
    "singular": "synctopic",
    "shortNames": ["stopic"],
    "spec": SyncTopicSpec,
    "status": SyncTopicStatus,
    "printerColumns": [
        {"name": "App", "type": "string", "jsonPath": ".spec.appId"},
        {"name": "BizType", "type": "string", "jsonPath": ".spec.bizType"},
        {"name": "Scope", "type": "string", "jsonPath": ".spec.scope"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.persistence"},
        {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
