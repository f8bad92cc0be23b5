"""Kubernetes Events about the resources the operator handles, posted as controllers post them.

An Event says what the operator did or found and why (`kubectl describe`,
`kubectl events --for mpaasgateway/shop`). Repeats are folded the way
client-go's recorder folds them: one Event per (object, type, reason,
message), whose `count` and `lastTimestamp` grow, instead of a new object per
repeat. The name is derived from that key, so a restarted operator folds into
the same Event too. Posting never fails a reconcile: an Event is a courtesy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from typing import Any

from mpaas.api.base import now
from mpaas.kube import ApiError, KubeClient, ResourceType

from . import metrics

log = logging.getLogger(__name__)

EVENTS = ResourceType("", "v1", "events")
COMPONENT = "mpaas-operator"
NORMAL, WARNING = "Normal", "Warning"
_INSTANCE = os.environ.get("POD_NAME") or socket.gethostname()


def _stamp() -> str:
    return now().isoformat().replace("+00:00", "Z")


def event_name(obj: dict[str, Any], type_: str, reason: str, message: str) -> str:
    key = "\x00".join((obj["metadata"].get("uid", ""), type_, reason, message))
    return f"{obj['metadata']['name']}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


async def post(client: KubeClient, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Record `reason` (CamelCase) with `message` on `obj`; a repeat raises the existing Event's count."""
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    name = event_name(obj, type_, reason, message)
    stamp = _stamp()
    try:
        try:
            await client.create(
                EVENTS,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": {
                        "apiVersion": obj.get("apiVersion"),
                        "kind": obj.get("kind"),
                        "name": meta["name"],
                        "namespace": namespace,
                        "uid": meta.get("uid"),
                        "resourceVersion": meta.get("resourceVersion"),
                    },
                    "type": type_,
                    "reason": reason,
                    "message": message[:1024],
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": COMPONENT},
                    "reportingComponent": COMPONENT,
                    "reportingInstance": _INSTANCE[:128],
                },
            )
        except ApiError as e:
            if e.status != 409:
                raise
            existing = await client.get(EVENTS, namespace, name)
            count = int((existing or {}).get("count") or 1) + 1
            await client.merge_patch(EVENTS, namespace, name, {"count": count, "lastTimestamp": stamp})
        metrics.EVENTS.labels(type_, reason).inc()
        log.info("event %s %s on %s %s/%s: %s", type_, reason, obj.get("kind"), namespace, meta["name"], message)
    except ApiError as e:
        log.warning("could not post event %s on %s/%s: %s", reason, namespace, meta["name"], e)
