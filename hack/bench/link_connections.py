"""Link: idle connections per process and their memory, 100 000 connections across processes, and one message
broadcast to all of them.

    .venv/bin/python hack/bench/link_connections.py [--servers 6] [--per-server 17000] [--broadcast]
    .venv/bin/python hack/bench/link_connections.py --servers 1 --per-server 18000     # one process's memory

Starts on 127.0.0.1, and stops at the end: a Redis (no persistence), `--servers` link processes (one Link
channel, a token key), and load generators in processes of their own (a process may open at most 20 000 files
here), each holding authenticated idle connections (HELLO, WELCOME, and pings at the server's interval). Prints
each link process's RSS growth per connection (target: at most 16 KiB; mPaaS mcometgw holds 100k per 4-core
machine), and with `--broadcast` one message delivered to every connected device through the delivery API
(POST /v1/link/broadcast: appended once to the app's broadcast stream, fanned out by every link process): the
p50/p99/max of the time from the API call to each device's receipt (target: p99 at most 1 s; Centrifugo reports
200 ms for its broadcast); then `--inbox` devices get a message each in their own inbox (POST /v1/link/deliver,
1 000 devices a call), which gives messages delivered and acked per second per core of the link processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = b"bench-link-token-key-32-bytes!!!!"
APP, WS = "BENCH", "prod"
PER_GENERATOR = 9000  # connections one generator process holds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- a load generator process ---------------------------------------------------------------------------


async def generate(url: str, first: int, count: int, concurrency: int) -> None:
    """Hold `count` connections for devices first..first+count-1; answer the parent's commands on stdin:
    `stats` -> counts; `latency T0` -> receipt times of the broadcast relative to T0; `quit`."""
    from picows import WSListener, WSMsgType, ws_connect

    from mpaas.link import frames
    from mpaas.link.tokens import TokenKey

    key = TokenKey(KEY)
    received: tuple[dict[int, float], dict[int, float]] = ({}, {})  # per stream: device -> when its first came
    welcomed = 0
    failed = 0

    class Device(WSListener):
        __slots__ = ("last", "n", "transport")

        def __init__(self, n: int):
            self.n, self.last = n, [0, 0]

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport
            device = f"dev-{self.n}"
            transport.send(WSMsgType.BINARY, frames.Hello(APP, WS, device, key.issue(APP, WS, device)).encode())

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            nonlocal welcomed
            if frame.msg_type != WSMsgType.BINARY:
                return
            data = frame.get_payload_as_bytes()
            if data[0] == frames.FrameType.MESSAGES and data[1] == frames.BROADCAST:  # its time, no more (no ack)
                received[1].setdefault(self.n, time.time())
                return
            f = frames.decode_server(data)
            if isinstance(f, frames.Welcome):
                welcomed += 1
                self.last = [f.last_seq, f.broadcast_last_seq]
            elif isinstance(f, frames.Notify):
                transport.send(WSMsgType.BINARY, frames.Pull(self.last[f.stream], 256, f.stream).encode())
            elif isinstance(f, frames.Messages) and f.messages:
                received[f.stream].setdefault(self.n, time.time())
                self.last[f.stream] = f.messages[-1].seq
                if f.stream == frames.INBOX:  # broadcasts are not acked (docs/link.md)
                    transport.send(WSMsgType.BINARY, frames.Ack(self.last[f.stream]).encode())

    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        nonlocal failed
        async with sem:
            for _ in range(5):
                try:
                    await ws_connect(lambda: Device(n), url, read_buffer_init_size=1024, websocket_handshake_timeout=30)
                    return
                except Exception:
                    await asyncio.sleep(0.5)
            failed += 1

    await asyncio.gather(*(one(n) for n in range(first, first + count)))
    for _ in range(600):  # the WELCOMEs still on their way
        if welcomed + failed >= count:
            break
        await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": welcomed, "failed": failed}), flush=True)
    while line := (await reader.readline()).decode().strip():
        cmd, *args = line.split()
        if cmd == "stats":
            print(json.dumps({"welcomed": welcomed, "received": [len(r) for r in received]}), flush=True)
        elif cmd == "latency":
            stream, t0 = int(args[0]), float(args[1])
            print(json.dumps({"latencies": [t - t0 for t in received[stream].values()]}), flush=True)
        elif cmd == "quit":
            return


# --- the parent -----------------------------------------------------------------------------------------


def config(folder: Path) -> None:
    docs = [
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "PushChannel",
            "metadata": {"name": "link", "namespace": "bench"},
            "spec": {
                "appId": APP,
                "type": "Link",
                "link": {"tokenSecretRef": {"name": "keys", "key": "tokenKey"}, "heartbeat": {"minSeconds": 270}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys", "namespace": "bench"},
            "data": {"tokenKey": base64.b64encode(KEY).decode()},
        },
    ]
    import yaml

    (folder / "link.yaml").write_text(yaml.safe_dump_all(docs))


def wait_ready(url: str, seconds: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} never became ready")


def collect(generators: list[subprocess.Popen[bytes]], stream: int, t0: float) -> list[float]:
    out: list[float] = []
    for g in generators:
        assert g.stdin is not None and g.stdout is not None
        g.stdin.write(f"latency {stream} {t0}\n".encode())
        g.stdin.flush()
        out += json.loads(g.stdout.readline())["latencies"]
    return sorted(out)


def report(what: str, latencies: list[float], expected: int) -> None:
    if not latencies:
        print(f"{what}: received by nobody")
        return
    p50, p99 = latencies[len(latencies) // 2], latencies[max(int(len(latencies) * 0.99) - 1, 0)]
    print(f"{what}: received by {len(latencies)} of {expected}; p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms (target p99 <= 1000 ms: {'met' if p99 <= 1 else 'NOT met'}; "
          f"{p99 / 0.2:.1f}x Centrifugo's 200 ms)")  # fmt: skip


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--generator":
        asyncio.run(generate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=6)
    parser.add_argument("--per-server", type=int, default=17000)
    parser.add_argument("--broadcast", action="store_true")
    parser.add_argument("--inbox", type=int, default=0, help="devices then sent a message each in their inbox")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight per generator")
    args = parser.parse_args()
    if args.per_server > 19000:
        parser.error("a process may open at most 20 000 files here: --per-server 19000 at most")
    if not shutil.which("redis-server"):
        raise SystemExit("needs redis-server (Debian package redis-server)")
    procs: list[subprocess.Popen[bytes]] = []
    generators: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-link-"))
    try:
        redis_port = free_port()
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        config(tmp)
        servers = []
        for i in range(args.servers):
            http, ws = free_port(), free_port()
            env = {
                **os.environ,
                "MPAAS_PORT": str(http),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_LINK_PORT": str(ws),
                "MPAAS_CONFIG_SOURCE": "dir",
                "MPAAS_CONFIG_DIR": str(tmp),
                "MPAAS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "MPAAS_LINK_MAX_CONNECTIONS": str(args.per_server + 100),
                "MPAAS_LOG_LEVEL": "WARNING",
                "POD_NAME": f"link-{i}",
            }
            mpaas = str(Path(sys.executable).parent / "mpaas")
            log = (tmp / f"link-{i}.log").open("wb")
            p = subprocess.Popen([mpaas, "link"], env=env, stdout=log, stderr=subprocess.STDOUT)
            procs.append(p)
            servers.append((p, f"http://127.0.0.1:{http}", f"ws://127.0.0.1:{ws}/v1/link"))
        for _, http, _ in servers:
            wait_ready(http)
        time.sleep(1)
        before = [rss_kib(p.pid) for p, _, _ in servers]
        first = 0
        started = time.monotonic()
        for _, _, ws in servers:
            left = args.per_server
            while left:
                n = min(PER_GENERATOR, left)
                g = subprocess.Popen(
                    [sys.executable, __file__, "--generator", ws, str(first), str(n), str(args.concurrency)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                generators.append(g)
                first += n
                left -= n
        ready = failed = 0
        for g in generators:
            assert g.stdout is not None
            r = json.loads(g.stdout.readline())
            ready += r["ready"]
            failed += r["failed"]
        opened = time.monotonic() - started
        time.sleep(2)
        after = [rss_kib(p.pid) for p, _, _ in servers]
        print(f"{ready} connections authenticated ({failed} failed), {args.servers} link processes, {opened:.1f} s")
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            growth = (a - b) / args.per_server
            print(f"  link-{i}: RSS {b / 1024:.0f} -> {a / 1024:.0f} MiB: {growth:.1f} KiB per connection")
        per = sum(a - b for a, b in zip(after, before, strict=True)) / max(ready, 1)
        print(
            f"memory per idle connection: {per:.1f} KiB (target <= 16 KiB: {'met' if per <= 16 else 'NOT met'}); "
            f"one process would hold {int(1.6 * 1024 * 1024 / per):,} in 1.6 GiB without the file limit"
        )
        if args.broadcast:
            import httpx

            cpu0 = [cpu_seconds(p.pid) for p, _, _ in servers]
            gcpu0 = [cpu_seconds(g.pid) for g in generators]
            t0 = time.time()
            body = {"appId": APP, "workspaceId": WS, "payload": base64.b64encode(b"hello everyone").decode()}
            r = httpx.post(servers[0][1] + "/v1/link/broadcast", json=body, timeout=30)
            if r.status_code != 200:
                raise SystemExit(f"broadcast answered {r.status_code}: {r.text}")
            api = time.time() - t0
            time.sleep(3)
            cpu = sum(cpu_seconds(p.pid) - c for (p, _, _), c in zip(servers, cpu0, strict=True))
            gcpu = sum(cpu_seconds(g.pid) - c for g, c in zip(generators, gcpu0, strict=True))
            latencies = collect(generators, 1, t0)
            report(f"broadcast to {first} devices (the API answered in {api * 1000:.0f} ms)", latencies, first)
            print(f"  CPU: link processes {cpu:.2f} s ({cpu / max(len(latencies), 1) * 1e6:.1f} us a device: fan-out, "
                  f"acks), load generators {gcpu:.2f} s, on {os.cpu_count()} cores")  # fmt: skip
        if args.inbox:
            import httpx

            devices = [f"dev-{n}" for n in range(min(args.inbox, first))]
            cpu0 = [cpu_seconds(p.pid) for p, _, _ in servers]
            t0 = time.time()

            async def send_all() -> None:
                async with httpx.AsyncClient(timeout=60) as client:
                    sem = asyncio.Semaphore(4)

                    async def chunk(i: int) -> None:
                        async with sem:
                            body = {"appId": APP, "workspaceId": WS, "deviceIds": devices[i : i + 1000],
                                    "payload": base64.b64encode(b"just for you").decode()}  # fmt: skip
                            url = servers[(i // 1000) % len(servers)][1]
                            r = await client.post(url + "/v1/link/deliver", json=body)
                            if r.status_code != 200:
                                raise SystemExit(f"delivery answered {r.status_code}: {r.text}")

                    await asyncio.gather(*(chunk(i) for i in range(0, len(devices), 1000)))

            asyncio.run(send_all())
            time.sleep(3)
            cpu = sum(cpu_seconds(p.pid) - c for (p, _, _), c in zip(servers, cpu0, strict=True))
            latencies = collect(generators, 0, t0)
            report(f"a message each in {len(devices)} inboxes", latencies, len(devices))
            print(
                f"  link processes' CPU: {cpu:.1f} s, {len(latencies) / max(cpu, 1e-9):,.0f} messages delivered and "
                "acked per CPU-second (appends, notices, pulls and acks included)"
            )
    finally:
        for p in [*generators, *procs]:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
