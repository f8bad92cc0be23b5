"""Operator settings from MPAAS_OPERATOR_* environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from mpaas import __version__


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_OPERATOR_", extra="ignore")

    # Image of the components the operator deploys (one image, a subcommand per component).
    image: str = f"ghcr.io/mpaas-io/mpaas:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    # Shared state (Redis) for the gateways whose spec names none: redis://host:port/db.
    redis_url: str | None = None
    # Watch one namespace, or all when unset.
    namespace: str | None = None
    # Active/standby: replicas sharing a peering name; the highest priority works, the rest stand by.
    peering: str = "mpaas-operator"
    priority: int | None = None  # random per process when unset, so two replicas never tie
    field_manager: str = "mpaas-operator"
    # Re-check status from children this often even without events.
    status_interval_seconds: float = 60.0
    health_port: int = 8081
    log_format: str = "json"
    log_level: str = "INFO"


SETTINGS = OperatorSettings()
