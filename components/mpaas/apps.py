"""The platform's apps, and the keys SDKs name them by: compiled from the MpaasGateway resources.

An app registered in any MpaasGateway (`spec.apps[]`) may send analytics and check for updates. PostHog's
project key and Countly's app key (set in the app's SDK) are the app's `appId/workspaceId`, or just its
`appId` when that id is registered in one workspace only. The keys are public by design (both peers compile
them into the app), so they are not Secrets; what an unknown key sends is refused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import cast

from .api.gateway import GatewaySpec
from .config import Resources

KIND = "MpaasGateway"


@dataclass(frozen=True)
class AppDirectory:
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (appId, workspaceId)

    def resolve(self, key: str) -> tuple[str, str] | None:
        return self.keys.get(key)


EMPTY = AppDirectory()


def compile_apps(resources: Resources) -> AppDirectory:
    apps = {
        (app.app_id, app.workspace_id)
        for res in resources.get(KIND, {}).values()
        for app in cast(GatewaySpec, res.spec).apps
    }
    keys = {f"{a}/{w}": (a, w) for a, w in apps}
    workspaces: dict[str, list[str]] = defaultdict(list)
    for a, w in apps:
        workspaces[a].append(w)
    keys.update({a: (a, ws[0]) for a, ws in workspaces.items() if len(ws) == 1})
    return AppDirectory(keys)
