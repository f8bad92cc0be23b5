"""DeliveryTask counts in status and spec.autoPause, as pure functions of spec, status, counts and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mpaas.api.delivery import AutoPause, DeliveryTaskSpec
from mpaas.delivery.reports import StageCounts, TaskCounts
from mpaas_operator import conditions
from mpaas_operator.reconcile import counts as counting
from mpaas_operator.reconcile.delivery_task import desired, unchanged
from mpaas_operator.reconcile.stages import Progress

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(**over: Any) -> DeliveryTaskSpec:
    raw: dict[str, Any] = {
        "appId": "APP",
        "workspaceId": "prod",
        "platform": "Android",
        "resourceType": "Hotfix",
        "package": {"uri": "s3://packages/fix.zip", "version": "7", "sha256": "0" * 64, "sizeBytes": 10},
        "stages": [{"percent": 5, "durationSeconds": 600}, {"percent": 100}],
        "autoPause": {"maxFailurePercent": 20, "minInstalls": 10},
        **over,
    }
    return DeliveryTaskSpec.model_validate(raw)


def body(status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": "t", "namespace": "n", "uid": "u", "generation": generation, "resourceVersion": "7"},
        "status": status,
    }


def started(generation: int = 1) -> dict[str, Any]:
    """A task serving its first stage since T0, package verified."""
    verified = {"type": "PackageVerified", "status": "True", "reason": "Verified", "message": "fine"}
    return body(
        {
            "observedGeneration": generation,
            "currentStage": 0,
            "stageStartedAt": "2026-05-01T12:00:00Z",
            "currentPercent": 5,
            "conditions": conditions.merge([], [verified], generation),
        },
        generation,
    )


def written(before: dict[str, Any], d: Any) -> dict[str, Any]:
    """The resource after the status `d` was written (a merge patch: None removes)."""
    status = {
        **before["status"],
        **d.fields,
        "conditions": conditions.merge([], d.conds, before["metadata"]["generation"]),
    }
    status = {k: v for k, v in status.items() if v is not None}
    if isinstance(status.get("autoPause"), dict):
        status["autoPause"] = {k: v for k, v in status["autoPause"].items() if v is not None}
    return {**before, "status": status}


def counts(*stages: tuple[int, int, int, int]) -> TaskCounts:
    per = {i: StageCounts(*c) for i, c in enumerate(stages)}
    return TaskCounts(
        StageCounts(*(sum(getattr(s, f) for s in per.values()) for f in ("hits", "downloads", "installs", "failures"))),
        per,
    )


def cond(d: Any, type_: str = counting.AUTO_PAUSED) -> dict[str, Any]:
    return conditions.get(d.conds, type_) or {}


def test_the_failure_share_is_judged_past_the_floor_in_whole_numbers() -> None:
    rule = AutoPause(max_failure_percent=5, min_installs=100)
    assert not counting.too_many_failures(rule, 95, 5)  # 5 %: at the limit, not above it
    assert counting.too_many_failures(rule, 94, 6)
    assert not counting.too_many_failures(rule, 1, 1)  # 1 of 2 failed: under the floor
    assert not counting.too_many_failures(rule, 0, 99) and counting.too_many_failures(rule, 0, 100)
    strict = AutoPause(max_failure_percent=0, min_installs=1)
    assert counting.too_many_failures(strict, 1000, 1) and not counting.too_many_failures(strict, 1000, 0)
    # After a resume, only what came after the baseline counts; another stage has its own.
    state = counting.AutoState(stage=0, installs=40, failures=30)
    assert counting.since(state, 0, 50, 31) == (10, 1) and counting.since(state, 1, 5, 1) == (5, 1)
    assert (
        counting.share(9, 1) == "1 of 10 installs failed (10.0%)" and counting.share(0, 0) == "0 of 0 installs failed"
    )


def test_counts_go_to_status_per_stage_and_in_total() -> None:
    s = spec()
    d = desired(s, started(), None, at(10), counts((30, 12, 10, 1)))
    assert {k: d.fields[k] for k in ("hits", "downloads", "installs", "failures")} == {
        "hits": 30,
        "downloads": 12,
        "installs": 10,
        "failures": 1,
    }
    assert d.fields["stages"] == [
        {
            "index": 0,
            "percent": 5,
            "startedAt": "2026-05-01T12:00:00Z",
            "hits": 30,
            "downloads": 12,
            "installs": 10,
            "failures": 1,
        }
    ]
    c = cond(d)
    assert (c["status"], c["reason"]) == ("False", "WithinLimit")
    assert "1 of 11 installs failed (9.1%); pauses above 20% once 10 installs are reported" in c["message"]
    assert (conditions.get(d.conds, "Ready") or {})["reason"] == "Serving"
    after = written(started(), d)
    assert unchanged(after, desired(s, after, None, at(11), counts((30, 12, 10, 1))))
    assert not unchanged(after, desired(s, after, None, at(11), counts((31, 12, 10, 1))))
    # Without counts (a reconcile of a new spec), what status holds stays.
    assert unchanged(after, desired(s, after, None, at(11)))

    # The next stage: the first keeps its start and counts, the new one gets its own.
    moved = desired(s, after, None, at(601), counts((40, 15, 12, 1)))
    assert moved.fields["currentStage"] == 1
    first, second = moved.fields["stages"]
    assert first["startedAt"] == "2026-05-01T12:00:00Z" and first["installs"] == 12
    assert second == {"index": 1, "percent": 100, "startedAt": "2026-05-01T12:10:01Z"}
    assert counting.stage_indexes(written(after, moved)["status"]) == [0, 1]


def test_a_stage_whose_installs_fail_pauses_itself_until_the_spec_changes() -> None:
    s = spec()
    d = desired(s, started(), None, at(100), counts((50, 11, 8, 3)))  # 3 of 11: 27 % > 20 %
    assert d.auto_paused
    c, ready = cond(d), conditions.get(d.conds, "Ready") or {}
    assert (c["status"], c["reason"]) == ("True", "FailureRate")
    assert "stage 1 of 2 (5% of the targeted devices): 3 of 11 installs failed (27.3%)" in c["message"]
    assert "above autoPause.maxFailurePercent 20%" in c["message"] and "change the spec to resume" in c["message"]
    assert (ready["status"], ready["reason"]) == ("True", "AutoPaused") and c["message"] in ready["message"]
    assert d.fields["pausedAt"] == "2026-05-01T12:01:40Z" and d.fields["currentPercent"] == 5  # held, still served
    assert d.fields["autoPause"] == {
        "pausedAt": "2026-05-01T12:01:40Z",
        "pausedGeneration": 1,
        "stage": None,
        "installs": None,
        "failures": None,
    }
    assert d.stage_end is None

    # Held: past the stage's end it stays, the message says what paused it (the counts of then), nothing new.
    paused = written(started(), d)
    later = desired(s, paused, None, at(5000), counts((90, 30, 20, 9)))
    assert later.fields["currentStage"] == 0 and cond(later)["message"] == c["message"] and not later.auto_paused
    paused = written(paused, later)
    assert unchanged(paused, desired(s, paused, None, at(5001), counts((90, 30, 20, 9))))

    # The owner changes the spec (here: a looser limit): resumed, judged on what comes after.
    looser = spec(autoPause={"maxFailurePercent": 30, "minInstalls": 10})
    bumped = {**paused, "metadata": {**paused["metadata"], "generation": 2}}
    resumed = desired(looser, bumped, None, at(5100), counts((90, 30, 20, 9)))
    ready = conditions.get(resumed.conds, "Ready") or {}
    assert ready["reason"] == "Serving" and resumed.fields["pausedSeconds"] == 5000 and not resumed.auto_paused
    assert resumed.fields["autoPause"] == {
        "pausedAt": None,
        "pausedGeneration": None,
        "stage": 0,
        "installs": 20,
        "failures": 9,
    }
    assert (cond(resumed)["reason"], "0 of 0 installs failed since it was resumed" in cond(resumed)["message"]) == (
        "WithinLimit",
        True,
    )
    resumed_status = written(bumped, resumed)
    # 5 of 12 after the resume: 42 % > 30 %: paused again; 2 of 12 would not.
    assert not desired(looser, resumed_status, None, at(5200), counts((99, 40, 30, 11))).auto_paused
    again = desired(looser, resumed_status, None, at(5200), counts((99, 40, 27, 14)))
    assert again.auto_paused and "5 of 12 installs failed (41.7%) since it was resumed" in cond(again)["message"]

    # Resumed by a reconcile, which reads no counts: the baseline is what status holds.
    by_reconcile = desired(looser, bumped, None, at(5100))
    assert cond(by_reconcile)["reason"] == "Resumed" and by_reconcile.fields["autoPause"]["installs"] == 20


def test_without_counts_or_while_held_nothing_pauses() -> None:
    s = spec()
    d = desired(s, started(), None, at(10), None, "the operator has no Redis")
    assert (cond(d)["status"], cond(d)["reason"], cond(d)["message"]) == (
        "Unknown",
        "NoCounts",
        "the operator has no Redis",
    )
    assert "hits" not in d.fields and "autoPause" in d.fields
    held = desired(spec(paused=True), started(), None, at(10), counts((5, 5, 0, 20)))
    assert not held.auto_paused and cond(held)["reason"] == "Held"
    assert (conditions.get(held.conds, "Ready") or {})["reason"] == "Paused"
    plain = spec(autoPause=None)
    d = desired(plain, started(), None, at(10), counts((5, 5, 0, 20)))
    assert not d.auto_paused and not cond(d) and "autoPause" not in d.fields
    # autoPause taken out of the spec: its status goes too.
    with_state = started()
    with_state["status"]["autoPause"] = {"stage": 0, "installs": 1, "failures": 0}
    assert desired(plain, with_state, None, at(10)).fields["autoPause"] is None
    assert counting.AutoState.from_status({"autoPause": {"pausedAt": "x", "installs": -1}}) == counting.AutoState()


def test_entries_from_an_older_status_are_filled_in() -> None:
    s = spec()
    p = Progress(1, at(700))
    entries = counting.stage_entries(s, None, p, counts((1, 1, 1, 0), (2, 0, 0, 0)))
    assert entries == [
        {"index": 0, "percent": 5, "hits": 1, "downloads": 1, "installs": 1, "failures": 0},
        {
            "index": 1,
            "percent": 100,
            "startedAt": "2026-05-01T12:11:40Z",
            "hits": 2,
            "downloads": 0,
            "installs": 0,
            "failures": 0,
        },
    ]
    assert counting.stage_entries(s, [{"index": "x"}], Progress(), None) == []


async def test_an_auto_pause_is_written_once_with_a_warning_and_counted() -> None:
    from prometheus_client import REGISTRY

    from mpaas_operator.reconcile.delivery_task import sync

    class Kube:
        def __init__(self) -> None:
            self.patches: list[dict[str, Any]] = []
            self.events: list[dict[str, Any]] = []

        async def merge_patch(self, rt: Any, namespace: str, name: str, patch: dict[str, Any], **_: Any) -> Any:
            self.patches.append(patch)
            return {}

        async def create(self, rt: Any, obj: dict[str, Any], **_: Any) -> Any:
            self.events.append(obj)
            return obj

    def paused_total() -> float:
        return REGISTRY.get_sample_value("mpaas_operator_auto_pauses_total", {"namespace": "n"}) or 0.0

    kube, before = Kube(), paused_total()
    await sync(kube, started(), spec=spec(), counts=counts((50, 11, 8, 3)), now=lambda: at(100))  # type: ignore[arg-type]
    (patch,) = kube.patches
    assert patch["status"]["autoPause"]["pausedAt"] == "2026-05-01T12:01:40Z"
    assert [(e["type"], e["reason"]) for e in kube.events] == [("Warning", "AutoPaused")]
    assert "3 of 11 installs failed" in kube.events[0]["message"] and paused_total() == before + 1
