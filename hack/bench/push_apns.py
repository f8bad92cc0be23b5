"""APNs sends per second: the APNs client against the local HTTP/2 APNs (hack/push_vendors/apns.py).

    .venv/bin/python hack/bench/push_apns.py [--concurrency 200] [--seconds 10] [--core 1]

Starts the local APNs in its own process on 127.0.0.1 (pinned to `--core` with taskset when there is one, this
process on another core), then runs `--concurrency` senders in this process for `--seconds`, each sending one
alert to one device token at a time: the client multiplexes them as HTTP/2 streams over its connection. Prints
sends per second, the p50/p99 latency of one send and the CPU each side used, then stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mpaas.push.vendors import apns
from mpaas.push.vendors.base import Notification

ROOT = Path(__file__).resolve().parents[2]


def start_server(core: int | None) -> tuple[subprocess.Popen[str], dict[str, str]]:
    cmd = [sys.executable, str(ROOT / "hack" / "push_vendors" / "apns.py"), "--port", "0"]
    if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) > core:
        cmd = ["taskset", "-c", str(core), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise SystemExit(f"the local APNs did not start (exit {proc.returncode})")
    return proc, json.loads(line)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(info: dict[str, str], auth_key: bytes, concurrency: int, seconds: float, server_pid: int) -> None:
    client = apns.build(
        {"authKey": auth_key},
        endpoint=info["url"],
        options={"teamId": info["teamId"], "keyId": info["keyId"], "topic": info["topic"], "caFile": info["caFile"]},
    )
    latencies: list[float] = []
    failures: dict[str, int] = {}
    assert (await client.check_credentials()).ok  # connects and signs the provider token before the clock starts
    deadline = time.monotonic() + seconds

    async def sender(i: int) -> None:
        token = f"{i + 1:064x}"
        n = 0
        while time.monotonic() < deadline:
            n += 1
            note = Notification(message_id=f"{i}-{n}", title="Order shipped", body="Your order 42 is on its way")
            start = time.perf_counter()
            [result] = await client.send(note, [token])
            latencies.append(time.perf_counter() - start)
            if not result.ok:
                failures[result.reason] = failures.get(result.reason, 0) + 1

    began, client_cpu, server_cpu = time.monotonic(), time.process_time(), cpu_seconds(server_pid)
    await asyncio.gather(*(sender(i) for i in range(concurrency)))
    elapsed = time.monotonic() - began
    client_cpu, server_cpu = time.process_time() - client_cpu, cpu_seconds(server_pid) - server_cpu
    await client.close()
    latencies.sort()
    sent = len(latencies) - sum(failures.values())

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(
        f"APNs (local HTTP/2 server, {concurrency} concurrent sends, {elapsed:.1f} s): "
        f"{sent / elapsed:,.0f} sends/s, p50 {pct(0.50):.1f} ms, p99 {pct(0.99):.1f} ms; "
        f"CPU client {client_cpu / elapsed:.0%}, server {server_cpu / elapsed:.0%} of a core"
        + (f", failures {failures}" if failures else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--core", type=int, default=1, help="CPU the server runs on (-1: anywhere)")
    args = parser.parse_args()
    proc, info = start_server(None if args.core < 0 else args.core)
    if args.core >= 0 and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0 if args.core != 0 else 1})  # the client on another core than the server
    try:
        auth_key = Path(info["authKeyFile"]).read_bytes()
        asyncio.run(run(info, auth_key, args.concurrency, args.seconds, proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
