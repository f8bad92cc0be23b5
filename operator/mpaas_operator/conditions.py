"""Status conditions with Kubernetes semantics: the transition time moves only when status flips."""

from __future__ import annotations

from typing import Any

from mpaas.api.base import now


def condition(type_: str, status: bool | None, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": reason,
        "message": message,
    }


def merge(previous: list[dict[str, Any]] | None, new: list[dict[str, Any]], generation: int) -> list[dict[str, Any]]:
    """New conditions, keeping `lastTransitionTime` of those whose status did not change."""
    old = {c.get("type"): c for c in previous or []}
    stamp = now().isoformat().replace("+00:00", "Z")
    out = []
    for c in new:
        prior = old.get(c["type"])
        same = prior is not None and prior.get("status") == c["status"] and prior.get("lastTransitionTime")
        out.append(
            {
                **c,
                "observedGeneration": generation,
                "lastTransitionTime": prior["lastTransitionTime"] if same and prior else stamp,
            }
        )
    return out


def get(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
