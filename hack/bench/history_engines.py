"""The analytics history's embedded query engine: DuckDB (the one in use) against chDB (embedded ClickHouse).

    .venv/bin/python hack/bench/history_engines.py [--events 1000000] [--devices 50000] [--runs 5]
        [--chdb-python /tmp/bench-venv/bin/python] [--files-per-day 8] [--dir PATH]

chDB is not a project dependency; it runs from a venv of its own:

    python3.11 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install chdb

1. Synthesizes 30 days of events: --devices devices, installed over the month (a base on day 0), a
   heavy-tailed activity (a few heavy devices, many light ones) and a lifetime each, so retention decays;
   sessions of launch, views, sometimes cart and pay (some payments later than an hour), other names now
   and then, at diurnal hours, some uploaded up to 36 h late. They are archived with the project's own
   `Archiver` into a `LocalObjectStore`, in batches of 24/--files-per-day hours of upload time (several
   files per day, late events in files of their own); --dup of the events are archived twice, whole
   batches as an archiver that crashes before its commit does.
2. Asks both engines the same three questions over the same Parquet files: 7-day retention by device of
   14 daily cohorts (any event), the funnel view -> cart -> pay within an hour over 14 days, and per-day
   per-event counts with distinct devices and users over the 30 days. DuckDB answers through
   `History.retention/funnel/counts` (its own SQL, file cache warm); chDB through the equivalent ClickHouse
   SQL over `file(<glob>, Parquet)`. Both count each event id once. The funnel is also asked of History
   with DuckDB's asof_loop_join_threshold set to 0 (see child_duckdb). The script checks that every
   figure is the same before it prints a timing.
3. Each engine and question runs in a process of its own (one warm-up, then --runs timed runs). DuckDB
   is timed twice: the whole History call (listing the files in the store included) and its SQL alone
   (`History._execute`, a connection per query as History opens one); chDB's connection is kept open.
   The ratio compares chDB with DuckDB's SQL. Peak RSS is the process's VmHWM, and "base" its RSS after
   the imports (mpaas for DuckDB), before any query.

The run is bounded: each query process gets --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

APP, WS = "SHOP", "prod"
START = datetime(2026, 10, 1, tzinfo=UTC)
D0 = START.date()
DAYS = 30
DAY_MS = 86_400_000
END_MS = int(START.timestamp() * 1000) + DAYS * DAY_MS
FUNNEL = ("view", "cart", "pay")
WINDOW = 3600
RETURN_DAYS = 7
# The questions: (first day, last day) of each, as offsets from D0.
RETENTION_COHORTS = (0, 13)
FUNNEL_DAYS = (16, 29)  # the archive's last 14 days, see chdb_funnel
COUNT_DAYS = (0, 29)
QUERIES = ("retention", "funnel", "counts")
OTHER = ("search", "share", "login", "push_open", "custom.promo_click")
HOURS = [1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 9, 11, 12, 10, 6, 3]  # UTC hour weights
DEFAULT_CHDB_PYTHON = os.environ.get("MPAAS_BENCH_CHDB_PYTHON", "/tmp/bench-venv/bin/python")
ASOF0 = "duckdb-asof0"  # History's DuckDB with asof_loop_join_threshold = 0, see child_duckdb
HOW_TO_GET_CHDB = "python3.11 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install chdb"


def day(offset: int) -> date:
    return D0 + timedelta(days=offset)


# --- the synthetic history ------------------------------------------------------------------------


def synthesize(n_events: int, n_devices: int, seed: int) -> list[tuple[int, int, int, str, str]]:
    """(received ms, ts ms, device, event, props JSON) of exactly n_events events, sorted by received."""
    rng = random.Random(seed)
    device_days: list[tuple[int, int]] = []
    weights: list[float] = []
    for dev in range(n_devices):
        installed = 0 if rng.random() < 0.35 else rng.randrange(DAYS)
        # Churn: most devices leave after days or weeks, a fifth stay; each active some days of its life.
        life = DAYS if rng.random() < 0.2 else int(rng.expovariate(1 / 6))
        p_active = rng.betavariate(2, 3)
        heavy = min(rng.paretovariate(1.2), 200.0)  # a few devices far busier than the rest
        for d in range(installed, min(DAYS, installed + life + 1)):
            if d == installed or rng.random() < p_active:
                device_days.append((dev, d))
                weights.append(heavy)
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    events: list[tuple[int, int, int, str, str]] = []
    hours = list(range(24))
    while len(events) < n_events:
        for dev, d in rng.choices(device_days, cum_weights=cum, k=10_000):
            hour = rng.choices(hours, HOURS)[0]
            t = START.timestamp() * 1000 + d * DAY_MS + (hour * 3600 + rng.random() * 3600) * 1000
            session = [(t, "launch", "{}")]
            for _ in range(1 + int(rng.expovariate(1 / 3))):
                t += rng.uniform(3, 90) * 1000
                session.append((t, "view", json.dumps({"screen": f"product-{rng.randrange(500)}"})))
                if rng.random() < 0.08:
                    t += rng.uniform(1, 30) * 1000
                    session.append((t, rng.choice(OTHER), "{}"))
            if rng.random() < 0.3:
                t += rng.uniform(5, 300) * 1000
                session.append((t, "cart", json.dumps({"items": rng.randint(1, 4)})))
                if rng.random() < 0.5:
                    # Most pay within minutes; some come back hours later, out of the funnel's hour.
                    late = rng.random() < 0.15
                    t += (rng.uniform(3600, 4 * 3600) if late else rng.uniform(20, 900)) * 1000
                    session.append((t, "pay", json.dumps({"amount": round(rng.uniform(1, 300), 2)})))
            for ts, name, props in session:
                if ts >= END_MS:  # the archive ends today: nothing after its last day
                    continue
                # Most uploads within seconds; a few devices offline for up to a day and a half.
                delay = rng.uniform(0.2, 30) if rng.random() < 0.96 else rng.uniform(60, 36 * 3600)
                events.append((int(ts + delay * 1000), int(ts), dev, name, props))
            if len(events) >= n_events:
                break
    del events[n_events:]
    events.sort()
    return events


def batches(events: list[tuple[int, int, int, str, str]], files_per_day: int, n_devices: int, seed: int):
    """Event-log record values per archiving batch (one record per device and batch, its events as JSON
    lines), batches cut by upload time."""
    rng = random.Random(seed + 1)
    users = [f"u-{rng.randrange(n_devices * 2 // 3)}" if rng.random() < 0.6 else "" for _ in range(n_devices)]
    platforms = [rng.choice(("android", "ios", "harmony")) for _ in range(n_devices)]
    versions = [rng.choice(("2.1.0", "2.2.0", "2.3.1")) for _ in range(n_devices)]
    span = DAY_MS // files_per_day
    start_ms = int(START.timestamp() * 1000)
    current, records, count = -1, defaultdict(list), 0
    for received, ts, dev, name, props in events:
        b = (received - start_ms) // span
        if b != current and records:
            yield [b"\n".join(lines) for lines in records.values()], count
            records, count = defaultdict(list), 0
        current = b
        line = (
            f'{{"id":"{rng.getrandbits(128):032x}","app":"{APP}","workspace":"{WS}","source":"native",'
            f'"event":"{name}","device":"d-{dev:06d}","user":"{users[dev]}","ts":{ts},"received":{received},'
            f'"props":{props},"platform":"{platforms[dev]}","version":"{versions[dev]}","channel":"store"}}'
        )
        records[dev].append(line.encode())
        count += 1
    if records:
        yield [b"\n".join(lines) for lines in records.values()], count


async def archive(args: argparse.Namespace, objects_dir: Path) -> dict[str, Any]:
    from mpaas.analytics.history import Archiver
    from mpaas.stores import LocalObjectStore

    started = time.perf_counter()
    events = synthesize(args.events, args.devices, args.seed)
    synth = time.perf_counter() - started
    archiver = Archiver(LocalObjectStore(objects_dir), workdir=objects_dir.parent)
    rng = random.Random(args.seed + 2)
    writing = 0.0
    repeated = written = calls = json_bytes = 0
    for values, count in batches(events, args.files_per_day, args.devices, args.seed):
        # A whole batch again, as after a crash between storing and committing, until --dup of the events.
        again = repeated + count <= args.dup * args.events and rng.random() < args.dup * 4
        for _ in range(2 if again else 1):
            t = time.perf_counter()
            await archiver.write(values)
            writing += time.perf_counter() - t
            written += count
            calls += 1
            json_bytes += sum(len(v) + 1 for v in values)
        repeated += count if again else 0
    files = await asyncio.to_thread(lambda: list(objects_dir.rglob("*.parquet")))
    return {
        "events": args.events,
        "devices": args.devices,
        "files_per_day": args.files_per_day,
        "seed": args.seed,
        "dup": args.dup,
        "rows": written,
        "repeated": repeated,
        "batches": calls,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "json_bytes": json_bytes,
        "synth_seconds": synth,
        "write_seconds": writing,
    }


# --- the questions, each engine in a process of its own -------------------------------------------


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """User and system time of this process, all its threads (the engine's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(runs: int, ask) -> tuple[list[float], list[float], Any]:
    answer = ask()  # warm-up: DuckDB's file cache filled, the page cache warm for both
    times, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), cpu_seconds()
        again = ask()
        times.append(time.perf_counter() - t)
        cpu.append(cpu_seconds() - c)
        if again != answer:
            raise AssertionError("an engine answered the same question differently twice")
    return times, cpu, answer


def child_duckdb(args: argparse.Namespace) -> dict[str, Any]:
    from mpaas.analytics import history
    from mpaas.analytics.history import History
    from mpaas.stores import LocalObjectStore

    base = rss_kib()
    if args.child[0] == ASOF0:
        # DuckDB plans an ASOF join as a nested loop when it expects a small left side (asof_loop_join_threshold
        # rows); its estimate of History's CTEs is tens of rows, whatever they hold.
        connect = history._connect

        def unlooped(*a: Any, **kw: Any) -> Any:
            con = connect(*a, **kw)
            con.execute("SET asof_loop_join_threshold = 0")
            return con

        history._connect = unlooped  # type: ignore[assignment]
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=args.dir))
    h = History(
        LocalObjectStore(Path(args.dir) / "objects"),
        cache_dir=cache,
        cache_bytes=16 << 30,
        max_query_bytes=16 << 30,  # the default 1 GiB bound would refuse large --events
        threads=args.threads,
    )
    loop = asyncio.new_event_loop()
    # The engine's share of each call (History also lists the files in the store); the process does nothing
    # else meanwhile, so its CPU time then is DuckDB's.
    sql_times: list[float] = []
    sql_cpu: list[float] = []
    execute = h._execute

    def timed_execute(*a: Any, **kw: Any) -> list[tuple[Any, ...]]:
        t, c = time.perf_counter(), cpu_seconds()
        try:
            return execute(*a, **kw)
        finally:
            sql_times.append(time.perf_counter() - t)
            sql_cpu.append(cpu_seconds() - c)

    h._execute = timed_execute  # type: ignore[method-assign]

    def ask() -> Any:
        if args.child[1] == "retention":
            r = loop.run_until_complete(
                h.retention(APP, WS, day(RETENTION_COHORTS[0]), day(RETENTION_COHORTS[1]), days=RETURN_DAYS)
            )
            return {c["day"]: [c["size"], *c["returned"]] for c in r["cohorts"]}
        if args.child[1] == "funnel":
            r = loop.run_until_complete(
                h.funnel(APP, WS, day(FUNNEL_DAYS[0]), day(FUNNEL_DAYS[1]), list(FUNNEL), window_seconds=WINDOW)
            )
            return [s["count"] for s in r["steps"]]
        r = loop.run_until_complete(h.counts(APP, WS, day(COUNT_DAYS[0]), day(COUNT_DAYS[1])))
        return {d: {x["event"]: [x["events"], x["devices"], x["users"]] for x in xs} for d, xs in r["days"].items()}

    try:
        times, _, answer = timed(args.runs, ask)
    finally:
        h.close()
    return {"base_kib": base, "times": times, "sql_times": sql_times[1:], "cpu": sql_cpu[1:], "answer": answer}


def glob(args: argparse.Namespace, first: date, last: date) -> str:
    days = ",".join((first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1))
    root = Path(args.dir) / "objects" / "analytics/history" / f"app={APP}/ws={WS}"
    return f"file('{root}/day={{{days}}}/*.parquet', Parquet)"


# Each event id once, as History's DISTINCT ON (id): a repeated batch's rows are the same rows, so any() of
# each column per id is the row (GROUP BY id measured a little faster than LIMIT 1 BY id here).
SETTINGS = "SETTINGS max_threads = {threads}, session_timezone = 'UTC'"


def chdb_retention(args: argparse.Namespace) -> str:
    # Per device the set of its active days; a cohort day counts it, and each of the next days it is in the set
    # (arrays measured faster than joining the (device, day) pairs to themselves).
    first, last = day(RETENTION_COHORTS[0]), day(RETENTION_COHORTS[1])
    return f"""
        WITH e AS (SELECT any(device) AS who, toDate(any(ts)) AS d
                   FROM {glob(args, first, last + timedelta(days=RETURN_DAYS))} WHERE device != '' GROUP BY id)
        SELECT cohort, k, count() FROM (
            SELECT arrayJoin(ds) AS cohort, ds FROM (SELECT who, groupUniqArray(d) AS ds FROM e GROUP BY who)
            WHERE cohort BETWEEN '{first}' AND '{last}')
        ARRAY JOIN range({RETURN_DAYS + 1}) AS k
        WHERE has(ds, cohort + k)
        GROUP BY cohort, k
        {SETTINGS.format(threads=args.threads)}"""


def chdb_funnel(args: argparse.Namespace) -> str:
    # windowFunnel keeps, per device and step, the latest start that reached it, so a device's level is the
    # deepest step of any view..cart..pay path within the window of its view: History's nearest-next-step
    # joins count the same devices. Ties in time go in step order in both (History: ts >= the step before).
    # The files are those of the funnel's days and of the day after (a window may cross midnight); the
    # archive has no day after FUNNEL_DAYS, so they are the files History reads too.
    first, last = day(FUNNEL_DAYS[0]), day(FUNNEL_DAYS[1])
    steps = ", ".join(f"ev = '{name}'" for name in FUNNEL[1:])
    return f"""
        SELECT level, count() FROM (
            SELECT windowFunnel({WINDOW * 1000})(t, ev = '{FUNNEL[0]}' AND toDate(at) BETWEEN '{first}'
                   AND '{last}', {steps}) AS level
            FROM (SELECT any(device) AS who, any(event) AS ev, any(ts) AS at,
                         toUInt64(toUnixTimestamp64Milli(at)) AS t
                  FROM {glob(args, first, last + timedelta(days=1))}
                  WHERE device != '' AND event IN {FUNNEL} GROUP BY id)
            GROUP BY who)
        WHERE level > 0 GROUP BY level
        {SETTINGS.format(threads=args.threads)}"""


def chdb_counts(args: argparse.Namespace) -> str:
    first, last = day(COUNT_DAYS[0]), day(COUNT_DAYS[1])
    return f"""
        SELECT toDate(at) AS d, ev, count(), uniqExact(dev), uniqExactIf(usr, usr != '')
        FROM (SELECT any(event) AS ev, any(ts) AS at, any(device) AS dev, any(user) AS usr
              FROM {glob(args, first, last)} GROUP BY id)
        WHERE d BETWEEN '{first}' AND '{last}'
        GROUP BY d, ev
        {SETTINGS.format(threads=args.threads)}"""


def child_chdb(args: argparse.Namespace) -> dict[str, Any]:
    import chdb

    base = rss_kib()
    con = chdb.connect(":memory:")
    query = args.child[1]
    sql = {"retention": chdb_retention, "funnel": chdb_funnel, "counts": chdb_counts}[query](args)

    def rows() -> list[list[str]]:
        out = con.query(sql, "TabSeparated").bytes().decode()
        return [line.split("\t") for line in out.splitlines()]

    def ask() -> Any:
        found = rows()
        if query == "retention":
            first, last = day(RETENTION_COHORTS[0]), day(RETENTION_COHORTS[1])
            table = {
                (first + timedelta(days=i)).isoformat(): [0] * (RETURN_DAYS + 1) for i in range((last - first).days + 1)
            }
            for cohort, k, n in found:
                table[cohort][int(k)] = int(n)
            return table
        if query == "funnel":
            levels = {int(level): int(n) for level, n in found}
            return [sum(n for level, n in levels.items() if level >= i) for i in range(1, len(FUNNEL) + 1)]
        first, last = day(COUNT_DAYS[0]), day(COUNT_DAYS[1])
        days: dict[str, dict[str, list[int]]] = {
            (first + timedelta(days=i)).isoformat(): {} for i in range((last - first).days + 1)
        }
        for d, name, n, devices, users in found:
            days[d][name] = [int(n), int(devices), int(users)]
        return days

    try:
        times, cpu, answer = timed(args.runs, ask)
    finally:
        con.close()
    return {"base_kib": base, "times": times, "cpu": cpu, "answer": answer, "version": chdb.__version__}


def child(args: argparse.Namespace) -> int:
    out = child_chdb(args) if args.child[0] == "chdb" else child_duckdb(args)
    # The peak of this process's own memory since its exec: ru_maxrss would also count the parent's RSS at fork.
    out["peak_kib"] = rss_kib("VmHWM")
    print(json.dumps(out))
    return 0


def run_child(python: str, engine: str, query: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, __file__, "--child", engine, query, "--dir", str(args.dir)]
    cmd += ["--runs", str(args.runs), "--threads", str(args.threads)]
    env = dict(os.environ)
    components = str(Path(__file__).resolve().parents[2] / "components")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (components, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"{engine} {query}: no answer within --timeout {args.timeout} s") from None
    if proc.returncode != 0:
        raise SystemExit(f"{engine} {query} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def check_chdb(python: str) -> str:
    try:
        done = subprocess.run(
            [python, "-c", "import chdb; print(chdb.__version__)"], capture_output=True, text=True, timeout=60
        )
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        print(
            f"chDB is not importable by {python}. It is not a project dependency; get it with\n"
            f"    {HOW_TO_GET_CHDB}\n"
            "or point --chdb-python (MPAAS_BENCH_CHDB_PYTHON) at a Python that has it.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return done.stdout.strip()


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query, after one warm-up")
    ap.add_argument("--threads", type=int, default=2, help="of each engine (History's default: 2)")
    ap.add_argument("--files-per-day", type=int, default=8, help="archiving batches per day of upload time")
    ap.add_argument("--dup", type=float, default=0.01, help="share of the events archived twice")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chdb-python", default=DEFAULT_CHDB_PYTHON, help="a Python with chdb installed")
    ap.add_argument("--dir", help="where the archive goes (kept, and reused by a later run with the same options)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for each engine and query")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    chdb_version = check_chdb(args.chdb_python)
    import duckdb

    keep = args.dir is not None
    args.dir = Path(args.dir or tempfile.mkdtemp(prefix="mpaas-bench-history-")).resolve()
    try:
        manifest_path = args.dir / "manifest.json"
        wanted = {k: getattr(args, k) for k in ("events", "devices", "files_per_day", "seed", "dup")}
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
        if manifest is None or any(manifest.get(k) != v for k, v in wanted.items()):
            shutil.rmtree(args.dir / "objects", ignore_errors=True)
            args.dir.mkdir(parents=True, exist_ok=True)
            manifest = asyncio.run(archive(args, args.dir / "objects"))
            manifest_path.write_text(json.dumps(manifest))
            reused = ""
        else:
            reused = " (reused from an earlier run: its write figures)"
        m = manifest
        print(
            f"archive{reused}: {m['events']} events (+{m['repeated']} repeated, {m['repeated'] / m['events']:.1%}),"
            f" {m['devices']} devices, {DAYS} days; synthesized in {m['synth_seconds']:.1f} s"
        )
        print(
            f"  Archiver.write: {m['batches']} batches, {m['files']} Parquet files, {m['bytes'] / 1e6:.1f} MB"
            f" ({m['bytes'] / m['rows']:.1f} bytes/row; the JSON lines: {m['json_bytes'] / 1e6:.1f} MB)"
            f" in {m['write_seconds']:.1f} s ({m['rows'] / m['write_seconds']:,.0f} rows/s)"
        )
        print(f"engines: DuckDB {duckdb.__version__} ({sys.executable}), chDB {chdb_version} ({args.chdb_python})")
        print(f"{args.runs} timed runs per query after a warm-up, {args.threads} threads each, {os.cpu_count()} CPUs")

        results: dict[str, dict[str, dict[str, Any]]] = {}
        for query in QUERIES:
            results[query] = {
                "duckdb": run_child(sys.executable, "duckdb", query, args),
                "chdb": run_child(args.chdb_python, "chdb", query, args),
            }
            if query == "funnel":
                results[query][ASOF0] = run_child(sys.executable, ASOF0, query, args)
            answers = {engine: r["answer"] for engine, r in results[query].items()}
            if any(a != answers["duckdb"] for a in answers.values()):
                print(f"{query}: the engines disagree")
                for engine, a in answers.items():
                    print(f"  {engine}: {json.dumps(a)}")
                return 1
        print("same answers from both engines for all three questions")
        r = results["retention"]["duckdb"]["answer"]
        c0 = r[day(RETENTION_COHORTS[0]).isoformat()]
        c1 = r[day(RETENTION_COHORTS[1]).isoformat()]
        print(f"  retention (size, back 1..{RETURN_DAYS} days later), first cohort: {c0}; last cohort: {c1}")
        print(f"  funnel {' -> '.join(FUNNEL)} within {WINDOW} s: {results['funnel']['duckdb']['answer']} devices")
        n = sum(v[0] for d in results["counts"]["duckdb"]["answer"].values() for v in d.values())
        print(f"  counts: {n} events, each id once, out of {m['rows']} rows")
        print()
        print(
            "| query | DuckDB: History call | DuckDB: its SQL | chDB | chDB/DuckDB time | CPU DuckDB / chDB"
            " | chDB/DuckDB CPU | peak RSS DuckDB (base) | peak RSS chDB (base) | chDB/DuckDB RSS |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")

        def ms(times: list[float]) -> str:
            return f"{statistics.median(times) * 1000:.0f} ms ({min(times) * 1000:.0f}-{max(times) * 1000:.0f})"

        for query in QUERIES:
            c = results[query]["chdb"]
            for engine in ("duckdb", ASOF0):
                if engine not in results[query]:
                    continue
                d = results[query][engine]
                label = query if engine == "duckdb" else f"{query}, DuckDB with asof_loop_join_threshold = 0"
                ratio = statistics.median(c["times"]) / statistics.median(d["sql_times"])
                dc, cc = statistics.median(d["cpu"]), statistics.median(c["cpu"])
                print(
                    f"| {label} | {ms(d['times'])} | {ms(d['sql_times'])} | {ms(c['times'])} | **{ratio:.2f}**"
                    f" | {dc:.2f} / {cc:.2f} s | {cc / dc:.2f}"
                    f" | {mib(d['peak_kib'])} ({mib(d['base_kib'])}) | {mib(c['peak_kib'])} ({mib(c['base_kib'])})"
                    f" | {c['peak_kib'] / d['peak_kib']:.2f} |"
                )
        print(
            "(medians of the timed runs, min-max in brackets; CPU: user + system seconds of the engine's process"
            " during the query; base: the process's RSS after its imports)"
        )
        return 0
    finally:
        if not keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
