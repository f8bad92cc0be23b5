"""Prometheus metrics of the operator, served on `MPAAS_OPERATOR_METRICS_PORT` at /metrics (0: not served).

- `mpaas_operator_reconciles_total{kind, outcome}`: reconciles (create, update, resume, re-checks, and the
  re-applies after a child was deleted or changed), by outcome: `ok`; `stalled` (the resource needs a
  change from its owner: InvalidSpec, CredentialsMissing, Conflict, ProgressDeadlineExceeded); `gone`
  (deleted meanwhile); `retry` (a conflict, throttling or a server error); `error` (any other failure).
- `mpaas_operator_reconcile_duration_seconds{kind}`: how long a reconcile took, every outcome.
- `mpaas_operator_events_total{type, reason}`: Kubernetes Events posted (a folded repeat counts too).
- `mpaas_operator_package_checks_total{reason}`: DeliveryTask package checks that finished, by the reason of
  their PackageVerified condition (`Verified`, `PackageMissing`, ...).
"""

from __future__ import annotations

import contextvars
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

RECONCILES = Counter("mpaas_operator_reconciles_total", "Reconciles of a resource, by outcome", ["kind", "outcome"])
RECONCILE_SECONDS = Histogram(
    "mpaas_operator_reconcile_duration_seconds",
    "Time a reconcile took",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EVENTS = Counter("mpaas_operator_events_total", "Kubernetes Events posted, by type and reason", ["type", "reason"])
PACKAGE_CHECKS = Counter(
    "mpaas_operator_package_checks_total", "DeliveryTask package checks, by result (Verified or why not)", ["reason"]
)
DIFF_BUILDS = Counter(
    "mpaas_operator_diff_builds_total", "DeliveryTask diff package builds, by result (Built or Failed)", ["result"]
)
AUTO_PAUSES = Counter(
    "mpaas_operator_auto_pauses_total", "DeliveryTasks paused by their spec.autoPause (install failures)", ["namespace"]
)

# The outcome of the reconcile running in this task, when it is not `ok` but the reconcile still returns normally.
OUTCOME: contextvars.ContextVar[str] = contextvars.ContextVar("reconcile_outcome", default="ok")


def mark(outcome: str) -> None:
    OUTCOME.set(outcome)


async def _metrics(_: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(host: str, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner
