"""Push (MPS): messages to a device, a user, a group or everyone, over link or the phone makers' channels.

So far it reads its PushChannel resources live and serves health, readiness and metrics; it sends nothing
yet, and the operator reports each PushChannel Ready=False with reason NotImplemented.
"""

from ..component import Component, resource_counts
from ..service import ComponentSettings

COMPONENT = Component(
    name="push",
    summary="push messages (PushChannel); serves health only so far",
    kinds=("PushChannel",),
    settings=ComponentSettings,
    build=resource_counts("push", ("PushChannel",)),
    dev_port=8082,
)
