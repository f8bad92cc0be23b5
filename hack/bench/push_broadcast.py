"""Push: one broadcast to 100 000 devices connected to link, from the API call to each device's receipt (target:
p99 at most 1 s).

    export MPAAS_RUN=/work/main/.testenv; source $MPAAS_RUN/env.sh      # bash hack/testenv/up.sh stores
    .venv/bin/python hack/bench/push_broadcast.py [--devices 100000] [--servers 6] [--concurrency 200]

Uses the test environment's Kafka (MPAAS_TEST_KAFKA; the benchmark's topics are deleted at the end) and, as
hack/bench/link_connections.py does, starts on 127.0.0.1 and stops by PID at the end: a Redis of its own (no
persistence; link's inboxes, routes and bus, and push's state), `--servers` link processes (the Link channel
and token key of link_connections.py), its load generators (link_connections.py --generator: `--devices`
authenticated idle connections, 9 000 a process, each noting when its first broadcast frame came), and one
`mpaas push` (the same app with a server key; the fan-out on, the senders and the scheduler off).

Before the clock: an earlier broadcast, before any device connects (the app has broadcast before, so its
devices connect holding the newest number and are sent the next one at once; `--first-broadcast` skips it:
then each device is told and pulls it, as for an app's first broadcast ever), and, once the devices are up,
a send that reaches nobody (target all, filtered to iOS: no device is registered), each until its status is
Done: the fan-out's consumer has joined and every connection is warm.
Then `POST /v1/push/messages` {"target": {"type": "all"}, "notification": ...}, signed, timestamped at the
start of the call: accepted into the sends topic (acks=all) before the 202, read by the fan-out, appended once
to the app's link broadcast stream and announced on the link bus, fanned out by every link process to its
devices. Prints the p50/p99/max from the start of the API call to each device's receipt and its ratio to the
1 s target; on the way, when the 202 came and when the broadcast's notice came on the link bus (this process
subscribes to it, as the link processes do), and the CPU each side used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import link_connections as lc  # noqa: E402  (its Link channel, load generators and helpers)

APP, WS = lc.APP, lc.WS  # the app link_connections' generators connect as
SERVER_KEY = b"bench-push-server-api-key-32-bytes!!"
NOTIFICATION = {"title": "Flash sale", "body": "20% off everything until midnight", "data": {"campaign": "spring"}}
START_ENV = "export MPAAS_RUN=/work/main/.testenv; bash hack/testenv/up.sh stores; source $MPAAS_RUN/env.sh"


def need_kafka() -> str:
    kafka = os.environ.get("MPAAS_TEST_KAFKA", "")
    if not kafka:
        raise SystemExit(f"MPAAS_TEST_KAFKA not set: start the test environment:\n  {START_ENV}")
    host, _, port = kafka.partition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise SystemExit(f"Kafka at {kafka} does not answer ({e!r}): start it:\n  {START_ENV}") from None
    return kafka


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


def push_config(folder: Path) -> None:
    import yaml

    docs = [
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "MpaasGateway",
            "metadata": {"name": "gw", "namespace": "bench"},
            "spec": {"apps": [{"appId": APP, "workspaceId": WS, "credentialsSecretRef": {"name": "bench-server"}}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-server", "namespace": "bench"},
            "data": {"serverApiKey": base64.b64encode(SERVER_KEY).decode()},
        },
    ]
    (folder / "push.yaml").write_text(yaml.safe_dump_all(docs))


class Push:
    def __init__(self, url: str):
        import httpx

        from mpaas.push.auth import sign_headers

        self.url, self.sign = url, sign_headers
        self.http = httpx.Client(timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = self.sign(SERVER_KEY, method, path, "", APP, WS, raw)
        r = self.http.request(method, self.url + path, content=raw, headers=headers)
        if r.status_code not in (200, 202):
            raise SystemExit(f"{method} {path} answered {r.status_code}: {r.text[:500]}")
        return r.json()

    def done(self, message_id: str, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            st = self.call("GET", f"/v1/push/messages/{message_id}")
            if st["state"] == "Done" or time.monotonic() > deadline:
                return st
            time.sleep(0.1)


class BusWatch:
    """Subscribes to link's broadcast channel, as each link process does: when a broadcast's notice came."""

    def __init__(self, redis_url: str, channel: str):
        import redis

        self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.seen: list[tuple[float, int]] = []  # (when it came, the sent_ms it carries)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                m = self.pubsub.get_message(timeout=0.2)
                if m and m.get("type") == "message":
                    now = time.time()
                    for line in m["data"].decode().split("\n"):
                        parts = line.split("\t")
                        if parts[0] == "B" and len(parts) == 7:
                            self.seen.append((now, int(parts[5])))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(Exception):
            self.pubsub.close()


class MachineWatch:
    """The machine's busy CPU-seconds (/proc/stat), sampled every 50 ms: how busy it was over any window."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def busy() -> float:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.busy()))
            time.sleep(0.05)

    def between(self, t0: float, t1: float) -> float:
        """CPU-seconds the whole machine used between t0 and t1 (the nearest samples)."""
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        return b[1] - a[1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def stats(generators: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    welcomed = received = 0
    for g in generators:
        assert g.stdin is not None and g.stdout is not None
        g.stdin.write(b"stats\n")
        g.stdin.flush()
        s = json.loads(g.stdout.readline())
        welcomed += s["welcomed"]
        received += s["received"][1]
    return welcomed, received


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--servers", type=int, default=6, help="link processes")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight per generator")
    parser.add_argument("--wait", type=float, default=30, help="seconds to wait for every device's receipt")
    parser.add_argument(
        "--first-broadcast",
        action="store_true",
        help="the app's first broadcast ever: no earlier one before the devices connect, so each is told (NOTIFY) "
        "and pulls it, instead of being sent it at once",
    )
    args = parser.parse_args()
    per_server = math.ceil(args.devices / args.servers)
    if per_server > 19000:
        parser.error(
            f"{per_server} connections a link process: a process may open at most 20 000 files here; raise --servers"
        )
    kafka = need_kafka()
    if not shutil.which("redis-server"):
        raise SystemExit("needs redis-server (Debian package redis-server)")
    run = uuid.uuid4().hex[:8]
    sends_topic, vendor_topic = f"bench-push-bcast-sends-{run}", f"bench-push-bcast-vendor-{run}"
    procs: list[subprocess.Popen[bytes]] = []
    generators: list[subprocess.Popen[bytes]] = []
    bus: BusWatch | None = None
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-push-broadcast-"))
    mpaas = str(Path(sys.executable).parent / "mpaas")
    try:
        asyncio.run(topics(kafka, [sends_topic, vendor_topic], []))
        redis_port = lc.free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        lc.config(tmp)  # the Link channel and its token key
        push_config(tmp)
        servers = []
        for i in range(args.servers):
            http_port, ws_port = lc.free_port(), lc.free_port()
            env = {
                **os.environ,
                "MPAAS_PORT": str(http_port),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_LINK_PORT": str(ws_port),
                "MPAAS_CONFIG_SOURCE": "dir",
                "MPAAS_CONFIG_DIR": str(tmp),
                "MPAAS_REDIS_URL": redis_url,
                # link refuses connections past a tenth of this waiting for their HELLO: room for the handshakes
                # in flight (--concurrency a generator) when --devices is small
                "MPAAS_LINK_MAX_CONNECTIONS": str(max(per_server + 100, 20 * args.concurrency)),
                "MPAAS_LOG_LEVEL": "WARNING",
                "POD_NAME": f"link-{i}",
            }
            log = (tmp / f"link-{i}.log").open("wb")
            p = subprocess.Popen([mpaas, "link"], env=env, stdout=log, stderr=subprocess.STDOUT)
            procs.append(p)
            servers.append((p, f"http://127.0.0.1:{http_port}", f"ws://127.0.0.1:{ws_port}/v1/link"))
        push_port = lc.free_port()
        push_env = {
            **os.environ,
            "MPAAS_PORT": str(push_port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_CONFIG_SOURCE": "dir",
            "MPAAS_CONFIG_DIR": str(tmp),
            "MPAAS_REDIS_URL": redis_url,
            "MPAAS_KAFKA_URL": f"kafka://{kafka}",
            "MPAAS_SENDS_TOPIC": sends_topic,
            "MPAAS_VENDOR_TOPIC": vendor_topic,
            "MPAAS_FANOUT_GROUP": f"bench-fanout-{run}",
            "MPAAS_SENDER_GROUP": f"bench-senders-{run}",
            "MPAAS_FANOUT": "true",
            "MPAAS_SENDERS": "false",
            "MPAAS_SCHEDULER": "false",
            "MPAAS_LOG_LEVEL": "WARNING",
        }
        push_log = tmp / "push.log"
        push_proc = subprocess.Popen(
            [mpaas, "push"], env=push_env, stdout=push_log.open("wb"), stderr=subprocess.STDOUT
        )
        procs.append(push_proc)
        for _, http, _ in servers:
            lc.wait_ready(http)
        lc.wait_ready(f"http://127.0.0.1:{push_port}")
        push = Push(f"http://127.0.0.1:{push_port}")
        warm = {"target": {"type": "all", "filter": {"platforms": ["ios"]}}, "notification": {"title": "warm-up"}}
        if not args.first_broadcast:  # the app has broadcast before: its devices connect with its newest number
            warm = {"target": {"type": "all"}, "notification": {"title": "an earlier broadcast"}}
        st = push.done(push.call("POST", "/v1/push/messages", warm)["messageId"], 60)
        if st["state"] != "Done":
            raise SystemExit(f"the warm-up send never got done (the fan-out?): {st}\n{push_log.read_text()[-2000:]}")
        warm = {"target": {"type": "all", "filter": {"platforms": ["ios"]}}, "notification": {"title": "warm-up"}}
        # The devices: link_connections' generators, 9 000 connections a process.
        first, started = 0, time.monotonic()
        for s, (_, _, ws) in enumerate(servers):
            left = min(per_server, args.devices - s * per_server)
            while left > 0:
                n = min(lc.PER_GENERATOR, left)
                generators.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "link_connections.py"),
                            "--generator",
                            ws,
                            str(first),
                            str(n),
                            str(args.concurrency),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                )
                first += n
                left -= n
        ready = failed = 0
        for g in generators:
            assert g.stdout is not None
            line = g.stdout.readline()
            if not line:
                raise SystemExit("a load generator exited before its connections were up")
            r = json.loads(line)
            ready += r["ready"]
            failed += r["failed"]
        print(
            f"{ready} devices connected and authenticated ({failed} failed) over {args.servers} link processes "
            f"in {time.monotonic() - started:.0f} s"
        )
        bus = BusWatch(redis_url, "link:pod:broadcasts")
        st = push.done(push.call("POST", "/v1/push/messages", warm)["messageId"], 30)  # everything warm again
        time.sleep(1)
        link_cpu0 = [lc.cpu_seconds(p.pid) for p, _, _ in servers]
        push_cpu0, gen_cpu0 = lc.cpu_seconds(push_proc.pid), [lc.cpu_seconds(g.pid) for g in generators]
        redis_cpu0 = lc.cpu_seconds(procs[0].pid)
        body = {"target": {"type": "all"}, "notification": NOTIFICATION}
        machine = MachineWatch()
        time.sleep(0.2)
        t0 = time.time()
        sent = push.call("POST", "/v1/push/messages", body)
        api = time.time() - t0
        time.sleep(2)
        deadline = time.monotonic() + args.wait
        received = 0
        while time.monotonic() < deadline:
            _, received = stats(generators)
            if received >= ready:
                break
            time.sleep(1)
        link_cpu = sum(lc.cpu_seconds(p.pid) - c for (p, _, _), c in zip(servers, link_cpu0, strict=True))
        push_cpu, redis_cpu = lc.cpu_seconds(push_proc.pid) - push_cpu0, lc.cpu_seconds(procs[0].pid) - redis_cpu0
        gen_cpu = sum(lc.cpu_seconds(g.pid) - c for g, c in zip(generators, gen_cpu0, strict=True))
        latencies = lc.collect(generators, 1, t0)
        early = sum(1 for x in latencies if x < 0)
        if early:
            print(f"warning: {early} devices received a broadcast before the call (an earlier one?)")
        st = push.call("GET", f"/v1/push/messages/{sent['messageId']}")
        print(
            f"broadcast {sent['messageId']}: the API answered {sent['state']} in {api * 1000:.0f} ms (in Kafka, "
            f"acks=all); its status now {st['state']} {st['counts']}"
        )
        notice = next(((at, ms) for at, ms in bus.seen if at >= t0), None)
        if notice:
            print(
                f"  its notice on the link bus {(notice[0] - t0) * 1000:.0f} ms after the call started (published "
                f"{notice[1] - t0 * 1000:.0f} ms after it: the fan-out read it from Kafka, appended it to the "
                "broadcast stream)"
            )
        if not latencies:
            print(f"received by nobody of {ready}")
            return 1
        n = len(latencies)
        p50, p99 = latencies[n // 2], latencies[max(math.ceil(n * 0.99) - 1, 0)]
        print(
            f"delivery to {ready} devices, from the start of the API call: received by {n}; p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
        print(f"  p99 / 1 s target: {p99:.2f} ({'met' if p99 <= 1 and n >= ready else 'NOT met'})")
        if notice:
            bus_t = notice[0] - t0
            print(
                f"  from the bus notice: p50 {(p50 - bus_t) * 1000:.0f} ms, p99 {(p99 - bus_t) * 1000:.0f} ms, "
                f"max {(latencies[-1] - bus_t) * 1000:.0f} ms (link's part)"
            )
        cores = os.cpu_count() or 1
        print(
            f"  CPU: link processes {link_cpu:.2f} s ({link_cpu / n * 1e6:.1f} us a device), push {push_cpu:.2f} s, "
            f"redis {redis_cpu:.2f} s, load generators {gen_cpu:.2f} s; on {cores} cores these alone take "
            f"{(link_cpu + push_cpu + redis_cpu + gen_cpu) / cores * 1000:.0f} ms at the least"
        )
        busy = machine.between(t0, t0 + latencies[-1])
        ours = link_cpu + push_cpu + redis_cpu + gen_cpu
        print(
            f"  the machine from the call to the last receipt: {busy:.2f} CPU-s of {cores * latencies[-1]:.2f}; "
            f"other processes ~{max(busy - ours, 0):.2f} CPU-s (ours counted until the end of the wait)"
        )
        machine.close()
        return 0 if n >= ready else 1
    finally:
        if bus is not None:
            bus.close()
        for p in [*generators, *procs]:
            if p.poll() is None:
                p.terminate()
        for p in [*generators, *procs]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with contextlib.suppress(Exception):
            asyncio.run(topics(kafka, [], [sends_topic, vendor_topic]))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
