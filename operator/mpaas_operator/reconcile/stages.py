"""The stages of a DeliveryTask: pure functions of its spec, its status and the time.

Every bit of state is in status, so a restarted operator, or the replica that takes over, goes on where
the last one stopped:

- `currentStage`, `stageStartedAt`: the stage served, and when it began;
- `pausedAt`: while `spec.paused`, `spec.rollback` or an auto-pause holds the stage, since when;
- `pausedSeconds`: how long the current stage was held before; its end moves by that much.

The first stage starts when the package is verified. A stage ends at stageStartedAt + durationSeconds +
pausedSeconds; the next one starts when the operator advances it, at the operator's own time, one stage
per step. So an operator that was down for longer than a stage (or several) advances by one, and that
stage gets its whole duration: none is repeated, none skipped. The last stage never ends.

A hold stops the clock: on resume the stage has the time it had left when it was held.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mpaas.api.delivery import DeliveryTaskSpec


@dataclass(frozen=True)
class Progress:
    stage: int | None = None  # None: the release has not started
    started_at: datetime | None = None
    paused_at: datetime | None = None
    paused_seconds: int = 0

    @property
    def started(self) -> bool:
        return self.stage is not None and self.started_at is not None

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> Progress:
        status = status or {}
        stage = status.get("currentStage")
        if not isinstance(stage, int) or isinstance(stage, bool) or stage < 0:
            return cls()
        started = parse_time(status.get("stageStartedAt"))
        if started is None:
            return cls()  # written by a version that did not run the clock: the release starts anew
        paused_seconds = status.get("pausedSeconds")
        return cls(
            stage=stage,
            started_at=started,
            paused_at=parse_time(status.get("pausedAt")),
            paused_seconds=paused_seconds if isinstance(paused_seconds, int) and paused_seconds > 0 else 0,
        )

    def fields(self) -> dict[str, Any]:
        """The status fields; None removes one in a merge patch."""
        return {
            "currentStage": self.stage,
            "stageStartedAt": format_time(self.started_at),
            "pausedAt": format_time(self.paused_at),
            "pausedSeconds": self.paused_seconds or None,
        }


def held(spec: DeliveryTaskSpec) -> bool:
    return spec.paused or spec.rollback


def last_stage(spec: DeliveryTaskSpec) -> int:
    """Index of the last stage; a task without stages has one, at targeting.percent."""
    return max(len(spec.stages) - 1, 0)


def step(spec: DeliveryTaskSpec, progress: Progress, *, verified: bool, now: datetime, hold: bool = False) -> Progress:
    """The progress after one step at `now`: start, hold, resume, or advance by at most one stage. `hold`: held
    although the spec does not say so (an auto-pause)."""
    if not progress.started:
        if not verified:
            return Progress()
        return Progress(0, now, now if held(spec) or hold else None, 0)
    p = replace(progress, stage=min(progress.stage or 0, last_stage(spec)))  # stages may have been removed
    if not verified:
        return p
    if held(spec) or hold:
        return p if p.paused_at is not None else replace(p, paused_at=now)
    if p.paused_at is not None:
        held_for = max(0, int((now - p.paused_at).total_seconds()))
        p = replace(p, paused_at=None, paused_seconds=p.paused_seconds + held_for)
    end = ends_at(spec, p)
    if end is not None and now >= end:
        return Progress((p.stage or 0) + 1, now, None, 0)
    return p


def ends_at(spec: DeliveryTaskSpec, p: Progress) -> datetime | None:
    """When the current stage ends: None before the start, while held, and at the last stage."""
    if not p.started or p.paused_at is not None or p.started_at is None:
        return None
    stage = p.stage or 0
    if stage >= last_stage(spec):
        return None
    duration = spec.stages[stage].duration_seconds
    if duration is None:  # the model requires it on every stage but the last
        return None
    return p.started_at + timedelta(seconds=duration + p.paused_seconds)


def remaining_seconds(spec: DeliveryTaskSpec, p: Progress, now: datetime) -> int | None:
    """Seconds left in the current stage, frozen while held; None at the last stage or before the start."""
    if not p.started or p.started_at is None or (p.stage or 0) >= last_stage(spec):
        return None
    duration = spec.stages[p.stage or 0].duration_seconds
    if duration is None:
        return None
    at = p.paused_at or now
    return max(0, int(duration + p.paused_seconds - (at - p.started_at).total_seconds()))


def stage_percent(spec: DeliveryTaskSpec, stage: int) -> int:
    """The percent a stage serves when it is served (rollback aside)."""
    if not spec.stages:
        return spec.targeting.percent
    return spec.stages[min(stage, last_stage(spec))].percent


def percent(spec: DeliveryTaskSpec, p: Progress) -> int:
    """The percent served: 0 before the start and after a rollback."""
    if spec.rollback or not p.started:
        return 0
    if not spec.stages:
        return spec.targeting.percent
    return spec.stages[min(p.stage or 0, last_stage(spec))].percent


def describe(spec: DeliveryTaskSpec, p: Progress) -> str:
    """`stage 2 of 3 (20% of the targeted devices)`, for conditions and Events."""
    if not spec.stages:
        return f"{spec.targeting.percent}% of the targeted devices (targeting.percent)"
    n = len(spec.stages)
    stage = min(p.stage or 0, n - 1)
    return f"stage {stage + 1} of {n} ({spec.stages[stage].percent}% of the targeted devices)"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, whole seconds."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
