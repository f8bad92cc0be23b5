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
    """How many oplogs are kept, and for how long."""

    max_oplogs: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most oplogs kept per user or device, 1-1000000. Shown in status; not used otherwise yet. "
        "Default 1000.",
    )
    ttl_seconds: int = Field(
        default=7 * 86400,
        ge=60,
        le=365 * 86400,
        description="Not used yet: how long an oplog is kept, in seconds, 60-31536000 (365 days). "
        "Default 604800 (7 days).",
    )


class SyncTopicSpec(ApiModel):
    """Desired state of a SyncTopic: the ordered oplog stream of one business type of an app.

    Not served yet: no component keeps or delivers oplogs. The operator validates the spec and allows one
    SyncTopic per appId and bizType in a namespace (the oldest keeps it).
    """

    __cel__ = [
        cel(
            "self.scope == 'User' || self.deviceMode == 'MultiDevice'",
            "deviceMode SingleDevice applies only to scope User",
        ),
    ]
    app_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        json_schema_extra=immutable("appId is immutable"),
        description="The app the topic belongs to. Immutable. With bizType, unique in the namespace: a later "
        "SyncTopic for the same pair is not Ready.",
    )
    biz_type: str = Field(
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
        json_schema_extra=immutable("bizType is immutable"),
        description="Business type of the oplogs, e.g. messages: a letter, then letters, digits, _ and -, at most "
        "64. Immutable.",
    )
    scope: Scope = Field(
        default=Scope.USER,
        json_schema_extra=immutable("scope is immutable"),
        description="Whose stream an oplog joins: User (one per user) or Device (one per device). Immutable. "
        "Shown in status; not used otherwise yet. Default User.",
    )
    device_mode: DeviceMode = Field(
        default=DeviceMode.MULTI_DEVICE,
        description="Not used yet: for scope User, MultiDevice syncs to every device of the user, SingleDevice "
        "to one device at a time. Default MultiDevice.",
    )
    persistence: Persistence = Field(
        default=Persistence.PERSISTENT,
        description="Persistent keeps oplogs (see retention) for devices that connect later; Transient reaches "
        "only devices online at the time. Shown in status; not used otherwise yet. "
        "Default Persistent.",
    )
    distribution: Distribution = Field(
        default=Distribution.TARGETED,
        description="Not used yet: Targeted sends each oplog to the users or devices it names; Global to every "
        "user or device of the app. Default Targeted.",
    )
    retention: Retention = Field(
        default_factory=Retention, description="How many oplogs are kept, and for how long (Persistent topics)."
    )


class SyncTopicStatus(CommonStatus):
    """Observed state of a SyncTopic."""

    oplog_count: int | None = Field(default=None, ge=0, description="Not written yet: oplogs kept.")
    last_id: int | None = Field(
        default=None, ge=0, description="Not written yet: id of the latest oplog; ids increase in order."
    )
    online_subscribers: int | None = Field(
        default=None, ge=0, description="Not written yet: devices connected that receive this topic."
    )


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
        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
