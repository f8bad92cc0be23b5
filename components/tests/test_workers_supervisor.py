"""The in-pod worker supervisor: a crash is restarted, a crash loop ends the pod."""

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpaas import workers

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_crash_loop_ends_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: the supervisor survives its workers' deaths without a metrics folder set in its own environment."""
    monkeypatch.setattr(workers, "RESTART_BACKOFF_SECONDS", 0.05)
    started = time.monotonic()
    code = workers.supervise("gateway", 2, drain_seconds=1, argv=[sys.executable, "-c", "raise SystemExit(3)"])
    assert code == 1  # the kubelet restarts the container and counts it
    assert time.monotonic() - started < 10


def test_a_single_crash_is_restarted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The first run of the worker exits, the restarted one lives; a SIGTERM then ends both cleanly."""
    monkeypatch.setattr(workers, "RESTART_BACKOFF_SECONDS", 0.05)
    marker = tmp_path / "ran"
    script = (
        "import pathlib, signal, sys, time\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.write_text('x'); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "m.write_text('restarted')\n"
        "time.sleep(60)\n"
    )

    def stop_once_restarted() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (marker.exists() and marker.read_text() == "restarted"):
            time.sleep(0.05)
        signal.raise_signal(signal.SIGTERM)  # as the kubelet would

    threading.Thread(target=stop_once_restarted, daemon=True).start()
    code = workers.supervise("gateway", 1, drain_seconds=2, argv=[sys.executable, "-c", script])
    assert marker.read_text() == "restarted" and code == 0
