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
    """The file a DeliveryTask releases."""

    uri: str = Field(
        max_length=2048,
        pattern=r"^(s3|https?)://[^\s]+$",
        description="Not used yet: where the package is, an s3://bucket/key or http(s):// URL.",
    )
    version: str = Field(
        max_length=32,
        pattern=VERSION_STRING,
        description="Version of the released app or resource, dotted numbers, e.g. 3.2.0. Shown by kubectl get; "
        "not used otherwise yet.",
    )
    sha256: str = Field(
        pattern=r"^[a-f0-9]{64}$",
        max_length=64,
        description="Not used yet: SHA-256 of the package, 64 lower-case hex digits, for clients to check it.",
    )
    size_bytes: int = Field(
        ge=1,
        le=16 * 1024**3,
        description="Not used yet: size of the package, in bytes, 1-17179869184 (16 GiB).",
    )
    signature: str | None = Field(
        default=None,
        max_length=4096,
        description="Not used yet: base64 signature over sha256, for clients to check with the app's delivery key.",
    )


class Whitelist(ApiModel):
    """Users and devices named one by one."""

    user_ids: list[str] = Field(
        default_factory=list,
        max_length=10000,
        description="Not used yet: user ids that get the release whatever the percent and filters. At most 10000.",
    )
    device_ids: list[str] = Field(
        default_factory=list,
        max_length=10000,
        description="Not used yet: device ids that get the release whatever the percent and filters. At most 10000.",
    )
    only: bool = Field(
        default=False,
        description="Release to the whitelist alone, e.g. for internal testing; needs userIds or deviceIds. "
        "Not used yet beyond that check. Default false.",
    )


class TimeWindow(ApiModel):
    """A period the release is limited to."""

    __cel__ = [cel("timestamp(self.end) > timestamp(self.start)", "window.end must be after window.start")]
    start: datetime = Field(description="Not used yet: when the release opens (RFC 3339 timestamp).")
    end: datetime = Field(description="Not used yet: when the release closes (RFC 3339 timestamp); after start.")
    max_users: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="Not used yet: most users who get the release in the window, 1-1000000000. Unset: no cap.",
    )


class Filters(ApiModel):
    """Device attributes a client must match: any value of each list given, every filter given."""

    cities: list[str] = Field(
        default_factory=list, max_length=512, description="Not used yet: cities, as the client reports them."
    )
    models: list[str] = Field(default_factory=list, max_length=512, description="Not used yet: device models.")
    brands: list[str] = Field(default_factory=list, max_length=128, description="Not used yet: device brands.")
    networks: list[Network] = Field(
        default_factory=list,
        max_length=5,
        description="Not used yet: network types: Wifi, Cellular, 5G, 4G or 3G.",
    )
    channels: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Not used yet: distribution channels the app was installed from (app stores).",
    )
    os_version: VersionRange | None = Field(
        default=None, description="Not used yet: range of operating-system versions. Unset: any."
    )
    app_version: VersionRange | None = Field(
        default=None, description="Not used yet: range of installed app versions. Unset: any."
    )


class Targeting(ApiModel):
    """Who gets the release. No component picks devices yet: the operator only checks that rule parses and
    reports percent."""

    whitelist: Whitelist | None = Field(default=None, description="Not used yet: users and devices named one by one.")
    percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of the targeted devices that get the release when stages is empty, in percent, 0-100, "
        "reported as status.currentPercent. Not used yet to pick devices (meant: by a stable hash of the device "
        "id). Default 100.",
    )
    window: TimeWindow | None = Field(default=None, description="Not used yet: a period the release is limited to.")
    filters: Filters | None = Field(
        default=None, description="Not used yet: device attributes a client must match. Unset: any device."
    )
    rule: str | None = Field(
        default=None,
        max_length=2048,
        description="Gray-rule expression a client must match, e.g. APP_VERSION >= 3.0 && CITY IN (Hangzhou, "
        "Shanghai); the operator checks that it parses. Not used yet to pick devices.",
    )


class Stage(ApiModel):
    """One stage of a release."""

    percent: int = Field(
        ge=1,
        le=100,
        description="Share of the targeted devices that get the release in this stage, in percent, 1-100; "
        "reported as status.currentPercent.",
    )
    duration_seconds: int | None = Field(
        default=None,
        ge=60,
        le=86400 * 90,
        description="How long the stage lasts before the next, in seconds, 60-7776000 (90 days); required on every "
        "stage but the last. Not used yet: nothing moves a release to its next stage.",
    )


class DeliveryTaskSpec(ApiModel):
    """Desired state of a DeliveryTask: the package, who gets it, and in which stages.

    Not served yet: no component answers update checks or serves downloads. The operator validates the spec and
    reports the current stage's percent in status.
    """

    __cel__ = [
        cel("self.resourceType != 'Switch' || !has(self.package)", "a Switch carries no package"),
        cel("self.resourceType == 'Switch' || has(self.package)", "package is required unless resourceType is Switch"),
    ]
    app_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        json_schema_extra=immutable("appId is immutable"),
        description="The app whose clients get the release (their AppId). Immutable. Shown by kubectl get; "
        "not used otherwise yet.",
    )
    workspace_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        description="Not used yet: the app's workspace (their WorkspaceId), e.g. prod.",
    )
    platform: Platform = Field(
        json_schema_extra=immutable("platform is immutable"),
        description="Not used yet: the client platform that gets the release: Android, IOS or Harmony. Immutable.",
    )
    resource_type: ResourceType = Field(
        json_schema_extra=immutable("resourceType is immutable"),
        description="What is released: AppUpgrade (a new app version), Hotfix, H5Offline (an offline H5 bundle), "
        "MiniProgram, Resource, or Switch (a payload without a package). Immutable. Shown by kubectl get; "
        "not used otherwise yet.",
    )
    package: Package | None = Field(
        default=None,
        json_schema_extra=immutable("package is immutable: create a new DeliveryTask to release another package"),
        description="The file released. Required unless resourceType is Switch, which has none. Immutable: create a "
        "new DeliveryTask to release another package.",
    )
    payload: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Not used yet: free-form JSON the client receives with the update; for a Switch, its values.",
    )
    upgrade_mode: UpgradeMode = Field(
        default=UpgradeMode.REMIND,
        description="Not used yet: how the client offers the update: Silent (without asking), Remind (the user may "
        "decline) or Force (the user must update). Default Remind.",
    )
    description: str | None = Field(
        default=None,
        max_length=4096,
        description="Not used yet: release notes for the user, sent with the update. At most 4096 characters.",
    )
    targeting: Targeting = Field(
        default_factory=Targeting, description="Who gets the release. Default: every device, all at once."
    )
    stages: list[Stage] = Field(
        default_factory=list,
        max_length=20,
        description="Stages of the release, in order; percents must not decrease. Empty: one stage at "
        "targeting.percent. At most 20.",
    )
    paused: bool = Field(
        default=False,
        description="Hold the release at its current stage. Not used yet beyond the status: nothing advances "
        "stages. Default false.",
    )
    rollback: bool = Field(
        default=False,
        description="Withdraw the release; status.currentPercent shows 0. Not used yet beyond the status: no "
        "component serves releases. Default false.",
    )


class DeliveryTaskStatus(CommonStatus):
    """Observed state of a DeliveryTask."""

    current_stage: int | None = Field(
        default=None,
        ge=0,
        description="Index of the current entry of spec.stages, from 0. Nothing advances it yet: it stays 0.",
    )
    current_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Share of the targeted devices the release is open to, in percent: the current stage's "
        "percent (targeting.percent without stages), 0 after a rollback.",
    )
    stage_started_at: datetime | None = Field(
        default=None, description="Not written yet: when the current stage began (RFC 3339 timestamp)."
    )
    hits: int | None = Field(default=None, ge=0, description="Not written yet: update checks that offered the release.")
    downloads: int | None = Field(default=None, ge=0, description="Not written yet: downloads of the package.")
    installs: int | None = Field(default=None, ge=0, description="Not written yet: installs clients reported.")
    diff_packages: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Not written yet: differential packages, from earlier versions to this one. At most 64.",
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
        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
