"""Sync (MSS): ordered per-user and per-device data sync with acknowledgements.

So far it reads its SyncTopic resources live and serves health, readiness and metrics; it syncs nothing
yet, and the operator reports each SyncTopic Ready=False with reason NotImplemented.
"""

from ..component import Component, resource_counts
from ..service import ComponentSettings

COMPONENT = Component(
    name="sync",
    summary="ordered data sync (SyncTopic); serves health only so far",
    kinds=("SyncTopic",),
    settings=ComponentSettings,
    build=resource_counts("sync", ("SyncTopic",)),
    dev_port=8084,
)
