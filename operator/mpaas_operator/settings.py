"""Operator settings from MPAAS_OPERATOR_* environment variables."""

from __future__ import annotations

import fnmatch

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mpaas import __version__


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_OPERATOR_", extra="ignore")

    # Image of the components the operator deploys (one image, a subcommand per component).
    image: str = f"ghcr.io/mpaas-io/mpaas:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    # Images an MpaasGateway's spec.image may name: comma-separated patterns (fnmatch: `*`, `?`). Empty:
    # any tag or digest of the operator's own image repository. Whoever may create an MpaasGateway runs
    # that image with read access to the Secrets it names, so this is a security boundary.
    allowed_images: str = ""
    # Shared state (Redis) for the gateways whose spec names none: redis://host:port/db. Also the Redis of link
    # (inboxes, routes) and push (devices, messages): the Link and vendor PushChannels' pods get it.
    redis_url: str | None = None
    # Push's Kafka (kafka://host:port[,host:port]): vendor PushChannels' sender pods consume their jobs there and
    # the operator reads each channel's queue lag from it. Empty: vendor channels get no sender pods.
    kafka_url: str = ""
    # The platform's object store, where DeliveryTask packages are (s3://bucket?endpoint=http://host:port or
    # file:///path), named as the components name it: the operator reads each package once to check its size
    # and sha256 (condition PackageVerified). Empty: s3:// packages are never verified.
    objects_url: str = Field(default="", validation_alias="MPAAS_OBJECTS_URL")
    objects_access_key: str = Field(default="", validation_alias="MPAAS_OBJECTS_ACCESS_KEY")
    objects_secret_key: str = Field(default="", validation_alias="MPAAS_OBJECTS_SECRET_KEY", repr=False)
    # The delivery component's Redis and key prefix (its MPAAS_REDIS_URL and MPAAS_REDIS_PREFIX, named as it names
    # them), where it counts each DeliveryTask's hits, downloads, installs and failures: the operator reads them
    # into status and judges spec.autoPause on them. Empty: no counts in status, and no task is auto-paused.
    delivery_redis_url: str = Field(default="", validation_alias="MPAAS_REDIS_URL", repr=False)
    delivery_redis_prefix: str = Field(default="delivery:", validation_alias="MPAAS_REDIS_PREFIX")
    # Diff packages (DeliveryTask spec.diffs), built in a child process one at a time: packages larger than
    # this are not diffed (a build holds both packages in memory, and about 4.5 times the earlier one's size
    # more: hack/bench/delivery_diffs.py), and a build that takes longer is stopped.
    diff_max_bytes: int = Field(default=100 << 20, ge=1, validation_alias="MPAAS_DIFF_MAX_BYTES")
    diff_timeout_seconds: float = Field(default=1800.0, gt=0, validation_alias="MPAAS_DIFF_TIMEOUT_SECONDS")
    # What a build's process may allocate (RLIMIT_DATA): past it the build fails alone, and a build that would
    # need more by its packages' sizes is not started. Keep it under the container's memory limit.
    diff_max_memory: int = Field(default=768 << 20, ge=64 << 20, validation_alias="MPAAS_DIFF_MAX_MEMORY")
    # Comma-separated namespaces to watch; empty: every namespace.
    namespaces: str = ""
    # Active/standby: replicas meet in this kopf peering object (the chart creates it); the highest
    # priority works, the rest stand by. A peer that stops touching it for `peering_lifetime_seconds`
    # is dead and a standby takes over; each live peer touches it every second.
    peering: str = "mpaas-operator"
    peering_lifetime_seconds: int = 5
    priority: int | None = None  # random per process when unset, so two replicas never tie
    # One replica and no peering object (local runs).
    standalone: bool = False
    field_manager: str = "mpaas-operator"
    health_port: int = 8081
    # Prometheus metrics (mpaas_operator.metrics) at http://0.0.0.0:<port>/metrics; 0: not served. The chart
    # sets 8082.
    metrics_port: int = 0
    log_format: str = "json"
    log_level: str = "INFO"

    def image_allowed(self, image: str) -> bool:
        patterns = [p.strip() for p in self.allowed_images.split(",") if p.strip()]
        if not patterns:
            repository = _repository(self.image)
            patterns = [f"{repository}:*", f"{repository}@sha256:*"]
        return any(fnmatch.fnmatchcase(image, p) for p in patterns)

    def watched_namespaces(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]


def _repository(image: str) -> str:
    """`registry:5000/team/app:tag@sha256:...` -> `registry:5000/team/app`."""
    name = image.split("@")[0]
    return name[: name.rfind(":")] if name.rfind(":") > name.rfind("/") else name


SETTINGS = OperatorSettings()
