"""Store interfaces with a production and an embedded implementation each.

| interface    | role                                          | production              | embedded (`mpaas dev`) |
|--------------|-----------------------------------------------|-------------------------|------------------------|
| HotStore     | nonces, rate limits, small shared state       | Redis                   | in-process dicts       |
| SequencedLog | device inboxes (push, link), sync oplogs      | Redis with AOF          | in-process logs        |
| RouteTable   | device -> link pod routes, last seen          | Redis                   | in-process map         |
| Counters     | counters, HyperLogLog distinct counts         | Redis                   | in-process, a real HLL |
| MemberSets   | whitelists, replaced whole                    | Redis                   | in-process sets        |
| EventLog     | analytics, fan-out jobs, send queues          | Kafka                   | in-process topic logs  |
| ObjectStore  | packages, archives; multipart, presigned URLs | any S3-compatible store | a local folder         |

One contract test suite runs against both implementations of each interface.
`open_*` pick the implementation from a URL so settings stay one string. The Redis roles take a URL or
a client to share; every multi-key script or transaction keeps its keys in one Cluster hash slot.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from .counters import Counters, HyperLogLog, MemoryCounters, RedisCounters
from .eventlog import EventLog, KafkaEventLog, MemoryEventLog, Record
from .hotstore import FallbackHotStore, HotStore, MemoryHotStore, RedisHotStore
from .objects import LocalObjectStore, ObjectInfo, ObjectStore, S3ObjectStore
from .presence import Lease, MemoryRouteTable, RedisRouteTable, RouteTable
from .seqlog import LogBatch, LogFull, MemorySequencedLog, RedisSequencedLog, SequencedLog
from .sets import MemberSets, MemoryMemberSets, RedisMemberSets


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


def open_objectstore(
    url: str,
    *,
    access_key: str = "",
    secret_key: str = "",
    url_base: str = "/objects",
    signing_key: bytes | None = None,
) -> ObjectStore:
    """`s3://bucket?endpoint=http://host:port[&region=r]` or `file:///path` (presigned URLs under `url_base`)."""
    u = urlparse(url)
    if u.scheme == "s3":
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        endpoint = q.get("endpoint", "https://s3.amazonaws.com")
        return S3ObjectStore(endpoint, u.netloc, access_key=access_key, secret_key=secret_key, region=q.get("region"))
    if u.scheme == "file":
        return LocalObjectStore(u.path, url_base=url_base, signing_key=signing_key)
    raise ValueError(f"unsupported object store URL {url!r}: use s3://bucket?endpoint=... or file:///path")


__all__ = [
    "Counters",
    "EventLog",
    "FallbackHotStore",
    "HotStore",
    "HyperLogLog",
    "KafkaEventLog",
    "Lease",
    "LocalObjectStore",
    "LogBatch",
    "LogFull",
    "MemberSets",
    "MemoryCounters",
    "MemoryEventLog",
    "MemoryHotStore",
    "MemoryMemberSets",
    "MemoryRouteTable",
    "MemorySequencedLog",
    "ObjectInfo",
    "ObjectStore",
    "Record",
    "RedisCounters",
    "RedisHotStore",
    "RedisMemberSets",
    "RedisRouteTable",
    "RedisSequencedLog",
    "RouteTable",
    "S3ObjectStore",
    "SequencedLog",
    "open_eventlog",
    "open_hotstore",
    "open_objectstore",
]
