"""Link: the long-connection gateway phones hold open, carrying push and sync messages.

So far it reads its PushChannel resources live and serves health, readiness and metrics; it accepts no
long connection yet, and the operator reports a Link PushChannel Ready=False with reason NotImplemented.
"""

from ..component import Component, resource_counts
from ..service import ComponentSettings

COMPONENT = Component(
    name="link",
    summary="long connections to phones (Link PushChannel); serves health only so far",
    kinds=("PushChannel", "SyncTopic"),
    settings=ComponentSettings,
    # The operator's link builder names the Link PushChannel a pod serves.
    build=resource_counts("link", ("PushChannel", "SyncTopic"), own=("PushChannel", "MPAAS_PUSH_CHANNEL")),
    dev_port=8083,
)
