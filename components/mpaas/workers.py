"""Several worker processes behind one port (`MPAAS_WORKERS`), for a pod with more than one core.

One Python process uses one core. The supervisor starts `workers` copies of
the component; each binds the port with SO_REUSEPORT and the kernel spreads
connections over them. Prometheus metrics are shared through
`PROMETHEUS_MULTIPROC_DIR` (any worker's `/metrics` reports all of them); the
admin port is served by worker 0 only. A worker that dies is restarted; on
SIGTERM every worker drains and the supervisor exits when they have.

Whatever must be shared between workers lives in Redis (nonces, rate-limit
buckets), so more than one worker needs `MPAAS_REDIS_URL`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

log = logging.getLogger("mpaas.workers")

RESTART_BACKOFF_SECONDS = 1.0


def supervise(component: str, workers: int, *, drain_seconds: float) -> int:
    """Run `workers` processes of `component` until SIGTERM/SIGINT; returns the exit code."""
    env = dict(os.environ)
    owned_dir = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        owned_dir = tempfile.mkdtemp(prefix="mpaas-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = owned_dir
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(index: int) -> None:
        child_env = {**env, "MPAAS_WORKERS": "1", "MPAAS_WORKER_INDEX": str(index), "MPAAS_REUSE_PORT": "true"}
        if index != 0:
            child_env["MPAAS_ADMIN_PORT"] = "0"  # one admin endpoint per pod
        children[index] = subprocess.Popen([sys.executable, "-m", "mpaas.cli", component], env=child_env)
        log.info("worker %d started (pid %d)", index, children[index].pid)

    def stop(sig: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        start(i)
    deadline = None
    try:
        while True:
            time.sleep(0.2)
            if stopping:
                deadline = deadline or time.monotonic() + drain_seconds + 5
                if all(c.poll() is not None for c in children.values()):
                    return 0
                if time.monotonic() > deadline:
                    for c in children.values():
                        if c.poll() is None:
                            c.kill()
                    return 1
                continue
            for index, child in list(children.items()):
                code = child.poll()
                if code is not None:
                    log.error("worker %d (pid %d) exited with %s; restarting", index, child.pid, code)
                    _mark_dead(child.pid)
                    time.sleep(RESTART_BACKOFF_SECONDS)
                    if not stopping:
                        start(index)
    finally:
        for c in children.values():
            if c.poll() is None:
                c.kill()
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)


def _mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid)
    except OSError:
        pass
