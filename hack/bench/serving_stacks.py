"""Candidate serving stacks for delivery, link and analytics, measured side by side.

    python3 hack/bench/serving_stacks.py [--jobs delivery,link,analytics] [--only aiohttp,picows,...]
        [--seconds 6] [--link-conns 5000,15000] [--json results.json]

The candidates are not project dependencies: they are pip-installed at the pinned versions below
into their own venv, ${MPAAS_BENCH_VENV:-$HOME/.cache/mpaas-bench/venv} (created on first use).
This script needs only the standard library; servers (hack/bench/serving_stacks/servers.py) run in
that venv on 127.0.0.1, one process each (granian: its worker process), on uvloop (aiohttp delivery
also on asyncio's loop, the one whose loop.sendfile calls os.sendfile), started as subprocesses and
stopped by PID. Load generators are plain-Python clients in separate processes (blocking sockets
for HTTP, asyncio protocols for WebSocket), forked from this script. The whole run is bounded
(--budget, 900 s) and prints markdown tables with ratios against the best row of each job.

Jobs:
  delivery   a 64 MiB file: full GETs and 1 MiB Range GETs on keep-alive connections;
             MiB/s and server CPU seconds per GiB served.
  link       WebSocket connections opened (handshake + one ping/pong each) in client processes;
             server RSS growth per connection at each N; then a 16-byte binary message broadcast
             to every connection, rounds in a row: messages/s and server CPU per message.
  analytics  POST of ~64 KiB gzip-compressed JSON lines, inflated incrementally with a size cap;
             requests/s, MiB/s (compressed and inflated) and server CPU per request.

Server CPU is utime + stime of the server process and its descendants from /proc/<pid>/stat,
taken before and after each measured phase, so it stays meaningful on a busy machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "serving_stacks"
VENV = Path(os.environ.get("MPAAS_BENCH_VENV", str(Path.home() / ".cache/mpaas-bench/venv")))
PINS = [
    "uvicorn==0.54.0",
    "granian==2.8.9",
    "hypercorn==0.18.0",
    "aiohttp==3.14.5",
    "websockets==17.4",
    "picows==2.3.1",
    "wsproto==1.3.2",
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "uvloop==0.23.0",
    "httptools==0.9.0",
]
CLK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
GiB = 1 << 30


# --- venv ------------------------------------------------------------------------------------------


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    marker = VENV / "mpaas-bench-pins.txt"
    want = "\n".join(PINS) + "\n"
    if py.exists() and marker.exists() and marker.read_text() == want:
        return py
    if not py.exists():
        print(f"creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
    marker.write_text(want)
    return py


# --- processes -------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """pid and its descendants, from the ppid field of /proc/*/stat."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p:
                tree.append(child)
                todo.append(child)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One candidate server, started as a subprocess and stopped by PID (its descendants too)."""

    def __init__(self, py: Path, kind: str, stack: str, app: str | None, env: dict[str, str]) -> None:
        self.port = free_port()
        bin_ = py.parent
        p = str(self.port)
        if stack == "uvicorn":
            cmd = [str(bin_ / "uvicorn"), f"servers:{app}", "--host", "127.0.0.1", "--port", p, "--loop", "uvloop"]
            cmd += ["--http", "httptools", "--ws", "wsproto", "--ws-ping-interval", "3600", "--backlog", "4096"]
            cmd += ["--no-access-log", "--log-level", "warning", "--lifespan", "off"]
        elif stack == "granian":
            cmd = [str(bin_ / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", p]
            cmd += ["--workers", "1", "--loop", "uvloop", "--backlog", "4096", "--no-access-log"]
            cmd += ["--log-level", "warning", f"servers:{app}"]
        elif stack == "hypercorn":
            cmd = [str(bin_ / "hypercorn"), "-b", f"127.0.0.1:{p}", "-w", "1", "-k", "uvloop"]
            cmd += ["--backlog", "4096", "--log-level", "warning", f"servers:{app}"]
        else:  # stand-alone; app names the event loop
            cmd = [str(py), str(HERE / "servers.py"), kind, stack, "--port", p, "--loop", app or "uvloop"]
        full_env = {**os.environ, **env, "PYTHONPATH": str(HERE)}
        self.log_path = Path(tempfile.gettempdir()) / f"mpaas-bench-{kind}-{stack}-{self.port}.log"
        self.log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(cmd, cwd=HERE, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.output()
                self.stop()
                raise RuntimeError(f"{stack} exited: {out}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            out = self.output()
            self.stop()
            raise RuntimeError(f"{stack} did not listen in 30 s: {out}")
        time.sleep(0.3)  # granian: let the worker settle

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def pids(self) -> list[int]:
        return children_of(self.proc.pid)

    def stop(self) -> None:
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log.close()
        self.log_path.unlink(missing_ok=True)  # its tail is in the exception when a server fails

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_clients(target: Any, args_list: list[tuple], timeout: float) -> list[Any]:
    """Forks one process per argument tuple; each puts one result on a queue."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_client_entry, args=(target, a, q), daemon=True) for a in args_list]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in procs:
            results.append(q.get(timeout=timeout))
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
    for r in results:
        if isinstance(r, str):
            raise RuntimeError(r)
    return results


def _client_entry(target: Any, args: tuple, q: Any) -> None:
    try:
        q.put(target(*args))
    except Exception as exc:  # reported to the parent
        q.put(f"client error: {exc!r}")


# --- HTTP client (delivery, analytics) -------------------------------------------------------------


class Closed(ConnectionError):
    """The server closed a keep-alive connection between responses (hypercorn: after 1 000 requests)."""


def read_head(sock: socket.socket, buf: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise Closed("closed before the response head") if not buf else ConnectionError("closed mid-head")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def read_body(sock: socket.socket, headers: dict[bytes, bytes], rest: bytes, view: memoryview) -> tuple[int, bytes]:
    """Reads the body into view (discarded); returns its length and what follows it."""
    if b"content-length" not in headers:
        raise RuntimeError(f"no content-length: {headers}")
    remaining = int(headers[b"content-length"]) - len(rest)
    total = int(headers[b"content-length"])
    if remaining < 0:
        return total, rest[total:]
    while remaining:
        n = sock.recv_into(view, min(remaining, len(view)))
        if not n:
            raise ConnectionError("closed mid-body")
        remaining -= n
    return total, b""


def delivery_client(port: int, mode: str, size: int, start: float, seconds: float, seed: int) -> dict:
    rnd = random.Random(seed)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    view = memoryview(bytearray(4 * MiB))
    while time.time() < start:
        time.sleep(0.005)
    got = requests = 0
    buf = b""
    while time.time() < start + seconds:
        req = b"GET /file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if mode == "range":
            first = rnd.randrange(size // MiB) * MiB
            req += b"Range: bytes=%d-%d\r\n" % (first, first + MiB - 1)
        try:
            sock.sendall(req + b"\r\n")
            status, headers, rest = read_head(sock, buf)
        except (Closed, BrokenPipeError, ConnectionResetError):
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
            buf = b""
            continue
        want = (206, MiB) if mode == "range" else (200, size)
        n, buf = read_body(sock, headers, rest, view)
        if (status, n) != want:
            raise RuntimeError(f"{mode}: got {status} with {n} bytes, want {want}")
        got += n
        requests += 1
    sock.close()
    return {"bytes": got, "requests": requests, "end": time.time()}


def analytics_client(port: int, body: bytes, lines: int, start: float, seconds: float) -> dict:
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        b"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    request = head + body
    view = memoryview(bytearray(65536))
    while time.time() < start:
        time.sleep(0.005)
    requests = 0
    buf = b""
    checked = False
    while time.time() < start + seconds:
        try:
            sock.sendall(request)
            status, headers, rest = read_head(sock, buf)
        except (Closed, BrokenPipeError, ConnectionResetError):
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
            buf = b""
            continue
        if not checked:
            # the first answer is read whole and checked
            need = int(headers[b"content-length"])
            while len(rest) < need:
                rest += sock.recv(65536)
            answer, buf = json.loads(rest[:need]), rest[need:]
            if status != 200 or answer.get("lines") != lines:
                raise RuntimeError(f"analytics: {status} {answer}, want {lines} lines")
            checked = True
        else:
            _, buf = read_body(sock, headers, rest, view)
            if status != 200:
                raise RuntimeError(f"analytics: status {status}")
        requests += 1
    sock.close()
    return {"requests": requests, "end": time.time()}


def measure_http(server: Server, client: Any, args_list: list[tuple], start: float, seconds: float) -> dict:
    pids = server.pids()
    while time.time() < start:
        time.sleep(0.001)
    cpu0 = cpu_seconds(pids)
    results = run_clients(client, args_list, timeout=seconds + 60)
    cpu = cpu_seconds(pids) - cpu0
    wall = max(r["end"] for r in results) - start
    return {"cpu": cpu, "wall": wall, "results": results}


# --- delivery --------------------------------------------------------------------------------------

DELIVERY = [
    # label, stack, ASGI app
    ("uvicorn (FileResponse; no pathsend)", "uvicorn", "delivery_app"),
    ("granian (FileResponse via pathsend)", "granian", "delivery_app"),
    ("granian (FileResponse, pathsend hidden)", "granian", "delivery_app_nopathsend"),
    ("hypercorn (FileResponse; no pathsend)", "hypercorn", "delivery_app"),
    ("aiohttp.web (FileResponse; asyncio loop: sendfile)", "aiohttp", "asyncio"),
    ("aiohttp.web (FileResponse; uvloop: read + write)", "aiohttp", "uvloop"),
]


def job_delivery(py: Path, args: argparse.Namespace) -> list[dict]:
    path = Path(args.tmp) / "mpaas-bench-64MiB.bin"
    size = 64 * MiB
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
    rows = []
    for label, stack, app in DELIVERY:
        if args.only and stack not in args.only:
            continue
        with Server(py, "delivery", stack, app, {"BENCH_FILE": str(path)}) as server:
            row: dict[str, Any] = {"stack": label}
            # warm-up: the page cache and the first request's imports
            run_clients(delivery_client, [(server.port, "full", size, time.time(), 0.01, 0)], 60)
            for mode in ("full", "range"):
                start = time.time() + 0.5
                clients = [(server.port, mode, size, start, args.seconds, i) for i in range(args.delivery_conns)]
                m = measure_http(server, delivery_client, clients, start, args.seconds)
                served = sum(r["bytes"] for r in m["results"])
                row[mode] = {
                    "mib_s": served / MiB / m["wall"],
                    "cpu_per_gib": m["cpu"] / (served / GiB),
                    "requests": sum(r["requests"] for r in m["results"]),
                }
            rows.append(row)
            print(f"  delivery {label}: {json.dumps(row)}", file=sys.stderr)
    return rows


# --- link ------------------------------------------------------------------------------------------

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PING = bytes([0x89, 0x84, 0, 0, 0, 0]) + b"ping"  # masked with a zero key
PONG = bytes([0x8A, 0x04]) + b"ping"
PAYLOAD = b"B" + b"0123456789abcde"  # 16 bytes; the server sends 18-byte frames
FRAME = 2 + len(PAYLOAD)
TRIGGER = bytes([0x82, 0x80 | len(PAYLOAD), 0, 0, 0, 0]) + PAYLOAD


def link_client(port: int, conn: Any) -> None:
    """A client process: opens connections on command, counts broadcast bytes, reports by pipe."""
    import asyncio

    state = {"bytes": 0, "target": -1}
    done = asyncio.Event()

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = b""
            self.phase = 0
            self.ready = asyncio.get_running_loop().create_future()
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.write(HANDSHAKE)

        def data_received(self, data: bytes) -> None:
            if self.phase == 2:
                state["bytes"] += len(data)
                if state["bytes"] == state["target"]:
                    done.set()
                return
            self.buf += data
            if self.phase == 0 and b"\r\n\r\n" in self.buf:
                head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                    self.ready.set_exception(RuntimeError(head[:200].decode(errors="replace")))
                    return
                self.phase = 1
                self.transport.write(PING)
            if self.phase == 1 and len(self.buf) >= len(PONG):
                if self.buf[: len(PONG)] != PONG:
                    self.ready.set_exception(RuntimeError(f"not a pong: {self.buf[:20]!r}"))
                    return
                self.phase = 2
                state["bytes"] += len(self.buf) - len(PONG)
                self.buf = b""
                self.ready.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError("closed before the pong"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clients: list[Client] = []
        sem = asyncio.Semaphore(48)

        async def open_one() -> None:
            async with sem:
                _, proto = await loop.create_connection(Client, "127.0.0.1", port)
                await asyncio.wait_for(proto.ready, 30)
                clients.append(proto)

        commands: asyncio.Queue = asyncio.Queue()
        loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
        while True:
            cmd, arg = await commands.get()
            if cmd == "open":
                results = await asyncio.gather(*(open_one() for _ in range(arg)), return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                conn.send(("opened", len(clients), repr(errors[0]) if errors else None))
            elif cmd == "expect":
                state["bytes"] = 0
                state["target"] = len(clients) * FRAME * arg
                done.clear()
                conn.send(("ready", None, None))
            elif cmd == "wait":
                try:
                    await asyncio.wait_for(done.wait(), arg)
                    conn.send(("done", state["bytes"], None))
                except TimeoutError:
                    conn.send(("timeout", state["bytes"], None))
            elif cmd == "quit":
                for c in clients:
                    c.transport.abort()
                conn.send(("bye", None, None))
                return

    asyncio.run(main())


def ask(pipes: list[Any], cmds: list[tuple], timeout: float) -> list[tuple]:
    """One command to each client process, then one answer from each."""
    for pipe, cmd in zip(pipes, cmds, strict=True):
        pipe.send(cmd)
    out = []
    for pipe in pipes:
        if not pipe.poll(timeout):
            raise RuntimeError(f"client process silent for {timeout} s")
        out.append(pipe.recv())
    return out


def ws_controller(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(HANDSHAKE)
    status, _, rest = read_head(sock, b"")
    if status != 101:
        raise RuntimeError(f"controller handshake: {status}")
    sock.sendall(PING)
    while len(rest) < len(PONG):
        rest += sock.recv(100)
    return sock


LINK = [
    # label, stack, ASGI app, environment
    ("websockets (asyncio server)", "websockets", None, {}),
    ("picows (16 KiB read buffer, its default)", "picows", None, {}),
    ("picows (1 KiB initial read buffer)", "picows", None, {"BENCH_PICOWS_READBUF": "1024"}),
    (
        "picows (1 KiB read buffer, uvloop transport: use_aiofastnet=False)",
        "picows",
        None,
        {"BENCH_PICOWS_READBUF": "1024", "BENCH_PICOWS_AIOFASTNET": "0"},
    ),
    ("aiohttp.web WebSocket", "aiohttp", None, {}),
    ("uvicorn + wsproto (ASGI)", "uvicorn", "link_app", {}),
    ("wsproto on asyncio streams", "wsproto", None, {}),
]


def job_link(py: Path, args: argparse.Namespace) -> list[dict]:
    steps = [int(n) for n in args.link_conns.split(",")]
    rows = []
    for label, stack, app, env in LINK:
        if args.only and stack not in args.only:
            continue
        with Server(py, "link", stack, app, env) as server:
            row: dict[str, Any] = {"stack": label, "mem": {}}
            ctx = mp.get_context("fork")
            pipes, procs = [], []
            control = ws_controller(server.port)
            try:
                for _ in range(args.link_procs):
                    mine, theirs = ctx.Pipe()
                    p = ctx.Process(target=link_client, args=(server.port, theirs), daemon=True)
                    p.start()
                    pipes.append(mine)
                    procs.append(p)

                time.sleep(0.5)
                pids = server.pids()
                base = rss_bytes(pids)
                row["rss_base_mib"] = base / MiB
                opened = 0
                for n in steps:
                    add = n - opened
                    share = [
                        add // args.link_procs + (1 if i < add % args.link_procs else 0) for i in range(len(pipes))
                    ]
                    t0 = time.time()
                    cpu0 = cpu_seconds(pids)
                    answers = ask(pipes, [("open", s) for s in share], 300)
                    took = time.time() - t0
                    cpu_open = cpu_seconds(pids) - cpu0
                    errors = [a[2] for a in answers if a[2]]
                    opened = sum(a[1] for a in answers)
                    if errors or opened != n:
                        raise RuntimeError(f"opened {opened} of {n}: {errors[:1]}")
                    time.sleep(1.0)
                    rss = rss_bytes(pids)
                    row["mem"][n] = {
                        "kib_per_conn": (rss - base) / n / 1024,
                        "rss_mib": rss / MiB,
                        "open_s": took,
                        "cpu_us_per_open": cpu_open / add * 1e6,
                    }
                    print(f"  link {label}: {n} open, RSS {rss / MiB:.1f} MiB", file=sys.stderr)
                rounds = args.link_rounds
                ask(pipes, [("expect", rounds)] * len(pipes), 30)
                t0 = time.time()
                cpu0 = cpu_seconds(pids)
                for _ in range(rounds):
                    control.sendall(TRIGGER)
                answers = ask(pipes, [("wait", 120)] * len(pipes), 130)
                wall = time.time() - t0
                cpu = cpu_seconds(pids) - cpu0
                if any(a[0] != "done" for a in answers):
                    raise RuntimeError(f"broadcast incomplete: {answers}")
                msgs = opened * rounds
                row["fanout"] = {"conns": opened, "msgs_s": msgs / wall, "cpu_us_per_msg": cpu / msgs * 1e6}
                ask(pipes, [("quit", None)] * len(pipes), 60)
            finally:
                control.close()
                for p in procs:
                    p.join(10)
                    if p.is_alive() and p.pid is not None:
                        os.kill(p.pid, signal.SIGKILL)
                        p.join(5)
            rows.append(row)
            print(f"  link {label}: {json.dumps(row)}", file=sys.stderr)
    return rows


# --- analytics -------------------------------------------------------------------------------------


def analytics_body(target: int = 64 * 1024) -> tuple[bytes, int, int]:
    """JSON lines of app events, gzip-compressed to ~target bytes: (body, lines, inflated size)."""
    rnd = random.Random(7)
    events = ["app_start", "page_view", "click", "purchase", "crash", "push_open"]
    out, lines = [], 0
    raw = b""
    while True:
        for _ in range(200):
            event = {
                "ts": 1_764_000_000_000 + rnd.randrange(10**9),
                "event": rnd.choice(events),
                "device": f"{rnd.getrandbits(64):016x}",
                "user": f"u{rnd.randrange(10**7)}",
                "app": "com.demo.mall",
                "version": f"10.{rnd.randrange(5)}.{rnd.randrange(20)}",
                "os": rnd.choice(["android 14", "android 15", "ios 18.2", "ios 26.1"]),
                "page": f"/item/{rnd.randrange(10**6)}",
                "duration_ms": rnd.randrange(5000),
            }
            out.append(json.dumps(event, separators=(",", ":")).encode() + b"\n")
            lines += 1
        raw = b"".join(out)
        body = gzip.compress(raw, 6)
        if len(body) >= target:
            return body, lines, len(raw)


def inflate_cost(body: bytes, cap: int = 16 << 20) -> float:
    """CPU seconds to inflate the body and count its lines here, as the servers do (in 16 KiB reads)."""
    import zlib

    n = 0
    t0 = time.process_time()
    while time.process_time() - t0 < 1.0:
        d = zlib.decompressobj(wbits=31)
        size = lines = 0
        for i in range(0, len(body), 16384):
            data = body[i : i + 16384]
            while data:
                out = d.decompress(data, cap - size + 1)
                size += len(out)
                lines += out.count(b"\n")
                data = d.unconsumed_tail
        d.flush()
        n += 1
    return (time.process_time() - t0) / n


ANALYTICS = [
    ("uvicorn (FastAPI)", "uvicorn", "analytics_app"),
    ("granian (FastAPI)", "granian", "analytics_app"),
    ("hypercorn (FastAPI)", "hypercorn", "analytics_app"),
    ("uvicorn (bare ASGI)", "uvicorn", "analytics_raw"),
    ("granian (bare ASGI)", "granian", "analytics_raw"),
    ("aiohttp.web", "aiohttp", None),
]


def job_analytics(py: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    body, lines, inflated = analytics_body()
    info = {"gzip_bytes": len(body), "lines": lines, "inflated_bytes": inflated, "inflate_s": inflate_cost(body)}
    rows = []
    for label, stack, app in ANALYTICS:
        if args.only and stack not in args.only:
            continue
        with Server(py, "analytics", stack, app, {}) as server:
            run_clients(analytics_client, [(server.port, body, lines, time.time(), 0.5)], 60)  # warm-up
            start = time.time() + 0.5
            clients = [(server.port, body, lines, start, args.seconds) for _ in range(args.analytics_conns)]
            m = measure_http(server, analytics_client, clients, start, args.seconds)
            n = sum(r["requests"] for r in m["results"])
            row = {
                "stack": label,
                "rps": n / m["wall"],
                "gzip_mib_s": n * len(body) / MiB / m["wall"],
                "inflated_mib_s": n * inflated / MiB / m["wall"],
                "cpu_us_per_req": m["cpu"] / n * 1e6,
            }
            rows.append(row)
            print(f"  analytics {label}: {json.dumps(row)}", file=sys.stderr)
    return rows, info


# --- report ----------------------------------------------------------------------------------------


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def rel(x: float, best: float) -> float:
    return x / best if best > 0 else float("nan")  # nan: a run too short for the CPU clock's 10 ms ticks


def report(results: dict, args: argparse.Namespace) -> str:
    out = []
    if results.get("delivery"):
        rows = results["delivery"]
        best = {m: min(r[m]["cpu_per_gib"] for r in rows) for m in ("full", "range")}
        top = {m: max(r[m]["mib_s"] for r in rows) for m in ("full", "range")}
        body = []
        for r in rows:
            cells = [r["stack"]]
            for m in ("full", "range"):
                cells += [
                    f"{r[m]['mib_s']:,.0f} ({rel(r[m]['mib_s'], top[m]):.2f})",
                    f"{r[m]['cpu_per_gib']:.2f} ({rel(r[m]['cpu_per_gib'], best[m]):.1f}x)",
                ]
            body.append(cells)
        out.append(
            f"delivery: 64 MiB file, {args.delivery_conns} keep-alive connections, {args.seconds:g} s per mode "
            "(ratios: MiB/s against the fastest, CPU against the cheapest)\n\n"
            + table(
                ["stack", "full GET MiB/s", "full GET CPU s/GiB", "1 MiB Range MiB/s", "1 MiB Range CPU s/GiB"], body
            )
        )
    if results.get("link"):
        rows = results["link"]
        steps = sorted({n for r in rows for n in r["mem"]})
        last = steps[-1]
        best_mem = min(r["mem"][last]["kib_per_conn"] for r in rows)
        best_rate = min(r["fanout"]["cpu_us_per_msg"] for r in rows)
        top_rate = max(r["fanout"]["msgs_s"] for r in rows)
        body = []
        for r in rows:
            k = r["mem"][last]["kib_per_conn"]
            cells = [r["stack"]]
            cells += [f"{r['mem'][n]['kib_per_conn']:.1f}" for n in steps]
            cells += [
                f"{rel(k, best_mem):.1f}x",
                f"{(r['rss_base_mib'] * MiB + k * 1024 * 100_000) / GiB:.2f} GiB",
                f"{r['mem'][last]['cpu_us_per_open']:.0f}",
                f"{r['fanout']['msgs_s']:,.0f} ({rel(r['fanout']['msgs_s'], top_rate):.2f})",
                f"{r['fanout']['cpu_us_per_msg']:.2f} ({rel(r['fanout']['cpu_us_per_msg'], best_rate):.1f}x)",
            ]
            body.append(cells)
        head = ["stack"] + [f"KiB/conn at {n:,}" for n in steps]
        head += ["vs best", "RSS at 100k", "CPU µs/open", f"fan-out msg/s at {last:,}", "CPU µs/msg"]
        out.append(
            f"link: WebSocket, server RSS growth / N (handshake + one ping/pong each), clients in "
            f"{args.link_procs} processes; fan-out: {args.link_rounds} rounds of a 16-byte binary message "
            "to every connection\n\n" + table(head, body)
        )
    if results.get("analytics"):
        rows = results["analytics"]
        info = results["analytics_body"]
        best = min(r["cpu_us_per_req"] for r in rows)
        top = max(r["rps"] for r in rows)
        inflate = info["inflate_s"] * 1e6
        best_rest = min(r["cpu_us_per_req"] - inflate for r in rows)
        body = [
            [
                r["stack"],
                f"{r['rps']:,.0f} ({rel(r['rps'], top):.2f})",
                f"{r['gzip_mib_s']:.1f}",
                f"{r['inflated_mib_s']:.0f}",
                f"{r['cpu_us_per_req']:,.0f} ({rel(r['cpu_us_per_req'], best):.2f}x)",
                f"{r['cpu_us_per_req'] - inflate:,.0f} ({rel(r['cpu_us_per_req'] - inflate, best_rest):.1f}x)",
            ]
            for r in rows
        ]
        out.append(
            f"analytics: POST of {info['gzip_bytes'] / 1024:.0f} KiB gzip ({info['lines']} JSON lines, "
            f"{info['inflated_bytes'] / 1024:.0f} KiB inflated), {args.analytics_conns} keep-alive connections, "
            f"{args.seconds:g} s; inflating one body and counting its lines alone: {inflate:,.0f} µs of CPU\n\n"
            + table(
                [
                    "stack",
                    "requests/s",
                    "gzip MiB/s",
                    "inflated MiB/s",
                    "server CPU µs/request",
                    "of it beyond inflate",
                ],
                body,
            )
        )
    return "\n\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="delivery,link,analytics")
    ap.add_argument("--only", default="", help="comma-separated stacks (uvicorn, granian, ...)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--delivery-conns", type=int, default=4)
    ap.add_argument("--analytics-conns", type=int, default=4)
    ap.add_argument("--link-conns", default="5000,15000", help="cumulative connection counts (file limit!)")
    ap.add_argument("--link-procs", type=int, default=4)
    ap.add_argument("--link-rounds", type=int, default=10)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--budget", type=float, default=900.0, help="seconds before the run is abandoned")
    args = ap.parse_args()
    args.only = set(filter(None, args.only.split(",")))
    jobs = args.jobs.split(",")

    def out_of_time(*_: object) -> None:
        raise TimeoutError(f"over the {args.budget:g} s budget")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.budget))
    py = ensure_venv()
    results: dict[str, Any] = {}
    started = time.time()
    if "delivery" in jobs:
        results["delivery"] = job_delivery(py, args)
    if "link" in jobs:
        results["link"] = job_link(py, args)
    if "analytics" in jobs:
        results["analytics"], results["analytics_body"] = job_analytics(py, args)
    signal.alarm(0)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results, args))
    print(f"\n({time.time() - started:.0f} s; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
