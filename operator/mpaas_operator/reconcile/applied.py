"""Which spec generation the pods of a resource have applied, from the conditions they write on themselves.

Component pods compile their resource live and tell each generation they swap
in with a `mpaas.io/ConfigApplied` condition on their own Pod (`mpaas.applied`).
Only ready pods that are not terminating count: they are the ones serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpaas.applied import CONDITION_TYPE, applied_generation

from .. import conditions


@dataclass(frozen=True)
class Applied:
    generation: int  # the resource's metadata.generation the status describes
    ready: int  # ready pods, not terminating
    on_current: int  # ready pods that have applied `generation` (or a newer one)
    behind: int  # ready pods that report an older generation
    unreported: int  # ready pods that have not reported any generation of this resource
    oldest: int | None  # what every ready pod has applied (the oldest); None: one has not reported, or none is ready
    oldest_reported: int | None  # the oldest generation any ready pod reports

    def fields(self) -> dict[str, Any]:
        """The status fields; None removes a field (the status is written with a merge patch)."""
        return {"appliedGeneration": self.oldest, "podsOnCurrentGeneration": self.on_current}

    def lag(self) -> str:
        """What a pod still running an older spec looks like in a message; empty when none does."""
        if not self.behind:
            return ""
        pods = "pod still runs" if self.behind == 1 else "pods still run"
        return (
            f"{self.behind}/{self.ready} ready {pods} an older spec "
            f"(generation {self.oldest_reported}, current {self.generation})"
        )


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    ready = conditions.get((pod.get("status") or {}).get("conditions"), "Ready")
    return ready is not None and ready.get("status") == "True"


def pod_signature(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What the status reads from a pod: whether it serves, and its applied-generation conditions."""
    conds = (pod.get("status") or {}).get("conditions") or []
    reported = sorted(
        (str(c.get("type")), str(c.get("status")), str(c.get("message")))
        for c in conds
        if str(c.get("type", "")).startswith(CONDITION_TYPE)
    )
    return (_ready(pod), *reported)


def summarize(pods: list[dict[str, Any]], kind: str, namespace: str, name: str, generation: int) -> Applied:
    ready = [p for p in pods if _ready(p)]
    reported = [g for g in (applied_generation(p, kind, namespace, name) for p in ready) if g is not None]
    oldest_reported = min(reported) if reported else None
    return Applied(
        generation=generation,
        ready=len(ready),
        on_current=sum(1 for g in reported if g >= generation),
        behind=sum(1 for g in reported if g < generation),
        unreported=len(ready) - len(reported),
        oldest=oldest_reported if ready and len(reported) == len(ready) else None,
        oldest_reported=oldest_reported,
    )


def with_lag(
    applied: Applied, ready: dict[str, Any], reconciling: bool, progress: str
) -> tuple[dict[str, Any], bool, str, str]:
    """Ready, whether reconciling, the progress line and the Reconciling reason, once pods that still run an older
    spec are taken into account: Ready keeps its status and reason (the pods serve, the previous spec) and its
    message says who lags; Reconciling turns True with reason ConfigPending until they have applied it."""
    lag = applied.lag()
    if not lag:
        return ready, reconciling, progress, "RolloutInProgress"
    ready = {**ready, "message": f"{ready['message']}; {lag}" if ready["message"] else lag}
    if reconciling:
        return ready, True, f"{progress}; {lag}" if progress else lag, "RolloutInProgress"
    return ready, True, lag, "ConfigPending"
