"""Several worker processes behind one port (`MPAAS_WORKERS`), for a pod with more than one core.

One Python process uses one core. The supervisor starts `workers` copies of
the component; each binds the port with SO_REUSEPORT and the kernel spreads
connections over them. Prometheus metrics are shared through
`PROMETHEUS_MULTIPROC_DIR` (any worker's `/metrics` reports all of them); the
admin port is served by worker 0 only. A worker that dies is restarted, but
one that keeps dying ends the pod: after `CRASH_LIMIT` exits within
`CRASH_WINDOW_SECONDS` the supervisor stops the others and exits with an
error, so the kubelet sees the crash loop (restarts, CrashLoopBackOff) instead
of a pod that looks healthy while it serves on fewer workers. On SIGTERM every
worker drains and the supervisor exits when they have.

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
from collections import deque
from typing import Any

log = logging.getLogger("mpaas.workers")

RESTART_BACKOFF_SECONDS = 1.0
CRASH_LIMIT = 3
CRASH_WINDOW_SECONDS = 60.0


def supervise(component: str, workers: int, *, drain_seconds: float, argv: list[str] | None = None) -> int:
    """Run `workers` processes of `component` until SIGTERM/SIGINT or a crash loop; returns the exit code.

    `argv` replaces the worker command (tests).
    """
    env = dict(os.environ)
    owned_dir = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        owned_dir = tempfile.mkdtemp(prefix="mpaas-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = owned_dir
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False
    exit_code = 0
    crashes: deque[float] = deque()

    def start(index: int) -> None:
        child_env = {**env, "MPAAS_WORKERS": "1", "MPAAS_WORKER_INDEX": str(index), "MPAAS_REUSE_PORT": "true"}
        if index != 0:
            child_env["MPAAS_ADMIN_PORT"] = "0"  # one admin endpoint per pod
        children[index] = subprocess.Popen(argv or [sys.executable, "-m", "mpaas.cli", component], env=child_env)
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
                    return exit_code
                if time.monotonic() > deadline:
                    for c in children.values():
                        if c.poll() is None:
                            c.kill()
                    return 1
                continue
            for index, child in list(children.items()):
                code = child.poll()
                if code is None:
                    continue
                _mark_dead(child.pid, env["PROMETHEUS_MULTIPROC_DIR"])
                now = time.monotonic()
                crashes.append(now)
                while crashes and crashes[0] < now - CRASH_WINDOW_SECONDS:
                    crashes.popleft()
                if len(crashes) >= CRASH_LIMIT:
                    log.error(
                        "worker %d (pid %d) exited with %s: %d worker exits within %.0f s, stopping the pod",
                        index,
                        child.pid,
                        code,
                        len(crashes),
                        CRASH_WINDOW_SECONDS,
                    )
                    exit_code = 1
                    stop(signal.SIGTERM, None)
                    break
                log.error("worker %d (pid %d) exited with %s; restarting", index, child.pid, code)
                time.sleep(RESTART_BACKOFF_SECONDS)
                if not stopping:
                    start(index)
    finally:
        for c in children.values():
            if c.poll() is None:
                c.kill()
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead worker's live gauges from the shared metrics (the folder the workers got, not ours)."""
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, metrics_dir)
    except OSError:
        pass
