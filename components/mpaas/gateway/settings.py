"""The gateway process's settings (environment variables MPAAS_*); what it serves comes from MpaasGateway."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..service import ComponentSettings


class GatewaySettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_", extra="ignore")
    gateway_name: str | None = None
    upstream_max_connections: int = 512
    # Shared hot state (nonces, rate-limit buckets): redis://host:port/db, or memory:// for one process.
    redis_url: str = "memory://"
    digest_log: bool = True
    # The admin API (test calls without signatures): loopback by default, reach it with a port-forward; 0 turns it off.
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    # Worker processes sharing the port (mpaas.workers); more than one needs redis_url.
    workers: int = Field(default=1, ge=1, le=64)
    reuse_port: bool = False  # set for each worker by the supervisor
    # A worker joins the shared port only once it has a config (its siblings may be serving already), waiting
    # at most this long so that /healthz still answers when the API server stays away.
    first_config_wait_seconds: float = Field(default=10.0, ge=0)
