"""Delivery (MDS): app upgrades, hot fixes, offline packages and switches, released by gray rules.

So far it reads its DeliveryTask resources live and serves health, readiness and metrics; it delivers
nothing yet, and the operator reports each DeliveryTask Ready=False with reason NotImplemented. The
targeting decision (`targeting.py`: which release a client gets) is built and tested, not yet served.
"""

from ..component import Component, resource_counts
from ..service import ComponentSettings

COMPONENT = Component(
    name="delivery",
    summary="updates by gray release (DeliveryTask); serves health only so far",
    kinds=("DeliveryTask",),
    settings=ComponentSettings,
    build=resource_counts("delivery", ("DeliveryTask",)),
    dev_port=8081,
)
