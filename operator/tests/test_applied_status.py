"""The applied generation: what pods report on themselves, aggregated into their resource's status."""

from typing import Any

import pytest

from mpaas.applied import applied_generation, condition_type, message, pod_workers
from mpaas_operator import conditions
from mpaas_operator.reconcile.applied import pod_signature, summarize, with_lag
from mpaas_operator.reconcile.common import kstatus

pytestmark = pytest.mark.unit

KIND, NS, NAME = "MpaasGateway", "shop", "storefront"


def pod(
    *reported: int | None, ready: bool = True, terminating: bool = False, workers: int | None = None
) -> dict[str, Any]:
    """A pod whose worker i reported generation reported[i] (None: not yet)."""
    conds: list[dict[str, Any]] = [{"type": "Ready", "status": "True" if ready else "False"}]
    conds += [
        {"type": condition_type(i), "status": "True", "reason": "Applied", "message": message(KIND, NS, NAME, g)}
        for i, g in enumerate(reported)
        if g is not None
    ]
    env = [{"name": "MPAAS_WORKERS", "value": str(workers)}] if workers else []
    meta: dict[str, Any] = {"name": "p", "uid": "u"}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"env": env}]}, "status": {"conditions": conds}}


def test_a_pod_reports_what_every_worker_applied() -> None:
    assert applied_generation(pod(7), KIND, NS, NAME) == 7
    assert applied_generation(pod(None), KIND, NS, NAME) is None
    # Two workers: the oldest of theirs; nothing while one has not reported.
    assert pod_workers(pod(7, 6, workers=2)) == 2
    assert applied_generation(pod(7, 6, workers=2), KIND, NS, NAME) == 6
    assert applied_generation(pod(7, workers=2), KIND, NS, NAME) is None
    # Another resource's report, a False condition or an unreadable message count as no report.
    assert applied_generation(pod(7), KIND, NS, "other") is None
    assert applied_generation(pod(7), "PushChannel", NS, NAME) is None
    other = pod(7)
    other["status"]["conditions"][1]["message"] = "generation seven"
    assert applied_generation(other, KIND, NS, NAME) is None
    other["status"]["conditions"][1] = {**pod(7)["status"]["conditions"][1], "status": "False"}
    assert applied_generation(other, KIND, NS, NAME) is None


@pytest.mark.parametrize(
    ("pods", "applied", "on_current", "behind"),
    [
        ([pod(3), pod(3)], 3, 2, 0),  # every ready pod on the current spec
        ([pod(3), pod(2)], 2, 1, 1),  # one lags: the oldest is what every pod has applied
        ([pod(3), pod(None)], None, 1, 0),  # one has not reported: unknown
        ([], None, 0, 0),  # no pod
        ([pod(3), pod(1, ready=False)], 3, 1, 0),  # a pod that is not ready does not serve: not counted
        ([pod(3), pod(1, terminating=True)], 3, 1, 0),  # nor one that is going away
        ([pod(None), pod(None)], None, 0, 0),  # pods that never report (an older image): nothing claimed
        ([pod(4)], 4, 1, 0),  # a pod already on a newer generation than the status describes
    ],
)
def test_summarize(pods: list[dict[str, Any]], applied: int | None, on_current: int, behind: int) -> None:
    s = summarize(pods, KIND, NS, NAME, generation=3)
    assert s.fields() == {"appliedGeneration": applied, "podsOnCurrentGeneration": on_current}
    assert s.behind == behind
    assert bool(s.lag()) == bool(behind)


def test_lagging_pods_keep_ready_and_set_reconciling() -> None:
    available = conditions.condition("Ready", True, "Available", "2/2 replicas ready")
    s = summarize([pod(3), pod(2)], KIND, NS, NAME, generation=3)
    ready, reconciling, progress, reason = with_lag(s, available, False, "")
    assert ready["status"] == "True" and ready["reason"] == "Available"  # the pods serve: no Ready flip, no Event
    assert ready["message"] == "2/2 replicas ready; 1/2 ready pod still runs an older spec (generation 2, current 3)"
    conds = {c["type"]: c for c in kstatus(ready, reconciling=reconciling, progress=progress, reason=reason)}
    assert conds["Reconciling"]["status"] == "True" and conds["Reconciling"]["reason"] == "ConfigPending"
    assert "generation 2" in conds["Reconciling"]["message"]
    assert conds["Stalled"]["status"] == "False"

    # Caught up: nothing added.
    caught_up = summarize([pod(3), pod(3)], KIND, NS, NAME, generation=3)
    assert with_lag(caught_up, available, False, "") == (available, False, "", "RolloutInProgress")
    # During a rollout the rollout stays the reason, and the lag is added to its progress line.
    progressing = conditions.condition("Ready", False, "Progressing", "1/2 replicas ready")
    _, reconciling, progress, reason = with_lag(s, progressing, True, "1/2 replicas ready")
    assert reconciling and reason == "RolloutInProgress" and progress.startswith("1/2 replicas ready; 1/2 ready")


def test_pod_signature_moves_with_readiness_and_reports_only() -> None:
    a, b = pod(3), pod(3)
    b["status"]["podIP"] = "10.0.0.9"
    b["metadata"]["resourceVersion"] = "99"
    assert pod_signature(a) == pod_signature(b)  # nothing the status reads changed: no refresh
    assert pod_signature(a) != pod_signature(pod(4))
    assert pod_signature(a) != pod_signature(pod(3, ready=False))
