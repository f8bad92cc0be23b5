"""Analytics (MAS): log ingestion, real-time mobile metrics, crash grouping.

So far it serves health, readiness and metrics only; it reads no resource and ingests nothing yet.
"""

from ..component import Component, resource_counts
from ..service import ComponentSettings

COMPONENT = Component(
    name="analytics",
    summary="log ingestion and mobile metrics; serves health only so far",
    kinds=(),
    settings=ComponentSettings,
    build=resource_counts("analytics", ()),
    dev_port=8085,
)
