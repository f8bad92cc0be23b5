"""The gateway process's settings (environment variables MPAAS_*); what it serves comes from MpaasGateway."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..service import ComponentSettings


class GatewaySettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_", extra="ignore")
    gateway_name: str | None = None
    # Connections to one upstream endpoint, idle and busy together (a request that finds them all busy
    # waits up to 3 s for one, then 1004); and the largest answer taken from an upstream, head and body (4005).
    upstream_max_connections: int = Field(default=512, ge=1)
    upstream_max_response_bytes: int = Field(default=16 << 20, ge=1024)
    # What a client may hold of the HTTP/1.1 server (mpaas.http1.Limits; docs/gateway.md, "Limits").
    max_head_bytes: int = Field(default=65536, ge=1024)  # request line and headers (431)
    max_headers: int = Field(default=100, ge=8)  # header lines (431)
    head_timeout_seconds: float = Field(default=10.0, gt=0)  # first byte to the end of the head (408)
    body_timeout_seconds: float = Field(default=10.0, gt=0)  # a body's time, plus a second per ... (408)
    min_body_rate: int = Field(default=8192, ge=1)  # ... this many bytes received
    max_connections: int = Field(default=10000, ge=1)  # client connections per process; more get 503
    # Shared hot state (nonces, rate-limit buckets): redis://host:port/db, or memory:// for one process.
    redis_url: str = "memory://"
    digest_log: bool = True
    # The admin API (test calls without signatures): loopback by default, reach it with a port-forward; 0 turns it off.
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    # A worker joins the shared port only once it has a config (its siblings may be serving already), waiting
    # at most this long so that /healthz still answers when the API server stays away.
    first_config_wait_seconds: float = Field(default=10.0, ge=0)
