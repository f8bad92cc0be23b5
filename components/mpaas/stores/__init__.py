"""Store interfaces with a production and an embedded implementation each.

| interface   | production             | embedded (`mpaas dev`)  |
|-------------|------------------------|-------------------------|
| HotStore    | Redis                  | in-process dicts        |
| EventLog    | Kafka                  | in-process topic logs   |
| ObjectStore | any S3-compatible store| a local folder          |

One contract test suite runs against both implementations of each interface.
`open_*` pick the implementation from a URL so settings stay one string.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from .eventlog import EventLog, KafkaEventLog, MemoryEventLog, Record
from .hotstore import FallbackHotStore, HotStore, MemoryHotStore, RedisHotStore
from .objects import LocalObjectStore, ObjectInfo, ObjectStore, S3ObjectStore


def open_hotstore(url: str) -> HotStore:
    """`redis://host:port/db` or `memory://`."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHotStore(url)
    if url.startswith("memory:"):
        return MemoryHotStore()
    raise ValueError(f"unsupported hot store URL {url!r}: use redis://host:port/db or memory://")


def open_eventlog(url: str) -> EventLog:
    """`kafka://host:port[,host:port]` or `memory://`."""
    if url.startswith("kafka://"):
        return KafkaEventLog(url.removeprefix("kafka://"))
    if url.startswith("memory:"):
        return MemoryEventLog()
    raise ValueError(f"unsupported event log URL {url!r}: use kafka://host:port or memory://")


def open_objectstore(url: str, *, access_key: str = "", secret_key: str = "") -> ObjectStore:
    """`s3://bucket?endpoint=http://host:port[&region=r]` or `file:///path`."""
    u = urlparse(url)
    if u.scheme == "s3":
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        endpoint = q.get("endpoint", "https://s3.amazonaws.com")
        return S3ObjectStore(endpoint, u.netloc, access_key=access_key, secret_key=secret_key, region=q.get("region"))
    if u.scheme == "file":
        return LocalObjectStore(u.path)
    raise ValueError(f"unsupported object store URL {url!r}: use s3://bucket?endpoint=... or file:///path")


__all__ = [
    "EventLog",
    "FallbackHotStore",
    "HotStore",
    "KafkaEventLog",
    "LocalObjectStore",
    "MemoryEventLog",
    "MemoryHotStore",
    "ObjectInfo",
    "ObjectStore",
    "Record",
    "RedisHotStore",
    "S3ObjectStore",
    "open_eventlog",
    "open_hotstore",
    "open_objectstore",
]
