"""Analytics ingestion into Kafka, against Kafka's own producer perf test on the same broker.

    .venv/bin/python hack/bench/analytics_ingest.py [--seconds 15] [--clients 4] [--batch 100]
        [--records 300000] [--gzip] [--realtime] [--rounds 1] [--bootstrap HOST:PORT] [--budget 900]

Starts, all on 127.0.0.1 and stopped by PID at the end (temp dirs removed):

- a single-node KRaft Kafka of its own on free ports, from the jars the test
  environment caches (hack/testenv/fetch-kafka.sh, the version of
  hack/versions.env), set up as hack/testenv/up.sh does; or none with
  `--bootstrap`, which uses a running broker (the benchmark's topics are
  deleted there at the end);
- Kafka's ProducerPerformance (`--throughput -1`) with the platform producer's
  settings (stores/eventlog.py: acks=all, idempotent, gzip, linger.ms=2), its
  payloads real event records as the analytics component writes them;
- `mpaas analytics` reading one MpaasGateway (app SHOP/prod) from a folder,
  producing to a topic of its own, loaded by `--clients` processes that POST
  `/v1/events` uploads of `--batch` events each on keep-alive connections
  (http.client) for `--seconds`; each event with an id of its own. The
  real-time consumer, which reads the same topic in the same process, stays
  off unless `--realtime`: ingestion is measured alone.

Both topics have 3 partitions. Events per second count the `accepted` of the
answers; at the end the benchmark reads the whole topic (a record holds an
upload's events of one device, as JSON lines), checks it holds at least that
many events, and checks a few of them. Server CPU is
utime + stime of the analytics process from /proc; the perf test's is its
JVM's (start-up included). With `--rounds` the two runs alternate and the
median round of each is reported: on a shared machine the load drifts over
minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import http.client
import json
import logging
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_stacks import run_clients  # noqa: E402  (the same forked load clients)

from mpaas.analytics.events import Event  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "default"},
    "spec": {
        "apps": [{"appId": "SHOP", "workspaceId": "prod"}],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}
# The platform producer's settings (components/mpaas/stores/eventlog.py, KafkaEventLog.start).
PRODUCER_PROPS = ["acks=all", "enable.idempotence=true", "compression.type=zstd", "linger.ms=2"]
SUMMARY = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th\.$"
)
LOG4J = """\
rootLogger.level=WARN
rootLogger.appenderRef.stderr.ref=STDERR
appender.stderr.type=Console
appender.stderr.name=STDERR
appender.stderr.target=SYSTEM_ERR
appender.stderr.layout.type=PatternLayout
appender.stderr.layout.pattern=[%d] %p %m (%c)%n
"""
PARTITIONS = 3  # of each topic, as num.partitions of hack/testenv/up.sh
SEQ = b"########"  # an upload's sequence number goes here in each event id
NAMES = ("app_launch", "screen_view", "tap", "scroll", "add_to_cart", "purchase", "app_background")
SCREENS = ("home", "search", "product", "cart", "checkout", "profile", "settings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live children so far."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    total = 0
    for p in (pid, *map(int, children)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- events ----------------------------------------------------------------------------------------


def sample_event(rnd: random.Random, ts: int) -> dict[str, Any]:
    name = rnd.choice(NAMES)
    props: dict[str, Any] = {"screen": rnd.choice(SCREENS), "session": f"s-{rnd.randrange(10**6)}"}
    if name == "app_launch":
        props.update(cold=rnd.random() < 0.3, startMs=rnd.randrange(200, 3000))
    elif name in ("add_to_cart", "purchase"):
        props.update(sku=f"SKU-{rnd.randrange(10**5):05d}", amount=rnd.randrange(100, 100_000) / 100)
    else:
        props.update(ms=rnd.randrange(5000))
    return {"event": name, "ts": ts + rnd.randrange(1000), "props": props}


def upload_templates(run: str, client: int, batch: int, ts: int, count: int = 16) -> list[bytes]:
    """Upload bodies of `batch` events; SEQ in every id is replaced by the upload's number when sent."""
    rnd = random.Random(client)
    out = []
    for k in range(count):
        device = f"dev-{client:02d}-{k:02d}"
        items = []
        for i in range(batch):
            e = sample_event(rnd, ts)
            e["id"] = f"{run}-{client:02d}-{SEQ.decode()}-{i:04d}"
            items.append(e)
        doc = {"appId": "SHOP", "workspaceId": "prod", "deviceId": device, "userId": f"u-{device}", "events": items}
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def payload_lines(templates: list[list[bytes]], received: int) -> list[bytes]:
    """The uploads' events as the analytics component writes them to the log (Event.record values)."""
    out = []
    for upload in (t for client in templates for t in client):
        doc = json.loads(upload.replace(SEQ, b"%08d" % 0))
        for e in doc["events"]:
            event = Event(
                "SHOP", "prod", "native", e["event"], doc["deviceId"], doc["userId"], e["ts"], e["id"], e["props"]
            )
            out.append(event.record(received)[1])
    return out


# --- Kafka -----------------------------------------------------------------------------------------


def kafka_libs() -> Path:
    versions = (ROOT / "hack" / "versions.env").read_text()
    version = re.search(r"^KAFKA_VERSION=(\S+)", versions, re.M).group(1)  # type: ignore[union-attr]
    cache = Path(os.environ.get("MPAAS_CACHE", str(Path.home() / ".cache" / "mpaas-testenv")))
    libs = cache / f"kafka-{version}" / "libs"
    if not (libs.parent / ".complete").exists():
        raise SystemExit(f"no Kafka {version} jars in {libs}: run hack/testenv/fetch-kafka.sh")
    return libs


class Java:
    def __init__(self, libs: Path, tmp: Path):
        self.log4j = tmp / "log4j2.properties"
        self.log4j.write_text(LOG4J)
        self.base = ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={self.log4j}"]
        self.base += ["-cp", f"{libs}/*"]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done


def start_broker(java: Java, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A single-node KRaft broker as hack/testenv/up.sh sets it up, on free ports, data in `tmp`."""
    port, controller = free_port(), free_port()
    data = tmp / "kafka"
    data.mkdir()
    props = data / "server.properties"
    props.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}/data
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
""")
    cluster = ""
    while not cluster or cluster.startswith("-"):  # Kafka's Uuid text: 16 random bytes, base64url, unpadded
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    java.run("kafka.tools.StorageTool", "format", "--standalone", "-t", cluster, "-c", str(props))
    log = data / "broker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*java.base, "kafka.Kafka", str(props)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, f"127.0.0.1:{port}", log


def wait_kafka(bootstrap: str, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    async def ask() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "Unable connect" until the broker listens
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(ask())
            return
        except Exception as e:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the broker exited ({proc.returncode}):\n{tail(log) if log else ''}") from e
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka at {bootstrap} not ready after {timeout:.0f} s: {e!r}") from e
            time.sleep(0.5)


@dataclass
class PerfResult:
    records: int
    rps: float
    mb_s: float
    avg_ms: float
    max_ms: float
    p50: int
    p95: int
    p99: int
    p999: int
    cpu_s: float  # the perf test JVM's CPU time, start-up included
    broker_cpu_s: float | None


def perf_test(java: Java, bootstrap: str, topic: str, records: int, payload: Path, broker: int | None) -> PerfResult:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_before = cpu_seconds(broker) if broker else 0.0
    done = java.run(
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--throughput",
        "-1",
        "--payload-file",
        str(payload),
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        *PRODUCER_PROPS,
        timeout=600,
    )
    broker_cpu = cpu_seconds(broker) - broker_before if broker else None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in reversed(done.stdout.splitlines()):
        m = SUMMARY.match(line.strip())
        if m:
            g = m.groups()
            p50, p95, p99, p999 = map(int, g[5:])
            return PerfResult(
                int(g[0]), float(g[1]), float(g[2]), float(g[3]), float(g[4]), p50, p95, p99, p999, cpu, broker_cpu
            )
    raise RuntimeError(f"no summary line in ProducerPerformance's output:\n{done.stdout[-3000:]}")


def consumed(bootstrap: str, topic: str, run: str, n: int = 5) -> tuple[int, list[dict[str, Any]]]:
    """(events the topic holds, the first `n` events of the benchmark's run). A record holds an upload's events
    of one device, as JSON lines: the whole topic is read to count them."""

    async def read() -> tuple[int, list[dict[str, Any]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            ends, starts = await consumer.end_offsets(parts), await consumer.beginning_offsets(parts)
            total = sum(ends[p] - starts[p] for p in parts)
            await consumer.seek_to_beginning(*parts)
            records, events, got = 0, 0, []
            deadline = time.monotonic() + 120
            while records < total and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=1000, max_records=500)).values():
                    for m in msgs:
                        records += 1
                        lines = (m.value or b"").split(b"\n")
                        events += len(lines)
                        if len(got) < n:
                            got += [json.loads(line) for line in lines if run.encode() in line][: n - len(got)]
            return events, got
        finally:
            await consumer.stop()

    return asyncio.run(read())


# --- the platform ----------------------------------------------------------------------------------


def client(
    port: int, templates: list[bytes], batch: int, gzip_level: int, start: float, seconds: float, seq0: int
) -> dict[str, Any]:
    """POSTs uploads on one keep-alive connection until the end; counts what the answers accept."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if gzip_level:
        headers["Content-Encoding"] = "gzip"
    latencies: list[float] = []
    accepted = uploads = partial = busy = sent_bytes = 0
    seq = seq0
    end = start + seconds
    while time.time() < start:
        time.sleep(0.002)
    while time.time() < end:
        body = templates[seq % len(templates)].replace(SEQ, b"%08d" % seq)
        seq += 1
        if gzip_level:
            body = gzip.compress(body, gzip_level)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/events", body, headers)
        r = conn.getresponse()
        data = r.read()
        latencies.append(time.perf_counter() - t0)
        sent_bytes += len(body)
        if r.status == 200:
            n = json.loads(data)["accepted"]
            accepted += n
            uploads += 1
            partial += n != batch
        elif r.status == 429:  # the log was slow: wait as told, as a client would
            busy += 1
            time.sleep(max(0.0, min(float(r.getheader("Retry-After") or 1), end - time.time())))
        else:
            raise RuntimeError(f"upload answered {r.status}: {data[:300]!r}")
    conn.close()
    return {
        "accepted": accepted,
        "uploads": uploads,
        "partial": partial,
        "busy": busy,
        "bytes": sent_bytes,
        "latencies": latencies,
        "end": time.time(),
    }


def realtime_lag(port: int, settle_seconds: float = 5.0) -> str:
    """The real-time lag (upload accepted -> aggregates updated) from the histogram analytics exports, after
    letting the consumer catch up: its p50/p99 bucket bounds and how many events it measured."""
    time.sleep(settle_seconds)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    buckets = [
        (float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2)))
        for m in re.finditer(r'^mpaas_analytics_realtime_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)
    ]
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return "real-time lag: no event measured"

    def quantile(q: float) -> str:
        bound = next(b for b, n in buckets if n >= q * total)
        return f"<= {bound:g} s" if bound != float("inf") else "> the largest bucket"

    return f"real-time lag over {total:.0f} events: p50 {quantile(0.5)}, p99 {quantile(0.99)} (target p99 <= 2 s)"


def start_analytics(tmp: Path, bootstrap: str, topic: str, realtime: bool) -> tuple[subprocess.Popen[bytes], int, Path]:
    config = tmp / "config"
    config.mkdir()
    (config / "apps.yaml").write_text(yaml.safe_dump(GATEWAY))
    port = free_port()
    env = {
        **os.environ,
        "MPAAS_CONFIG_SOURCE": "dir",
        "MPAAS_CONFIG_DIR": str(config),
        "MPAAS_PORT": str(port),
        "MPAAS_HOST": "127.0.0.1",
        "MPAAS_KAFKA_URL": f"kafka://{bootstrap}",
        "MPAAS_EVENTS_TOPIC": topic,
        "MPAAS_LOG_LEVEL": "WARNING",
        "MPAAS_DRAIN_SECONDS": "2",
        # Ingestion alone unless asked: the real-time consumer reads the same topic in the same process.
        "MPAAS_REALTIME": "true" if realtime else "false",
        "MPAAS_ADMIN_PORT": str(free_port()),
    }
    log = tmp / "analytics.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mpaas"), "analytics"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                c.close()
                break
            c.close()
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mpaas analytics did not get ready:\n{tail(log)}")
        time.sleep(0.2)
    return proc, port, log


def warm_up(port: int, body: bytes, batch: int, timeout: float = 60) -> int:
    """Uploads until Kafka acknowledges them (the producer connects on the first ones); events accepted."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline, ok, accepted = time.monotonic() + timeout, 0, 0
    try:
        while ok < 20:
            conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status == 200:
                got = json.loads(data)
                if got["accepted"] != batch:
                    raise RuntimeError(f"a warm-up upload was not wholly accepted: {got}")
                ok, accepted = ok + 1, accepted + batch
            elif r.status != 429:
                raise RuntimeError(f"warm-up upload answered {r.status}: {data[:300]!r}")
            elif time.monotonic() > deadline:
                raise RuntimeError("Kafka never acknowledged a warm-up upload")
            else:
                time.sleep(0.5)
    finally:
        conn.close()
    return accepted


@dataclass
class IngestResult:
    events_s: float
    uploads_s: float
    accepted: int
    uploads: int
    partial: int
    busy: int
    p50_ms: float
    p99_ms: float
    cpu_per_1000: float  # server CPU seconds per 1000 events accepted
    broker_cpu_s: float | None
    mb_s: float  # upload bodies as sent


def load(
    args: argparse.Namespace, port: int, pid: int, templates: list[list[bytes]], broker: int | None, seq0: int
) -> IngestResult:
    start = time.time() + 1.0
    jobs = [
        (port, templates[c], args.batch, 6 if args.gzip else 0, start, float(args.seconds), seq0)
        for c in range(args.clients)
    ]
    while time.time() < start - 0.2:
        time.sleep(0.01)
    cpu0 = cpu_seconds(pid)
    broker0 = cpu_seconds(broker) if broker else 0.0
    while time.time() < start:
        time.sleep(0.001)
    results = run_clients(client, jobs, timeout=args.seconds + 90)
    cpu = cpu_seconds(pid) - cpu0
    broker_cpu = cpu_seconds(broker) - broker0 if broker else None
    wall = max(r["end"] for r in results) - start
    lat = sorted(x for r in results for x in r["latencies"])
    accepted = sum(r["accepted"] for r in results)
    uploads = sum(r["uploads"] for r in results)
    if not accepted:
        raise RuntimeError("no event accepted")
    return IngestResult(
        accepted / wall,
        uploads / wall,
        accepted,
        uploads,
        sum(r["partial"] for r in results),
        sum(r["busy"] for r in results),
        lat[len(lat) // 2] * 1000,
        lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        cpu / accepted * 1000,
        broker_cpu,
        sum(r["bytes"] for r in results) / wall / 1e6,
    )


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=15, help="of load on the analytics process, per round")
    ap.add_argument("--clients", type=int, default=4, help="client processes, one keep-alive connection each")
    ap.add_argument("--batch", type=int, default=100, help="events per upload")
    ap.add_argument("--records", type=int, default=300_000, help="records of Kafka's perf test, per round")
    ap.add_argument("--gzip", action="store_true", help="gzip every upload (Content-Encoding: gzip)")
    ap.add_argument("--realtime", action="store_true", help="keep the real-time consumer on in the analytics process")
    ap.add_argument("--rounds", type=int, default=1, help="perf test and platform load, alternated")
    ap.add_argument("--bootstrap", help="HOST:PORT of a running broker instead of a private one")
    ap.add_argument("--budget", type=int, default=900, help="seconds the whole run may take")
    args = ap.parse_args()

    def out_of_time(*_: object) -> None:
        raise TimeoutError(f"the benchmark ran over its budget of {args.budget} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(args.budget)

    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-analytics-"))
    procs: list[subprocess.Popen[bytes]] = []
    run = uuid.uuid4().hex[:8]
    perf_topic, ingest_topic = f"bench-analytics-{run}-kafka-perf", f"bench-analytics-{run}-ingest"
    java: Java | None = None
    bootstrap = args.bootstrap
    try:
        java = Java(kafka_libs(), tmp)
        broker_pid: int | None = None
        if bootstrap is None:
            broker, bootstrap, broker_log = start_broker(java, tmp)
            procs.append(broker)
            broker_pid = broker.pid
            wait_kafka(bootstrap, 90, broker, broker_log)
        else:
            wait_kafka(bootstrap, 30, None, None)
        for topic in (perf_topic, ingest_topic):
            java.run(
                "org.apache.kafka.tools.TopicCommand",
                "--bootstrap-server",
                bootstrap,
                "--create",
                "--topic",
                topic,
                "--partitions",
                str(PARTITIONS),
                "--replication-factor",
                "1",
            )

        ts = int(time.time() * 1000)
        templates = [upload_templates(run, c, args.batch, ts) for c in range(args.clients)]
        lines = payload_lines(templates, ts + 1000)
        payload = tmp / "payload.txt"
        payload.write_bytes(b"\n".join(lines) + b"\n")
        record_bytes = sum(map(len, lines)) / len(lines)

        analytics, port, analytics_log = start_analytics(tmp, bootstrap, ingest_topic, args.realtime)
        procs.append(analytics)
        warmed = warm_up(port, templates[0][0].replace(SEQ, b"w%07d" % 0), args.batch)

        perfs: list[PerfResult] = []
        ingests: list[IngestResult] = []
        for r in range(args.rounds):
            perfs.append(perf_test(java, bootstrap, perf_topic, args.records, payload, broker_pid))
            ingests.append(load(args, port, analytics.pid, templates, broker_pid, r * 10**6))
            if analytics.poll() is not None:
                raise RuntimeError(f"mpaas analytics exited:\n{tail(analytics_log)}")
        perf = sorted(perfs, key=lambda p: p.rps)[len(perfs) // 2]
        ingest = sorted(ingests, key=lambda i: i.events_s)[len(ingests) // 2]

        held, sample = consumed(bootstrap, ingest_topic, run)
        accepted_all = warmed + sum(i.accepted for i in ingests)
        if held < accepted_all:
            raise RuntimeError(f"Kafka holds {held} events of {ingest_topic}, fewer than the {accepted_all} accepted")
        if not sample or any(e.get("app") != "SHOP" or e.get("source") != "native" for e in sample):
            raise RuntimeError(f"unexpected records in {ingest_topic}: {sample}")

        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        )
        ratio = ingest.events_s / perf.rps
        rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
        print(
            f"machine: {os.cpu_count()} cores, {cpu}; broker: "
            f"{'a private single-node KRaft Kafka' if args.bootstrap is None else bootstrap}; "
            f"records ~{record_bytes:.0f} bytes of JSON; producer {' '.join(PRODUCER_PROPS)}{rounds}"
        )
        print(
            f"Kafka perf-test (ProducerPerformance, {perf.records} records, no keys): {perf.rps:.0f} records/s "
            f"({perf.mb_s:.2f} MB/s), latency avg {perf.avg_ms:.1f} ms, p50 {perf.p50} ms, p99 {perf.p99} ms, "
            f"max {perf.max_ms:.0f} ms; JVM CPU {perf.cpu_s / perf.records * 1000:.3f} s per 1000 records "
            f"(start-up included)"
            + (f"; broker CPU {perf.broker_cpu_s / perf.records * 1000:.3f} s per 1000" if perf.broker_cpu_s else "")
        )
        print(
            f"analytics{' (real-time consumer on)' if args.realtime else ''}: {args.clients} clients x "
            f"{args.seconds} s, uploads of {args.batch}{' (gzip)' if args.gzip else ''}: "
            f"{ingest.accepted} events accepted in {ingest.uploads} uploads "
            f"({ingest.mb_s:.2f} MB/s sent), {ingest.busy} answered 429, {ingest.partial} partly accepted; "
            f"upload latency p50 {ingest.p50_ms:.1f} ms, p99 {ingest.p99_ms:.1f} ms; "
            f"server CPU {ingest.cpu_per_1000:.3f} s per 1000 events"
            + (
                f"; broker CPU {ingest.broker_cpu_s / ingest.accepted * 1000:.3f} s per 1000"
                if ingest.broker_cpu_s
                else ""
            )
        )
        print(
            f"checked: {ingest_topic} holds {held} events (accepted, warm-up included: {accepted_all}); "
            f"first of them: {sample[0]['event']} from {sample[0]['device']}, id {sample[0]['id']}"
        )
        if args.realtime:
            print(realtime_lag(port))
        print(
            f"analytics ingest: {ingest.events_s:.0f} events/s ({ingest.uploads_s:.0f} uploads/s of {args.batch}), "
            f"Kafka perf-test: {perf.rps:.0f} records/s, ratio {ratio:.2f} (target >= 0.3): "
            f"{'PASS' if ratio >= 0.3 else 'FAIL'}"
        )
        return 0
    finally:
        signal.alarm(0)
        for p in reversed(procs):  # analytics first, then the broker
            stop(p)
        if args.bootstrap is not None and java is not None:
            try:  # a shared broker keeps nothing of the run
                java.run(
                    "org.apache.kafka.tools.TopicCommand",
                    "--bootstrap-server",
                    args.bootstrap,
                    "--delete",
                    "--topic",
                    f"bench-analytics-{run}-.*",
                    timeout=60,
                )
            except Exception as e:
                print(f"could not delete the benchmark's topics: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
