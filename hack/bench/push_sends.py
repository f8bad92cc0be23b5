"""Push: sends accepted per second on one core with durability on, against Kafka's own producer perf test on
the same broker (target: at least 0.3x).

    export MPAAS_RUN=/work/main/.testenv; source $MPAAS_RUN/env.sh      # bash hack/testenv/up.sh stores
    .venv/bin/python hack/bench/push_sends.py [--seconds 15] [--warmup 3] [--concurrency 8] [--generators 1]
        [--batch 500] [--idempotency-seconds 10] [--perf-records auto] [--profile]

Batches of 500 (the most one call takes) by default; --batch 1 --concurrency 64 measures one send a call.

Uses the test environment's Redis and Kafka (MPAAS_TEST_REDIS_URL, MPAAS_TEST_KAFKA). Starts, on 127.0.0.1,
and stops by PID at the end:

- one `mpaas push` pinned to core 1 (taskset -c 1) with the fan-out, the senders and the scheduler off, so only
  acceptance is measured: each `POST /v1/push/messages` is signed (sign_headers: a fresh Ts and Nonce each),
  checked (the nonce claimed in Redis), saved in Redis and written to the sends topic (acks=all, idempotent,
  gzip, linger.ms=2: stores/eventlog.py) before its 202. The target is `all` (an app-wide broadcast: check_targets
  looks nothing up for it); with the fan-out off nothing is fanned out.
- `--generators` load generator processes pinned to core 0, each holding `--concurrency` / generators keep-alive
  HTTP/1.1 connections (raw asyncio streams, one request in flight per connection, signed per request), for
  `--warmup` + `--seconds`; only answers that come within the measured window count. Then, with
  `--idempotency-seconds`, the same with an Idempotency-Key header of its own on each send (one more Redis
  round trip: the key claimed).
- Kafka's ProducerPerformance (what kafka-producer-perf-test.sh runs; the test environment caches the jars,
  hack/testenv/fetch-kafka.sh) pinned to core 1 too, unthrottled, acks=all, records of the size of a push send
  record (PushMessage.to_json() of the benchmark's send, measured); and a second run with the platform
  producer's settings and real send records as payloads (--payload-file), for reference.

The topics (3 partitions, as the test broker's num.partitions; push's records all go to one, keyed by app) are
deleted at the end, and the Redis keys of the run (its prefix; its nonces) too. The broker and Redis are not
pinned: they share both cores with everything else; the CPU they used is printed, and the machine's CPU
used by other processes during the window (a sign the figures were disturbed). `--profile`: py-spy (on PATH,
or PY_SPY=/path) samples the push process during the measured window and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP, WS = "BENCH", "prod"
SERVER_KEY = b"bench-push-server-api-key-32-bytes!!"
PATH = "/v1/push/messages"
BATCH = [1]  # sends per call (--batch), for the generators
SEND = {
    "target": {"type": "all"},
    "notification": {
        "title": "Flash sale",
        "body": "20% off everything in the app until midnight",
        "data": {"campaign": "spring-2026", "deeplink": "shop://sale/spring"},
    },
}
CLK = os.sysconf("SC_CLK_TCK")
SUMMARY = re.compile(  # ProducerPerformance's last line
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th\.$"
)
# The platform producer's settings (components/mpaas/stores/eventlog.py, KafkaEventLog.start).
PRODUCER_PROPS = ["acks=all", "enable.idempotence=true", "compression.type=zstd", "linger.ms=2"]
LOG4J = """\
rootLogger.level=WARN
rootLogger.appenderRef.stderr.ref=STDERR
appender.stderr.type=Console
appender.stderr.name=STDERR
appender.stderr.target=SYSTEM_ERR
appender.stderr.layout.type=PatternLayout
appender.stderr.layout.pattern=[%d] %p %m (%c)%n
"""
START_ENV = "export MPAAS_RUN=/work/main/.testenv; bash hack/testenv/up.sh stores; source $MPAAS_RUN/env.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def machine_busy() -> float:
    """CPU-seconds every process of the machine used so far (/proc/stat: all but idle and iowait)."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def pct(values: list[float], p: float) -> float:
    return values[min(int(len(values) * p), len(values) - 1)] if values else float("nan")


# --- the load generator (its own process) ---------------------------------------------------------------


async def generate(
    port: int, connections: int, warmup: float, seconds: float, idempotency: bool, batch: int = 1
) -> dict[str, Any]:
    from mpaas.push.auth import sign_headers

    # batch > 1: POST /v1/push/messages/batch with that many sends in each call (each its own message).
    path = PATH if batch == 1 else PATH + "/batch"
    body = json.dumps(SEND if batch == 1 else {"messages": [SEND] * batch}, separators=(",", ":")).encode()
    fixed = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    fixed += f"Content-Length: {len(body)}\r\n"
    begin = time.monotonic()
    measure_from, end = begin + warmup, begin + warmup + seconds
    latencies: list[float] = []
    sends = [0]  # accepted sends in the window
    statuses: dict[str, int] = {}
    sample_error = ""

    async def connection() -> None:
        nonlocal sample_error
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (start := time.monotonic()) < end:
                h = sign_headers(SERVER_KEY, "POST", path, "", APP, WS, body)
                head = fixed + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                if idempotency:
                    head += f"Idempotency-Key: {h['Nonce']}\r\n"
                writer.write(head.encode() + b"\r\n" + body)
                got = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", got)
                answer = await reader.readexactly(int(m.group(1))) if m else b""
                done = time.monotonic()
                status = got[9:12].decode()
                if measure_from <= done < end:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "202":
                        latencies.append(done - start)
                        sends[0] += batch
                if status != "202" and not sample_error:
                    sample_error = f"{status}: {answer[:300]!r}"
        finally:
            writer.close()

    results = await asyncio.gather(*(connection() for _ in range(connections)), return_exceptions=True)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"latencies": latencies, "sends": sends[0], "statuses": statuses, "error": sample_error,
            "failed": failed[:3]}  # fmt: skip


def generator_main(argv: list[str]) -> None:
    port, connections, warmup, seconds, idem = int(argv[0]), int(argv[1]), float(argv[2]), float(argv[3]), argv[4]
    batch = int(argv[5]) if len(argv) > 5 else 1
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(generate(port, connections, warmup, seconds, idem == "1", batch))
    out["cpu"] = time.process_time()
    print(json.dumps(out), flush=True)


# --- the parent -----------------------------------------------------------------------------------------


def need_env() -> tuple[str, str]:
    redis_url, kafka = os.environ.get("MPAAS_TEST_REDIS_URL", ""), os.environ.get("MPAAS_TEST_KAFKA", "")
    if not redis_url or not kafka:
        raise SystemExit(f"MPAAS_TEST_REDIS_URL / MPAAS_TEST_KAFKA not set: start the test environment:\n  {START_ENV}")
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_timeout=3).ping()
    except Exception as e:
        raise SystemExit(f"Redis at {redis_url} does not answer ({e!r}): start it:\n  {START_ENV}") from None
    host, _, port = kafka.partition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise SystemExit(f"Kafka at {kafka} does not answer ({e!r}): start it:\n  {START_ENV}") from None
    return redis_url, kafka


def kafka_libs() -> Path:
    sys.path.insert(0, str(ROOT / "hack"))
    import testenv_paths

    libs = testenv_paths.cache() / f"kafka-{testenv_paths.versions()['KAFKA_VERSION']}" / "libs"
    if not (libs.parent / ".complete").exists():
        raise SystemExit(f"no Kafka jars in {libs}: run hack/testenv/fetch-kafka.sh")
    return libs


async def topics(kafka: str, create: list[str], delete: list[str]) -> None:
    import logging

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka, request_timeout_ms=15000)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1) for t in create])
        if delete:
            with contextlib.suppress(Exception):
                await admin.delete_topics(delete)
    finally:
        await admin.close()


def write_config(folder: Path) -> None:
    import yaml

    docs = [
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "MpaasGateway",
            "metadata": {"name": "gw", "namespace": "bench"},
            "spec": {"apps": [{"appId": APP, "workspaceId": WS, "credentialsSecretRef": {"name": "bench-keys"}}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-keys", "namespace": "bench"},
            "data": {"serverApiKey": base64.b64encode(SERVER_KEY).decode()},
        },
    ]
    (folder / "push.yaml").write_text(yaml.safe_dump_all(docs))


def send_records(n: int) -> list[bytes]:
    """What the sends topic gets for the benchmark's send: PushMessage.to_json(), as api.py builds it."""
    from mpaas.push.messages import PushMessage, new_message_id, parse_content, parse_options, parse_target

    out = []
    for _ in range(n):
        now = int(time.time() * 1000)
        m = PushMessage(
            message_id=new_message_id(),
            app_id=APP,
            workspace_id=WS,
            target=parse_target(SEND["target"]),
            content=parse_content(SEND["notification"]),
            created_ms=now,
            **parse_options(SEND, now),
        )
        out.append(m.to_json())
    return out


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mpaas push exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} never became ready:\n{log.read_text(errors='replace')[-3000:]}")


def pinned(core: int, cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


class Watch:
    """CPU seconds of the processes that matter, and of the whole machine, over a window."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.t0 = time.monotonic()
        self.start = {k: cpu_seconds(p) for k, p in pids.items()}
        self.busy0 = machine_busy()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        out = {k: (cpu_seconds(p) - self.start[k]) / elapsed for k, p in self.pids.items()}
        out["machine"] = (machine_busy() - self.busy0) / elapsed
        return out


def load(
    port: int,
    generators: int,
    concurrency: int,
    warmup: float,
    seconds: float,
    idem: bool,
    pids: dict[str, int],
    profile: str | None,
    push_pid: int,
    tmp: Path,
) -> dict[str, Any]:
    gens = [
        subprocess.Popen(
            pinned(
                0,
                [
                    sys.executable,
                    __file__,
                    "--generator",
                    str(port),
                    str(max(concurrency // generators, 1)),
                    str(warmup),
                    str(seconds),
                    "1" if idem else "0",
                    str(BATCH[0]),
                ],
            ),
            stdout=subprocess.PIPE,
        )
        for _ in range(generators)
    ]
    spy = None
    try:
        time.sleep(warmup)
        watch = Watch(pids | {f"generator-{i}": g.pid for i, g in enumerate(gens)})
        if profile:
            out = Path(tempfile.gettempdir()) / f"push_sends-profile-{push_pid}-{int(idem)}.txt"
            spy = subprocess.Popen(
                [
                    profile,
                    "record",
                    "-p",
                    str(push_pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(seconds)
        cpu = watch.stop()
        results = []
        for g in gens:
            assert g.stdout is not None
            line = g.stdout.readline()
            if not line:
                raise SystemExit("a load generator died without a result")
            results.append(json.loads(line))
            g.wait(30)
        if spy is not None:
            spy.wait(60)
    finally:
        for g in gens:
            if g.poll() is None:
                g.kill()
                g.wait()
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "rate": sum(r["sends"] for r in results) / seconds,
        "p50": pct(latencies, 0.50),
        "p99": pct(latencies, 0.99),
        "statuses": statuses,
        "errors": [r["error"] for r in results if r["error"]] + [f for r in results for f in r["failed"]],
        "cpu": cpu,
        "profile": str(Path(tempfile.gettempdir()) / f"push_sends-profile-{push_pid}-{int(idem)}.txt")
        if profile
        else None,
    }


def top_functions(raw: Path, n: int = 25) -> str:
    """py-spy's raw (collapsed) stacks: the functions with the most samples on the stack, self and total."""
    if not raw.exists():
        return "  (no profile written: py-spy could not attach?)"
    total = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        for f in {re.sub(r":\d+\)$", ")", f) for f in frames}:  # a function once, whichever its lines
            inclusive[f] = inclusive.get(f, 0) + c
        own[frames[-1]] = own.get(frames[-1], 0) + c
    if not total:
        return "  (no samples)"
    packages: dict[str, int] = {}
    for f, c in own.items():
        where = f.rpartition(" (")[2]
        package = where.split("/")[0].split(".py")[0].split(":")[0] or "(native)"
        packages[package] = packages.get(package, 0) + c
    lines = [
        f"  {total} samples; self time by package: "
        + ", ".join(f"{k} {100 * c / total:.0f}%" for k, c in sorted(packages.items(), key=lambda kv: -kv[1])[:12])
    ]
    lines.append("  self time by function:")
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"    {100 * c / total:5.1f}%  {f}")
    lines.append("  on the stack (inclusive), the push code's functions (a coroutine's share: its resumptions):")
    ours = [(f, c) for f, c in inclusive.items() if "mpaas/" in f and "mpaas/cli.py" not in f and "service.py" not in f]
    for f, c in sorted(ours, key=lambda kv: -kv[1])[:n]:
        lines.append(f"    {100 * c / total:5.1f}%  {f}")
    return "\n".join(lines)


def perf_test(
    java: list[str],
    kafka: str,
    topic: str,
    records: int,
    size_or_file: int | Path,
    props: list[str],
    broker_pid: int | None,
) -> dict[str, Any]:
    args = [
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--throughput",
        "-1",
    ]
    if isinstance(size_or_file, Path):
        args += ["--payload-file", str(size_or_file)]
    else:
        args += ["--record-size", str(size_or_file)]
    args += ["--producer-props", f"bootstrap.servers={kafka}", *props]
    broker0, busy0, t0 = cpu_seconds(broker_pid) if broker_pid else 0.0, machine_busy(), time.monotonic()
    proc = subprocess.Popen(pinned(1, [*java, *args]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - t0
    for line in reversed(out.splitlines()):
        m = SUMMARY.match(line.strip())
        if m:
            g = m.groups()
            return {
                "records": int(g[0]),
                "rps": float(g[1]),
                "p50": int(g[5]),
                "p99": int(g[7]),
                "elapsed": elapsed,
                "broker": (cpu_seconds(broker_pid) - broker0) / elapsed if broker_pid else None,
                "machine": (machine_busy() - busy0) / elapsed,
            }
    raise SystemExit(f"no summary line from ProducerPerformance ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")


def cleanup_redis(redis_url: str, prefix: str) -> int:
    import redis

    r = redis.Redis.from_url(redis_url)
    n = 0
    for pattern in (f"{prefix}*", f"push:nonce:{APP}/{WS}:*"):
        batch = []
        for k in r.scan_iter(match=pattern, count=5000):
            batch.append(k)
            if len(batch) >= 5000:
                n += r.unlink(*batch)
                batch = []
        if batch:
            n += r.unlink(*batch)
    return n


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--generator":
        generator_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--batch", type=int, default=500, help="sends per call: >1 uses /v1/push/messages/batch")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections, all generators")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes (on core 0)")
    parser.add_argument("--idempotency-seconds", type=float, default=10, help="0: no idempotency-key run")
    parser.add_argument("--perf-records", type=int, default=0, help="records of each perf test (0: ~15 s worth)")
    parser.add_argument("--profile", action="store_true", help="py-spy the push process while it is loaded")
    args = parser.parse_args()
    BATCH[0] = max(args.batch, 1)
    redis_url, kafka = need_env()
    libs = kafka_libs()
    if not shutil.which("java"):
        raise SystemExit("needs java (the Kafka perf test)")
    spy = None
    if args.profile:
        spy = (
            os.environ.get("PY_SPY")
            or shutil.which("py-spy")
            or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        )
        if not spy:
            raise SystemExit("--profile needs py-spy: on PATH, or PY_SPY=/path/to/py-spy (pip install py-spy)")
    run = uuid.uuid4().hex[:8]
    prefix = f"bench{run}:"
    sends_topic, perf_topic, perf_topic2 = (
        f"bench-push-sends-{run}",
        f"bench-push-perf-{run}",
        f"bench-push-perf2-{run}",
    )
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-push-"))
    push: subprocess.Popen[bytes] | None = None
    broker_pid = None
    with contextlib.suppress(OSError, ValueError):
        broker_pid = int(Path(os.environ.get("MPAAS_TEST_RUN", ROOT / ".testenv"), "kafka.pid").read_text())
        Path(f"/proc/{broker_pid}/stat").read_text()
    redis_pid = None
    with contextlib.suppress(OSError, ValueError):
        redis_pid = int(Path(os.environ.get("MPAAS_TEST_RUN", ROOT / ".testenv"), "redis.pid").read_text())
        Path(f"/proc/{redis_pid}/stat").read_text()
    try:
        asyncio.run(topics(kafka, [sends_topic, perf_topic, perf_topic2], []))
        records = send_records(1000)
        size = len(records[0])
        write_config(tmp)
        port = free_port()
        env = {
            **os.environ,
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_CONFIG_SOURCE": "dir",
            "MPAAS_CONFIG_DIR": str(tmp),
            "MPAAS_REDIS_URL": redis_url,
            "MPAAS_REDIS_PREFIX": prefix,
            "MPAAS_LINK_REDIS_PREFIX": f"benchlink{run}:",
            "MPAAS_KAFKA_URL": f"kafka://{kafka}",
            "MPAAS_SENDS_TOPIC": sends_topic,
            "MPAAS_VENDOR_TOPIC": f"bench-push-vendor-{run}",
            "MPAAS_FANOUT_GROUP": f"bench-fanout-{run}",
            "MPAAS_SENDER_GROUP": f"bench-senders-{run}",
            "MPAAS_FANOUT": "false",
            "MPAAS_SENDERS": "false",
            "MPAAS_SCHEDULER": "false",
            "MPAAS_LOG_LEVEL": "WARNING",
        }
        log = tmp / "push.log"
        with log.open("wb") as out:
            push = subprocess.Popen(
                pinned(1, [str(Path(sys.executable).parent / "mpaas"), "push"]),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_ready(f"http://127.0.0.1:{port}", push, log)
        pids = (
            {"push": push.pid}
            | ({"broker": broker_pid} if broker_pid else {})
            | ({"redis": redis_pid} if redis_pid else {})
        )
        print(
            f"push send record: {size} bytes (PushMessage.to_json()); target all; {BATCH[0]} per call; "
            f"{args.concurrency} connections "
            f"from {args.generators} generator process(es) on core 0, push on core 1; {os.cpu_count()} cores"
        )
        plain = load(
            port, args.generators, args.concurrency, args.warmup, args.seconds, False, pids, spy, push.pid, tmp
        )
        idem = None
        if args.idempotency_seconds > 0:
            idem = load(
                port,
                args.generators,
                args.concurrency,
                min(args.warmup, 2),
                args.idempotency_seconds,
                True,
                pids,
                spy,
                push.pid,
                tmp,
            )
        if push.poll() is not None:
            raise SystemExit(f"mpaas push exited during the run:\n{log.read_text(errors='replace')[-3000:]}")
        push.send_signal(signal.SIGTERM)
        try:
            push.wait(20)
        except subprocess.TimeoutExpired:
            push.kill()
            push.wait()
        # Kafka's producer, alone on the same core, on the same broker.
        log4j = tmp / "log4j2.properties"
        log4j.write_text(LOG4J)
        java = [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
        ]
        n = args.perf_records
        if not n:
            probe = perf_test(java, kafka, perf_topic, 200_000, size, ["acks=all"], broker_pid)
            n = max(int(probe["rps"] * 15), 200_000)
        perf = perf_test(java, kafka, perf_topic, n, size, ["acks=all"], broker_pid)
        payloads = tmp / "payloads.txt"
        payloads.write_bytes(b"\n".join(records))
        perf2 = perf_test(java, kafka, perf_topic2, n, payloads, PRODUCER_PROPS, broker_pid)

        def cpu_line(c: dict[str, float]) -> str:
            gens = sum(v for k, v in c.items() if k.startswith("generator"))
            ours = c.get("push", 0) + gens + c.get("broker", 0) + c.get("redis", 0)
            return (
                f"CPU (cores): push {c.get('push', 0):.2f}, generators {gens:.2f}, broker {c.get('broker', 0):.2f}, "
                f"redis {c.get('redis', 0):.2f}; the machine {c['machine']:.2f} of {os.cpu_count()}, "
                f"{max(c['machine'] - ours, 0):.2f} by other processes"
            )

        def status_note(r: dict[str, Any]) -> str:
            other = {k: v for k, v in r["statuses"].items() if k != "202"}
            return f"; other answers {other}: {r['errors'][:2]}" if other or r["errors"] else ""

        ratio = plain["rate"] / perf["rps"]
        print()
        print(
            f"push: {plain['rate']:,.0f} sends/s accepted (202) over {args.seconds:.0f} s; latency p50 "
            f"{plain['p50'] * 1000:.1f} ms, p99 {plain['p99'] * 1000:.1f} ms{status_note(plain)}"
        )
        print(f"  {cpu_line(plain['cpu'])}")
        if plain["cpu"].get("push"):
            print(f"  push CPU per send: {plain['cpu']['push'] / max(plain['rate'], 1) * 1e6:.0f} us")
        if idem is not None:
            print(
                f"push with an Idempotency-Key each: {idem['rate']:,.0f} sends/s over {args.idempotency_seconds:.0f} s "
                f"({idem['rate'] / plain['rate']:.2f}x without); p50 {idem['p50'] * 1000:.1f} ms, "
                f"p99 {idem['p99'] * 1000:.1f} ms{status_note(idem)}"
            )
            print(f"  {cpu_line(idem['cpu'])}")
        print(
            f"Kafka perf-test (ProducerPerformance, {perf['records']:,} records of {size} bytes, acks=all, core 1): "
            f"{perf['rps']:,.0f} records/s; p50 {perf['p50']} ms, p99 {perf['p99']} ms; broker "
            f"{perf['broker'] or 0:.2f} cores, machine {perf['machine']:.2f}"
        )
        print(
            f"  with the platform producer's settings ({' '.join(PRODUCER_PROPS)}) and real send records: "
            f"{perf2['rps']:,.0f} records/s; p50 {perf2['p50']} ms, p99 {perf2['p99']} ms"
        )
        print(
            f"ratio push / perf-test: {ratio:.3f} (target >= 0.3: {'met' if ratio >= 0.3 else 'NOT met'}); "
            f"against the platform-settings run {plain['rate'] / perf2['rps']:.3f}"
            + (f"; with idempotency keys {idem['rate'] / perf['rps']:.3f}" if idem else "")
        )
        if spy:
            print(f"\nprofile of the push process, plain sends (py-spy; its stacks in {plain['profile']}):")
            print(top_functions(Path(plain["profile"])))
        return 0
    finally:
        if push is not None and push.poll() is None:
            push.kill()
            push.wait()
        with contextlib.suppress(Exception):
            asyncio.run(topics(kafka, [], [sends_topic, perf_topic, perf_topic2]))
        with contextlib.suppress(Exception):
            cleanup_redis(redis_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
