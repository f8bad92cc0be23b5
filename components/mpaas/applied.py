"""Which generation of its resource a component pod has applied, told on the Pod itself.

A component compiles its resource live (`mpaas.config.LiveConfig`); nothing
restarts when the spec changes, so a rollout says nothing about whether the
pods run the latest spec. Each component process therefore writes a pod
condition through the `pods/status` subresource of its own Pod (named by the
downward API: `POD_NAME`, `POD_NAMESPACE`) whenever a config compiled from a
new generation of its resource is swapped in:

    type: mpaas.io/ConfigApplied   status: "True"   reason: Applied
    message: MpaasGateway shop/storefront generation 7

A pod with several worker processes (`MPAAS_WORKERS`) carries one condition
per worker: `mpaas.io/ConfigApplied` for worker 0, `mpaas.io/ConfigApplied.<i>`
for worker i. The patch is a strategic merge keyed by condition type, so the
kubelet's conditions and the other workers' stay as they are. The operator
reads these conditions (`applied_generation`) and aggregates them into the
owning resource's status.

Reporting is a courtesy to the status: a failed patch never touches serving.
It is logged once, then retried with backoff (with the newest generation)
until it succeeds; the next success is logged too. Without a cluster
(directory mode, `mpaas dev`) or without the downward-API variables nothing is
reported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from typing import Any

from prometheus_client import Counter

from .api.base import now
from .kube import PODS, KubeClient

log = logging.getLogger(__name__)

CONDITION_TYPE = "mpaas.io/ConfigApplied"
REASON = "Applied"
POD_NAME_ENV, POD_NAMESPACE_ENV = "POD_NAME", "POD_NAMESPACE"

REPORTS = Counter("mpaas_config_applied_reports_total", "Pod condition reports of the applied generation", ["result"])

_MESSAGE = re.compile(r"^(?P<kind>\w+) (?P<namespace>[^/\s]+)/(?P<name>\S+) generation (?P<generation>\d+)$")


def condition_type(worker: int = 0) -> str:
    """The condition a worker process writes: worker 0 (or a single process) writes the bare type."""
    return CONDITION_TYPE if worker == 0 else f"{CONDITION_TYPE}.{worker}"


def message(kind: str, namespace: str, name: str, generation: int) -> str:
    return f"{kind} {namespace}/{name} generation {generation}"


def pod_from_env() -> tuple[str, str] | None:
    """(namespace, name) of this process's Pod from the downward API, or None outside a pod."""
    namespace, name = os.environ.get(POD_NAMESPACE_ENV, ""), os.environ.get(POD_NAME_ENV, "")
    return (namespace, name) if namespace and name else None


def worker_from_env() -> int:
    try:
        return max(0, int(os.environ.get("MPAAS_WORKER_INDEX") or 0))
    except ValueError:
        return 0


def pod_workers(pod: dict[str, Any]) -> int:
    """How many worker processes the pod runs: `MPAAS_WORKERS` of its first container (1 when unset)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    for env in containers[0].get("env") or []:
        if env.get("name") == "MPAAS_WORKERS":
            try:
                return max(1, int(env.get("value") or 1))
            except ValueError:
                return 1
    return 1


def applied_generation(pod: dict[str, Any], kind: str, namespace: str, name: str) -> int | None:
    """The generation of `kind` `namespace/name` that every worker process of `pod` has applied (the oldest
    of theirs); None while one of them has not reported it."""
    by_type = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    generations = []
    for worker in range(pod_workers(pod)):
        cond = by_type.get(condition_type(worker))
        if cond is None or cond.get("status") != "True":
            return None
        m = _MESSAGE.match(cond.get("message") or "")
        if m is None or (m["kind"], m["namespace"], m["name"]) != (kind, namespace, name):
            return None
        generations.append(int(m["generation"]))
    return min(generations)


class AppliedReporter:
    """Writes this process's applied generation on its Pod; `applied()` is cheap and never blocks."""

    def __init__(
        self,
        client: KubeClient,
        *,
        pod: tuple[str, str],
        kind: str,
        namespace: str,
        name: str,
        worker: int = 0,
        first_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ):
        self.client = client
        self.pod_namespace, self.pod_name = pod
        self.kind, self.namespace, self.name = kind, namespace, name
        self.type = condition_type(worker)
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.reported: int | None = None  # the generation last written on the Pod
        self.failures = 0  # failed patches since the last success
        self._target: int | None = None
        self._wake = asyncio.Event()
        self._since: str | None = None  # when this process first reported: the condition's transition time

    def applied(self, generation: int) -> None:
        """A config compiled from `generation` is now in use."""
        if generation > 0 and generation != self._target:
            self._target = generation
            self._wake.set()

    def _condition(self, generation: int) -> dict[str, Any]:
        stamp = now().isoformat().replace("+00:00", "Z")
        return {
            "type": self.type,
            "status": "True",
            "reason": REASON,
            "message": message(self.kind, self.namespace, self.name, generation),
            "lastProbeTime": stamp,
            "lastTransitionTime": self._since or stamp,
        }

    async def report(self, generation: int) -> None:
        """One patch of the Pod's status: the condition of this process, merged by type."""
        cond = self._condition(generation)
        patch = {"status": {"conditions": [cond]}}
        await self.client.strategic_patch(PODS, self.pod_namespace, self.pod_name, patch, subresource="status")
        self._since = cond["lastTransitionTime"]

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._target is not None and self._target != self.reported:
                target = self._target
                try:
                    await self.report(target)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    REPORTS.labels("error").inc()
                    self.failures += 1
                    if self.failures == 1:
                        log.warning(
                            "cannot report %s %s/%s generation %d on pod %s/%s (retrying with backoff): %s",
                            self.kind,
                            self.namespace,
                            self.name,
                            target,
                            self.pod_namespace,
                            self.pod_name,
                            e,
                        )
                    delay = min(self.max_backoff, self.first_backoff * 2 ** min(self.failures - 1, 16))
                    await asyncio.sleep(random.uniform(delay / 2, delay))
                    continue
                REPORTS.labels("ok").inc()
                if self.failures:
                    log.info("reporting on pod %s/%s works again", self.pod_namespace, self.pod_name)
                self.failures = 0
                self.reported = target
