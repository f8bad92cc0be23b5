"""DeliveryTask: one package (app upgrade, hotfix, offline bundle, ...) released to a gray audience."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from .base import APP_ID, VERSION_STRING, ApiModel, CommonStatus, VersionRange, cel, immutable, named_list


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
        description="Where the package is: s3://bucket/key in the platform's object store (whose bucket it must "
        "name), or an http(s):// URL. The operator checks it there once (condition PackageVerified); clients get a "
        "link to it.",
    )
    version: str = Field(
        max_length=32,
        pattern=VERSION_STRING,
        description="Version of the released app or resource, dotted numbers, e.g. 3.2.0: clients that run an "
        "older one get the update; of several live releases, the newest wins. Shown by kubectl get.",
    )
    sha256: str = Field(
        pattern=r"^[a-f0-9]{64}$",
        max_length=64,
        description="SHA-256 of the package, 64 lower-case hex digits: the operator checks the package against it "
        "before it is offered, and clients get it to check their download.",
    )
    size_bytes: int = Field(
        ge=1,
        le=16 * 1024**3,
        description="Size of the package, in bytes, 1-17179869184 (16 GiB): checked by the operator with sha256, "
        "and sent to clients.",
    )
    signature: str | None = Field(
        default=None,
        max_length=4096,
        description="Base64 signature over sha256 (its 32 bytes; ECDSA P-256 or RSA PKCS#1 v1.5, with SHA-256), "
        "sent to clients to check with the app's delivery key. The operator checks it first with the app's "
        "deliveryPublicKey (MpaasGateway apps[]) when the app has one, and refuses an unsigned package then.",
    )


class Whitelist(ApiModel):
    """Users and devices named one by one."""

    user_ids: list[str] = Field(
        default_factory=list,
        max_length=10000,
        description="User ids that get the release whatever the percent and filters. At most 10000.",
    )
    device_ids: list[str] = Field(
        default_factory=list,
        max_length=10000,
        description="Device ids that get the release whatever the percent and filters. At most 10000.",
    )
    user_ids_object: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^[^\s/.][^\s]*$",
        description="A longer list of user ids, held in the platform's object store: the key of a text object "
        "with one id per line (UTF-8, at most 200 characters each, at most 10000000 lines and 256 MiB). Read by "
        "the delivery component when the task changes and every minute after; until it is read, or when it "
        "cannot be, the last good version counts (none at first).",
    )
    device_ids_object: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^[^\s/.][^\s]*$",
        description="A longer list of device ids, held in the platform's object store, as userIdsObject.",
    )
    only: bool = Field(
        default=False,
        description="Release to the whitelist alone, e.g. for internal testing; needs userIds, deviceIds or "
        "one of the lists in the object store. Default false.",
    )


class TimeWindow(ApiModel):
    """A period the release is limited to."""

    __cel__ = [cel("timestamp(self.end) > timestamp(self.start)", "window.end must be after window.start")]
    start: datetime = Field(description="When the release opens (RFC 3339 timestamp).")
    end: datetime = Field(description="When the release closes (RFC 3339 timestamp); after start.")
    max_users: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="Most devices that get the release in the window, 1-1000000000, counted across every "
        "delivery replica; whitelisted devices take no seat. Unset: no cap.",
    )


class Filters(ApiModel):
    """Device attributes a client must match: any value of each list given, every filter given."""

    cities: list[str] = Field(default_factory=list, max_length=512, description="Cities, as the client reports them.")
    models: list[str] = Field(default_factory=list, max_length=512, description="Device models.")
    brands: list[str] = Field(default_factory=list, max_length=128, description="Device brands.")
    networks: list[Network] = Field(
        default_factory=list,
        max_length=5,
        description="Network types: Wifi, Cellular, 5G, 4G or 3G.",
    )
    channels: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Distribution channels the app was installed from (app stores).",
    )
    os_version: VersionRange | None = Field(default=None, description="Range of operating-system versions. Unset: any.")
    app_version: VersionRange | None = Field(default=None, description="Range of installed app versions. Unset: any.")


class Targeting(ApiModel):
    """Who gets the release: the whitelist, or else the filters, the rule and the percent, within the window."""

    whitelist: Whitelist | None = Field(default=None, description="Users and devices named one by one.")
    percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of the targeted devices that get the release when stages is empty, in percent, 0-100, "
        "reported as status.currentPercent; a device is inside by a stable hash of its id. Default 100.",
    )
    window: TimeWindow | None = Field(default=None, description="A period the release is limited to.")
    filters: Filters | None = Field(
        default=None, description="Device attributes a client must match. Unset: any device."
    )
    rule: str | None = Field(
        default=None,
        max_length=2048,
        description="Gray-rule expression a client must match, e.g. APP_VERSION >= 3.0 && CITY IN (Hangzhou, "
        "Shanghai); the operator checks that it parses.",
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
        description="How long the stage lasts before the operator starts the next, in seconds, 60-7776000 (90 "
        "days), not counting the time it is held (paused or rolled back); required on every stage but the last, "
        "which lasts until the task is deleted.",
    )


class AutoPause(ApiModel):
    """Pause the release by itself when too many of the current stage's installs fail."""

    max_failure_percent: int = Field(
        ge=0,
        le=99,
        description="Highest share of failed installs the current stage tolerates, in percent of its install "
        "reports (installs plus failures), 0-99: above it the operator pauses the release (condition AutoPaused). "
        "0: any failure pauses.",
    )
    min_installs: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Fewest install reports (installs plus failures) of the current stage before its failure "
        "share is judged, 1-10000000, so that 1 failure of 2 does not pause a release. Default 100.",
    )


class Diffs(ApiModel):
    """Diff packages to build for this release: from the packages of earlier releases to this one's."""

    from_releases: int = Field(
        ge=1,
        le=10,
        description="How many earlier releases to build a diff from, 1-10: the newest DeliveryTasks of the same "
        "appId, workspaceId, platform and resourceType whose package is verified, of a lower version, and not "
        "rolled back. Built by the operator once this task's package is verified, and listed in "
        "status.diffPackages; a client that says which package it runs is offered the diff from it, with the "
        "full package as fallback.",
    )


class DeliveryTaskSpec(ApiModel):
    """Desired state of a DeliveryTask: the package, who gets it, and in which stages.

    The operator validates the spec, checks the package once and advances the stages; the delivery component
    offers the package to the devices the targeting and the current percent pick.
    """

    __cel__ = [
        cel("self.resourceType != 'Switch' || !has(self.package)", "a Switch carries no package"),
        cel("self.resourceType == 'Switch' || has(self.package)", "package is required unless resourceType is Switch"),
        cel(
            "(self.resourceType == 'H5Offline' || self.resourceType == 'MiniProgram') == has(self.offlineAppId)",
            "offlineAppId is required for H5Offline and MiniProgram, and only for them",
        ),
    ]
    app_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        json_schema_extra=immutable("appId is immutable"),
        description="The app whose clients get the release (their AppId). Immutable. Shown by kubectl get.",
    )
    workspace_id: str = Field(
        max_length=64,
        pattern=APP_ID,
        description="The app's workspace (their WorkspaceId), e.g. prod.",
    )
    platform: Platform = Field(
        json_schema_extra=immutable("platform is immutable"),
        description="The client platform that gets the release: Android, IOS or Harmony. Immutable.",
    )
    resource_type: ResourceType = Field(
        json_schema_extra=immutable("resourceType is immutable"),
        description="What is released: AppUpgrade (a new app version), Hotfix, H5Offline (an offline H5 bundle), "
        "MiniProgram, Resource, or Switch (a payload without a package). Immutable. Shown by kubectl get.",
    )
    offline_app_id: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        json_schema_extra=immutable("offlineAppId is immutable"),
        description="For H5Offline and MiniProgram (required there, refused elsewhere): the offline H5 app's or "
        "mini program's own id, e.g. 20000123. Releases of one id compete (the newest applicable wins); a "
        "client asks about each id it has installed. Immutable.",
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
        description="Free-form JSON the client receives with the update; for a Switch, its values (those of every "
        "switch that applies are merged, a newer one's winning).",
    )
    upgrade_mode: UpgradeMode = Field(
        default=UpgradeMode.REMIND,
        description="How the client offers the update: Silent (without asking), Remind (the user may decline) or "
        "Force (the user must update). Default Remind.",
    )
    description: str | None = Field(
        default=None,
        max_length=4096,
        description="Release notes for the user, sent with the update. At most 4096 characters.",
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
        description="Hold the release at its current stage: it is still served at that stage's percent, and the "
        "stage's clock stops (on resume the stage has the time it had left). Default false.",
    )
    rollback: bool = Field(
        default=False,
        description="Withdraw the release: no device is offered it (status.currentPercent 0), clients that run "
        "it are told to roll back, and the stage's clock stops as with paused. Default false.",
    )
    auto_pause: AutoPause | None = Field(
        default=None,
        description="Pause the release by itself when the current stage's install-failure share passes a "
        "threshold: it is held as with paused (served at its stage's percent, its clock stopped) until the spec "
        "changes, and condition AutoPaused says why. Unset: never.",
    )
    diffs: Diffs | None = Field(
        default=None,
        description="Build diff packages from earlier releases' packages to this one (binary, HDiffPatch; for "
        "H5Offline, zips of the files that changed; for Expo updates, bsdiffs of the launch bundle), condition "
        "DiffPackages saying how far it got. Unset: none.",
    )

    @model_validator(mode="after")
    def _offline_app_id(self) -> DeliveryTaskSpec:
        if (self.resource_type in PER_OFFLINE_APP) != (self.offline_app_id is not None):
            raise ValueError("offlineAppId is required for H5Offline and MiniProgram, and only for them")
        return self


class StageStatus(ApiModel):
    """One stage the release has served, with what clients did during it."""

    index: int = Field(ge=0, le=19, description="Index of the stage in spec.stages, from 0.")
    percent: int = Field(ge=0, le=100, description="The stage's percent of the targeted devices.")
    started_at: datetime | None = Field(default=None, description="When the stage began (RFC 3339 timestamp).")
    hits: int | None = Field(default=None, ge=0, description="Update checks that offered the release during the stage.")
    downloads: int | None = Field(
        default=None, ge=0, description="Devices that reported a download of the package during the stage."
    )
    installs: int | None = Field(
        default=None, ge=0, description="Devices that reported the package installed during the stage."
    )
    failures: int | None = Field(
        default=None, ge=0, description="Devices that reported a failed install during the stage."
    )


class AutoPauseStatus(ApiModel):
    """What spec.autoPause keeps between the operator's passes."""

    paused_at: datetime | None = Field(
        default=None, description="While the release is auto-paused: since when (RFC 3339 timestamp)."
    )
    paused_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the release was auto-paused at; a spec change (a higher generation) "
        "resumes it.",
    )
    stage: int | None = Field(default=None, ge=0, description="The stage installs and failures below were counted in.")
    installs: int | None = Field(
        default=None,
        ge=0,
        description="Installs of that stage when the release was last resumed: the failure share is judged on "
        "what came after.",
    )
    failures: int | None = Field(
        default=None, ge=0, description="Failed installs of that stage when the release was last resumed."
    )


class DiffPackage(ApiModel):
    """A diff package in the object store: from an earlier release's package to this task's."""

    from_version: str = Field(max_length=32, description="Version of the earlier package.")
    from_sha256: str = Field(
        pattern=r"^[a-f0-9]{64}$", max_length=64, description="SHA-256 of the earlier package the diff applies to."
    )
    from_task: str = Field(max_length=320, description="The earlier release's DeliveryTask, namespace/name.")
    format: str = Field(
        max_length=16,
        description="hdiffpatch (HDiffPatch compressed diff of the whole file), files (a zip of the changed "
        "files with mpaas-diff.json) or expo-bsdiff (a bsdiff of an Expo dist's launch bundle), as "
        "docs/delivery.md describes.",
    )
    uri: str = Field(max_length=2048, description="Where the diff is: s3://bucket/key in the platform's object store.")
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$", max_length=64, description="SHA-256 of the diff.")
    size_bytes: int = Field(ge=1, description="Size of the diff, in bytes.")


PER_OFFLINE_APP = (ResourceType.H5_OFFLINE, ResourceType.MINI_PROGRAM)


class DeliveryTaskStatus(CommonStatus):
    """Observed state of a DeliveryTask."""

    current_stage: int | None = Field(
        default=None,
        ge=0,
        description="Index of the current entry of spec.stages, from 0; advanced by the operator one stage at a "
        "time. Unset until the package is verified.",
    )
    current_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Share of the targeted devices the release is open to, in percent: the current stage's "
        "percent (targeting.percent without stages); 0 before the package is verified and after a rollback.",
    )
    stage_started_at: datetime | None = Field(
        default=None, description="When the current stage began (RFC 3339 timestamp)."
    )
    paused_at: datetime | None = Field(
        default=None,
        description="While spec.paused or spec.rollback holds the current stage: since when (RFC 3339 timestamp).",
    )
    paused_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Seconds the current stage was held before now (paused or rolled back): it ends that much "
        "later than stageStartedAt + durationSeconds.",
    )
    hits: int | None = Field(
        default=None,
        ge=0,
        description="Update checks that offered the release, every stage together (counted in the delivery "
        "component's Redis; absent while the operator cannot read it).",
    )
    downloads: int | None = Field(
        default=None, ge=0, description="Devices that reported a download of the package, every stage together."
    )
    installs: int | None = Field(
        default=None, ge=0, description="Devices that reported the package installed, every stage together."
    )
    failures: int | None = Field(
        default=None, ge=0, description="Devices that reported a failed install, every stage together."
    )
    stages: list[StageStatus] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra=named_list("index"),
        description="The stages served so far, in order, with their counts. At most 20.",
    )
    auto_pause: AutoPauseStatus | None = Field(
        default=None, description="The state of spec.autoPause: whether and since when the release is auto-paused."
    )
    diff_packages: list[DiffPackage] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra=named_list("fromSha256"),
        description="Diff packages built for spec.diffs, from the newest earlier release down. At most 10.",
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
