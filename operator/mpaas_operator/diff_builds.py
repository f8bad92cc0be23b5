"""Diff packages of a DeliveryTask (spec.diffs): which earlier packages to build them from, and the build, in a
process of its own (`python -m mpaas.delivery.diffs`).

A diff of two 50 MB packages takes seconds of CPU and a few hundred MiB; in the operator's own process it
would hold up every handler and could take the operator down with it. A child process is killed when the
operator stops or becomes a standby, and its death costs one build. Builds run one at a time; a failed one
is tried again after 1 minute, doubling up to 1 hour. The diff's object key is made of the two packages'
sha256, so a build the operator repeats (after a restart) finds the diff already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from mpaas.api.delivery import DeliveryTaskSpec, Package
from mpaas.delivery import diffs
from mpaas.delivery.diffs import format_for
from mpaas.rules import version_key

from . import conditions

log = logging.getLogger(__name__)

CONDITION = "DiffPackages"
PACKAGE_VERIFIED = "PackageVerified"
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
MAX_MESSAGE = 512


@dataclass(frozen=True)
class Source:
    """An earlier release's package a diff is built from."""

    task: str  # namespace/name
    package: Package


def package_verified(body: dict[str, Any]) -> bool:
    """The task's status says its package is verified (condition PackageVerified True)."""
    c = conditions.get((body.get("status") or {}).get("conditions"), PACKAGE_VERIFIED)
    return c is not None and c.get("status") == "True"


Shelf = tuple[str, str, str, str, str]  # appId, workspaceId, platform, resourceType, offlineAppId


def shelf_of(spec: DeliveryTaskSpec) -> Shelf:
    return (spec.app_id, spec.workspace_id, str(spec.platform), str(spec.resource_type), spec.offline_app_id or "")


@dataclass(frozen=True)
class Candidate:
    """A task whose package a diff may be built from: verified, not rolled back."""

    uid: str
    task: str  # namespace/name
    created: str
    version: tuple[int, ...]
    package: Package


def candidates(parsed: list[tuple[dict[str, Any], DeliveryTaskSpec]]) -> dict[Shelf, list[Candidate]]:
    """The pass's tasks (each parsed once) that diffs may be built from, by shelf."""
    out: dict[Shelf, list[Candidate]] = {}
    for body, spec in parsed:
        meta = body.get("metadata") or {}
        if spec.package is None or spec.rollback or meta.get("deletionTimestamp") or not package_verified(body):
            continue
        version = version_key(spec.package.version)
        if version is None:
            continue
        task = f"{meta.get('namespace')}/{meta.get('name')}"
        c = Candidate(str(meta.get("uid") or ""), task, str(meta.get("creationTimestamp") or ""), version, spec.package)
        out.setdefault(shelf_of(spec), []).append(c)
    return out


def sources(body: dict[str, Any], spec: DeliveryTaskSpec, shelves: dict[Shelf, list[Candidate]]) -> list[Source]:
    """The earlier packages `spec.diffs` asks diffs from, newest first: DeliveryTasks of the same app,
    workspace, platform, type (and offline app), verified, of a lower version, not rolled back; one per
    sha256."""
    if spec.diffs is None or spec.package is None:
        return []
    mine = version_key(spec.package.version)
    uid = str((body.get("metadata") or {}).get("uid") or "")
    found = [
        c
        for c in shelves.get(shelf_of(spec), [])
        if c.uid != uid and mine is not None and c.version < mine and c.package.sha256 != spec.package.sha256
    ]
    found.sort(key=lambda c: (c.version, c.created), reverse=True)
    chosen: list[Source] = []
    for c in found:
        if all(s.package.sha256 != c.package.sha256 for s in chosen):
            chosen.append(Source(c.task, c.package))
        if len(chosen) == spec.diffs.from_releases:
            break
    return chosen


@dataclass(frozen=True)
class View:
    """What the releases loop knows of a task's diffs this pass, for `delivery_task.sync` to write."""

    wanted: list[Source]
    built: dict[str, dict[str, Any]]  # from sha256 -> status entry, built by this replica
    failed: dict[str, str]  # from sha256 -> why its last build failed
    building: str | None = None  # from sha256 of the build running


def status_entries(view: View, before: list[Any]) -> list[dict[str, Any]]:
    """status.diffPackages: an entry per wanted source, built now or listed before."""
    listed = {e.get("fromSha256"): e for e in before if isinstance(e, dict)}
    out = []
    for s in view.wanted:
        entry = view.built.get(s.package.sha256) or listed.get(s.package.sha256)
        if entry is not None:
            out.append(entry)
    return out


def condition(view: View, entries: list[dict[str, Any]], verified: bool) -> dict[str, Any]:
    if not verified:
        return conditions.condition(CONDITION, None, "PackageNotVerified", "built once the package is verified")
    if not view.wanted:
        return conditions.condition(
            CONDITION, True, "NoEarlierRelease", "no earlier verified release of this app, platform and type"
        )
    have = {e["fromSha256"] for e in entries}
    missing = [s for s in view.wanted if s.package.sha256 not in have]
    done = f"{len(have)} of {len(view.wanted)} built"
    failed = [
        f"from {s.package.version} ({s.task}): {view.failed[s.package.sha256]}"
        for s in missing
        if s.package.sha256 in view.failed
    ]
    if failed:
        return conditions.condition(CONDITION, False, "BuildFailed", f"{done}; {'; '.join(failed)}"[:MAX_MESSAGE])
    if missing:
        return conditions.condition(
            CONDITION, None, "Building", f"{done}; building from {', '.join(s.package.version for s in missing)}"
        )
    return conditions.condition(
        CONDITION, True, "Built", f"{done}: from {', '.join(s.package.version for s in view.wanted)}"
    )


class Failed(Exception):
    """The build did not give a diff; says why."""


@dataclass(frozen=True)
class Limits:
    """What one build may take (operator settings MPAAS_DIFF_*)."""

    max_bytes: int = 100 << 20  # of each package (of an Expo dist's bundle, unpacked)
    max_memory: int = 768 << 20  # the builder process's allocations (RLIMIT_DATA)
    seconds: float = 1800.0


async def build(source: Source, target: Package, resource_type: str, platform: str, limits: Limits) -> dict[str, Any]:
    """Builds the diff in a child process and returns its status entry; Failed says why it could not."""
    fmt = format_for(resource_type)
    problem = diffs.too_big(fmt, source.package.size_bytes, target.size_bytes, limits.max_memory)
    if fmt == diffs.HDIFFPATCH and problem:  # known from the sizes: no process started for it
        raise Failed(problem)
    args = [
        sys.executable,
        "-m",
        "mpaas.delivery.diffs",
        "--source",
        source.package.model_dump_json(by_alias=True),
        "--target",
        target.model_dump_json(by_alias=True),
        "--format",
        fmt,
        "--max-bytes",
        str(limits.max_bytes),
        "--max-memory",
        str(limits.max_memory),
        "--platform",
        platform,
        "--resource-type",
        resource_type,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=os.environ.copy()
    )
    try:
        async with asyncio.timeout(limits.seconds):
            out, err = await proc.communicate()
    except TimeoutError:
        raise Failed(f"not built within {limits.seconds:.0f} s (MPAAS_DIFF_TIMEOUT_SECONDS)") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()
        if proc.returncode is not None and proc.returncode < 0:
            raise Failed(f"the builder was killed by signal {-proc.returncode} (out of memory?)")
        raise Failed((why[-1] if why else f"the builder exited with {proc.returncode}")[:MAX_MESSAGE])
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
        keys = ("format", "uri", "sha256", "sizeBytes")
        if not isinstance(result, dict) or any(k not in result for k in keys):
            raise ValueError(result)
    except (ValueError, IndexError):
        raise Failed("the builder printed no result") from None
    return {
        "fromVersion": source.package.version,
        "fromSha256": source.package.sha256,
        "fromTask": source.task,
        "format": result["format"],
        "uri": result["uri"],
        "sha256": result["sha256"],
        "sizeBytes": result["sizeBytes"],
    }


def retry_delay(failures: int) -> float:
    return min(RETRY_FIRST_SECONDS * 2 ** max(failures - 1, 0), RETRY_MAX_SECONDS)
