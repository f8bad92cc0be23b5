"""A DeliveryTask's counts in status, and `spec.autoPause`: pure functions of the spec, the status, the counts the
delivery component keeps in its Redis (mpaas.delivery.reports), and the time.

The failure share of a stage is failures / (installs + failures), in whole devices. It is judged once the stage
has `minInstalls` install reports (installs plus failures), and pauses the release when it is above
`maxFailurePercent`: `failures * 100 > maxFailurePercent * reports`, in integers, so nothing rounds.

An auto-pause is a status-only hold (the operator never writes spec): `status.autoPause.pausedAt` and the
generation it paused at. A spec change (a higher metadata.generation) resumes it; from then on the stage is
judged on the reports that came after (the counts at the resume are the baseline), so a release resumed on
purpose is not paused again at once by the failures that paused it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mpaas.api.delivery import AutoPause, DeliveryTaskSpec
from mpaas.delivery.reports import COUNTS, TaskCounts

from . import stages

AUTO_PAUSED = "AutoPaused"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class AutoState:
    paused_at: datetime | None = None
    paused_generation: int | None = None
    stage: int | None = None  # the stage the baseline below belongs to
    installs: int = 0
    failures: int = 0

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> AutoState:
        raw = status.get("autoPause")
        if not isinstance(raw, dict):
            return cls()
        return cls(
            paused_at=stages.parse_time(raw.get("pausedAt")),
            paused_generation=_int(raw.get("pausedGeneration")),
            stage=_int(raw.get("stage")),
            installs=_int(raw.get("installs")) or 0,
            failures=_int(raw.get("failures")) or 0,
        )

    def fields(self) -> dict[str, Any]:
        """status.autoPause; None removes a key in a merge patch."""
        return {
            "pausedAt": stages.format_time(self.paused_at),
            "pausedGeneration": self.paused_generation,
            "stage": self.stage,
            "installs": self.installs if self.stage is not None else None,
            "failures": self.failures if self.stage is not None else None,
        }


def since(state: AutoState, stage: int, installs: int, failures: int) -> tuple[int, int]:
    """The stage's installs and failures after the baseline (the counts when it was last resumed)."""
    if state.stage != stage:
        return installs, failures
    return max(installs - state.installs, 0), max(failures - state.failures, 0)


def too_many_failures(rule: AutoPause, installs: int, failures: int) -> bool:
    reports = installs + failures
    return reports >= rule.min_installs and failures * 100 > rule.max_failure_percent * reports


def share(installs: int, failures: int) -> str:
    reports = installs + failures
    return f"{failures} of {reports} installs failed" + (f" ({100 * failures / reports:.1f}%)" if reports else "")


def stage_entries(
    spec: DeliveryTaskSpec, previous: Any, progress: stages.Progress, counts: TaskCounts | None
) -> list[dict[str, Any]]:
    """status.stages: every stage served so far (its percent and start kept from when it was current), with the
    counts read now (or, without them, those status had)."""
    if not progress.started:
        return []
    by_index: dict[int, dict[str, Any]] = {}
    for e in previous if isinstance(previous, list) else ():
        index = _int(e.get("index")) if isinstance(e, dict) else None
        if index is not None:
            by_index[index] = {k: v for k, v in e.items() if v is not None}
    current = progress.stage or 0
    for i in range(current + 1):
        by_index.setdefault(i, {"index": i, "percent": stages.stage_percent(spec, i)})
    by_index[current] |= {
        "percent": stages.stage_percent(spec, current),
        "startedAt": stages.format_time(progress.started_at),
    }
    if counts is not None:
        for i, entry in by_index.items():
            got = counts.stages.get(i)
            if got is not None:
                entry |= got.fields()
    return [by_index[i] for i in sorted(by_index)]


def stage_indexes(status: dict[str, Any]) -> list[int]:
    """The stages whose counts to read: those served so far, as status says."""
    out = {i for i in range((_int(status.get("currentStage")) or 0) + 1)} if "currentStage" in status else set()
    for e in status.get("stages") or ():
        index = _int(e.get("index")) if isinstance(e, dict) else None
        if index is not None:
            out.add(index)
    return sorted(out)


def totals(counts: TaskCounts) -> dict[str, int]:
    return {c: getattr(counts.total, c) for c in COUNTS}
