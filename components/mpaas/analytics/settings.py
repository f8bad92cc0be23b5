"""The analytics process's settings (environment variables MPAAS_*)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..service import ComponentSettings


class AnalyticsSettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_", extra="ignore")
    # Where accepted events go: kafka://host:port[,host:port], or memory:// for one process (mpaas dev).
    kafka_url: str = "memory://"
    events_topic: str = "mpaas.analytics.events"
    # Limits on one upload (docs/analytics.md, "Limits").
    max_body_bytes: int = Field(default=1 << 20, ge=1024)  # as sent (compressed or not): 413
    max_inflated_bytes: int = Field(default=4 << 20, ge=1024)  # after gzip: 413
    body_timeout_seconds: float = Field(default=30.0, gt=0)  # the whole body must arrive in this: 408
    max_events_per_request: int = Field(default=1000, ge=1)  # more: 413
    # Back pressure: events handed to the event log and not yet acknowledged by it, across requests; an upload
    # that would pass this, or that is not acknowledged within the timeout, gets 429 with Retry-After.
    max_pending_events: int = Field(default=20_000, ge=1)
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    retry_after_seconds: int = Field(default=2, ge=1)
    # Per-app rate limit, in events per second (0: none), with a burst of at least one upload's worth; the
    # buckets live in the hot store, shared by every pod when it is Redis.
    app_events_per_second: int = Field(default=0, ge=0)
    app_events_burst: int | None = Field(default=None, ge=1)
    redis_url: str = "memory://"
    # Client clocks: an event stamped further ahead of the server, or older, is refused (the rest of its batch
    # is kept).
    max_future_seconds: int = Field(default=3600, ge=0)
    max_age_seconds: int = Field(default=30 * 86400, ge=60)
    # Real-time aggregates (realtime.py): computed by a consumer group from the events topic, kept in Redis
    # (redis://host:port/db) or in-process (memory://, one process only).
    realtime: bool = True
    realtime_group: str = "mpaas-analytics-realtime"  # the consumer group; a new one reads the topic from its start
    aggregates_url: str = "memory://"
    aggregates_prefix: str = "rt:"  # of every Redis key, to share one Redis with other users
    # The query API (/v1/apps/...): on its own port, loopback by default (reach it with a port-forward); 0: off.
    admin_host: str = "127.0.0.1"
    admin_port: int = 9902
    # Where crash-symbol mappings are kept: s3://bucket?endpoint=..., file:///path, or "" (none: mappings cannot
    # be uploaded and stacks are grouped as sent). The S3 keys come from the environment (a Secret in a pod).
    objects_url: str = ""
    objects_access_key: str = ""
    objects_secret_key: str = ""
    # History (history.py): every event archived as Parquet in the object store by its own consumer group, in
    # batches of at most these seconds or bytes, and queried with DuckDB through a local cache of the files read.
    history: bool = True  # needs objects_url
    history_group: str = "mpaas-analytics-history"
    history_flush_seconds: float = Field(default=60.0, gt=0)
    history_flush_bytes: int = Field(default=64 << 20, ge=1 << 16)
    history_cache_dir: str = ""  # "": a temporary folder
    history_cache_bytes: int = Field(default=2 << 30, ge=1 << 20)
    history_max_query_bytes: int = Field(default=1 << 30, ge=1 << 20)  # of files one query reads: more is a 400
