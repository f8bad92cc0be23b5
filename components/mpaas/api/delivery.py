"""DeliveryTask: one package (app upgrade, hotfix, offline bundle, ...) released to a gray audience."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import APP_ID, VERSION_STRING, ApiModel, CommonStatus, VersionRange, cel, immutable


class Platform(StrEnum):
    ANDROID = "Android"
    IOS = "IOS"
    HARMONY = "Harmony"


class ResourceType(StrEnum):
    APP_UPGRADE = "AppUpgrade"
    HOTFIX = "Hotfix"
    H5_OFFLINE = "H5Offline"
    MINI_PROGRAM = "MiniProgram"
    RESOURCE = "Resource"
    SWITCH = "Switch"


class UpgradeMode(StrEnum):
    SILENT = "Silent"
    REMIND = "Remind"
    FORCE = "Force"


class Network(StrEnum):
    WIFI = "Wifi"
    CELLULAR = "Cellular"
    FIVE_G = "5G"
    FOUR_G = "4G"
    THREE_G = "3G"


class Package(ApiModel):
    uri: str = Field(max_length=2048, pattern=r"^(s3|https?)://[^\s]+$")
    version: str = Field(max_length=32, pattern=VERSION_STRING)
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$", max_length=64)
    size_bytes: int = Field(ge=1, le=16 * 1024**3)
    # Base64 signature over the sha256, checked with the app's delivery key.
    signature: str | None = Field(default=None, max_length=4096)


class Whitelist(ApiModel):
    user_ids: list[str] = Field(default_factory=list, max_length=10000)
    device_ids: list[str] = Field(default_factory=list, max_length=10000)
    # Only whitelisted users get the release (internal testing).
    only: bool = False


class TimeWindow(ApiModel):
    __cel__ = [cel("timestamp(self.end) > timestamp(self.start)", "window.end must be after window.start")]
    start: datetime
    end: datetime
    max_users: int | None = Field(default=None, ge=1, le=1_000_000_000)


class Filters(ApiModel):
    cities: list[str] = Field(default_factory=list, max_length=512)
    models: list[str] = Field(default_factory=list, max_length=512)
    brands: list[str] = Field(default_factory=list, max_length=128)
    networks: list[Network] = Field(default_factory=list, max_length=5)
    channels: list[str] = Field(default_factory=list, max_length=256)
    os_version: VersionRange | None = None
    app_version: VersionRange | None = None


class Targeting(ApiModel):
    whitelist: Whitelist | None = None
    # Share of devices, chosen by a stable hash of the device id.
    percent: int = Field(default=100, ge=0, le=100)
    window: TimeWindow | None = None
    filters: Filters | None = None
    rule: str | None = Field(default=None, max_length=2048)


class Stage(ApiModel):
    percent: int = Field(ge=1, le=100)
    duration_seconds: int | None = Field(default=None, ge=60, le=86400 * 90)


class DeliveryTaskSpec(ApiModel):
    __cel__ = [
        cel("self.resourceType != 'Switch' || !has(self.package)", "a Switch carries no package"),
        cel("self.resourceType == 'Switch' || has(self.package)", "package is required unless resourceType is Switch"),
    ]
    app_id: str = Field(max_length=64, pattern=APP_ID, json_schema_extra=immutable("appId is immutable"))
    workspace_id: str = Field(max_length=64, pattern=APP_ID)
    platform: Platform = Field(json_schema_extra=immutable("platform is immutable"))
    resource_type: ResourceType = Field(json_schema_extra=immutable("resourceType is immutable"))
    package: Package | None = Field(
        default=None,
        json_schema_extra=immutable("package is immutable: create a new DeliveryTask to release another package"),
    )
    # Switch payload, or extra fields the client receives with the update.
    payload: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    upgrade_mode: UpgradeMode = UpgradeMode.REMIND
    description: str | None = Field(default=None, max_length=4096)
    targeting: Targeting = Field(default_factory=Targeting)
    stages: list[Stage] = Field(default_factory=list, max_length=20)
    paused: bool = False
    rollback: bool = False


class DeliveryTaskStatus(CommonStatus):
    current_stage: int | None = Field(default=None, ge=0)
    current_percent: int | None = Field(default=None, ge=0, le=100)
    stage_started_at: datetime | None = None
    hits: int | None = Field(default=None, ge=0)
    downloads: int | None = Field(default=None, ge=0)
    installs: int | None = Field(default=None, ge=0)
    diff_packages: list[dict[str, Any]] = Field(
        default_factory=list, max_length=64, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )


KIND_INFO: dict[str, Any] = {
    "kind": "DeliveryTask",
    "plural": "deliverytasks",
    "singular": "deliverytask",
    "shortNames": ["dtask"],
    "spec": DeliveryTaskSpec,
    "status": DeliveryTaskStatus,
    "printerColumns": [
        {"name": "App", "type": "string", "jsonPath": ".spec.appId"},
        {"name": "Type", "type": "string", "jsonPath": ".spec.resourceType"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.package.version"},
        {"name": "Percent", "type": "integer", "jsonPath": ".status.currentPercent"},
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
