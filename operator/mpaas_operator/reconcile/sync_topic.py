"""SyncTopic: validation, uniqueness of (appId, bizType) in a namespace, and status.

No sync component serves oplogs yet, so a valid topic reports Ready=False with
reason NotImplemented (and a conflicting one reason Conflict).
"""

from __future__ import annotations

from typing import Any

from mpaas.api import SYNC_TOPIC, InvalidResource
from mpaas.api.sync import SyncTopicSpec
from mpaas.kube import KubeClient

from .. import conditions
from .common import NOT_IMPLEMENTED, identity, kstatus, report, report_invalid


async def reconcile(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    namespace, name, _ = identity(body)
    try:
        spec: SyncTopicSpec = SYNC_TOPIC.parse_spec(body)  # type: ignore[assignment]
    except InvalidResource as e:
        await report_invalid(client, SYNC_TOPIC, body, e)
        return None
    # Two topics with one (appId, bizType) would interleave one oplog: the older one keeps it.
    others = (await client.list(SYNC_TOPIC.resource, namespace)).get("items") or []
    rivals = sorted(
        (
            o
            for o in others
            if (o.get("spec") or {}).get("appId") == spec.app_id
            and (o.get("spec") or {}).get("bizType") == spec.biz_type
        ),
        key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]),
    )
    owner = rivals[0]["metadata"]["name"] if rivals else name
    if owner != name:
        ready = conditions.condition(
            "Ready",
            False,
            "Conflict",
            f"SyncTopic {owner} already serves appId {spec.app_id} bizType {spec.biz_type}; "
            "delete one of them or change bizType",
        )
    else:
        ready = conditions.condition(
            "Ready",
            False,
            NOT_IMPLEMENTED,
            f"valid: {spec.scope} scope, {spec.persistence}, keeps {spec.retention.max_oplogs} oplogs; "
            "no sync component serves oplogs yet",
        )
    return await report(client, SYNC_TOPIC, body, kstatus(ready))
