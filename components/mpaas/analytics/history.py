"""History: every accepted event archived from the event log to the object store as Parquet, partitioned by app
and day, and queried in process with DuckDB (retention, funnels).

Archive layout (readable by any Parquet tool, Hive-style partitions):

    analytics/history/app={appId}/ws={workspaceId}/day={YYYY-MM-DD}/{written-at}-{random}.parquet

Archiving is at least once: a batch is committed to its consumer group after its files are stored, so a crash
in between writes that batch again. Queries count each event id once, so a repeat never shows in a figure.
The day is the UTC day of the client's time (`ts`), as for the real-time figures.

Queries read the files of the days they need through a local cache bounded in bytes (files never change once
written, so a cached file is never stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import duckdb
from fastapi import FastAPI, HTTPException, Query
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..apps import AppDirectory
from ..config import LiveConfig
from ..stores import EventLog, ObjectStore

log = logging.getLogger("mpaas.analytics.history")

PREFIX = "analytics/history"
CONTENT_TYPE = "application/vnd.apache.parquet"
MAX_RANGE_DAYS = 366
MAX_RETURN_DAYS = 90
MAX_FUNNEL_STEPS = 10
MAX_FUNNEL_WINDOW_SECONDS = 90 * 86400

ARCHIVED = Counter("mpaas_analytics_history_events_total", "Events written to the Parquet history")
SKIPPED = Counter("mpaas_analytics_history_skipped_total", "Event-log lines the history could not read as events")
FILES = Counter("mpaas_analytics_history_files_total", "Parquet files written to the object store")
FLUSH = Histogram(
    "mpaas_analytics_history_flush_seconds",
    "Time to write and store one archived batch",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUERY = Histogram(
    "mpaas_analytics_history_query_seconds",
    "Time of one history query, files fetched included",
    ["query"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# The columns of the event log's JSON lines (events.Event.record) and of the Parquet files.
_COLUMNS = (
    "{id: 'VARCHAR', app: 'VARCHAR', workspace: 'VARCHAR', source: 'VARCHAR', event: 'VARCHAR', "
    "device: 'VARCHAR', \"user\": 'VARCHAR', ts: 'BIGINT', received: 'BIGINT', props: 'JSON', "
    "platform: 'VARCHAR', version: 'VARCHAR', channel: 'VARCHAR'}"
)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class QueryError(ValueError):
    """A query that cannot be answered as asked (the message says what to change)."""


def _connect(spill: Path, threads: int = 1, memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET memory_limit = '{memory_limit}'")  # a constant of ours, not client input
    # Past the memory limit DuckDB spills here, not into the working directory (read-only in a pod).
    con.execute(f"SET temp_directory = {_literal(str(spill))}")
    # DuckDB guesses a funnel's ASOF inputs small and loops over them (7.4 s instead of 0.5 s for a million
    # events, hack/bench/history_engines.py): always the sorted join.
    con.execute("SET asof_loop_join_threshold = 0")
    return con


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def partition(app: str, workspace: str, day: str) -> str:
    return f"{PREFIX}/app={quote(app, safe='')}/ws={quote(workspace, safe='')}/day={day}/"


class Archiver:
    """Writes batches of event-log records as Parquet files, one per app and day, into the object store."""

    def __init__(self, objects: ObjectStore, workdir: str | Path | None = None):
        self.objects = objects
        self.workdir = Path(workdir or tempfile.gettempdir())
        self._bucket = False

    async def write(self, values: Sequence[bytes]) -> list[str]:
        """Archive the events of `values` (event-log record values: JSON lines); returns the keys written."""
        if not values:
            return []
        if not self._bucket:
            await self.objects.ensure_bucket()
            self._bucket = True
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="mpaas-history-", dir=self.workdir) as tmp:
            files, written, skipped = await asyncio.to_thread(_to_parquet, values, Path(tmp))
            stamp = f"{int(time.time() * 1000):013d}-{secrets.token_hex(4)}"
            keys = []
            for (app, workspace, day), path in files:
                key = f"{partition(app, workspace, day)}{stamp}.parquet"
                await self.objects.put(key, path.read_bytes(), content_type=CONTENT_TYPE)
                keys.append(key)
        ARCHIVED.inc(written)
        SKIPPED.inc(skipped)
        FILES.inc(len(keys))
        FLUSH.observe(time.perf_counter() - started)
        return keys


def _to_parquet(values: Sequence[bytes], tmp: Path) -> tuple[list[tuple[tuple[str, str, str], Path]], int, int]:
    source = tmp / "batch.ndjson"
    with source.open("wb") as f:
        for value in values:
            f.write(value)
            if not value.endswith(b"\n"):
                f.write(b"\n")
    con = _connect(tmp / "spill")
    try:
        con.execute(
            "CREATE TEMP TABLE raw AS SELECT * FROM read_json(?, format = 'newline_delimited', "
            f"columns = {_COLUMNS}, ignore_errors = true, maximum_object_size = 16777216)",
            [str(source)],
        )
        (total,) = con.execute("SELECT count(*) FROM raw").fetchone() or (0,)
        # One group number per (app, workspace, day), so each file's rows are picked without quoting strings.
        con.execute(
            "CREATE TEMP TABLE batch AS SELECT dense_rank() OVER (ORDER BY app, workspace, day) AS grp, * FROM ("
            " SELECT id, app, workspace, strftime(epoch_ms(ts), '%Y-%m-%d') AS day, source, event, device,"
            ' "user", epoch_ms(ts) AS ts, CASE WHEN received BETWEEN 0 AND 253402300799999'
            " THEN epoch_ms(received) END AS received, platform, version, channel,"
            " CAST(props AS VARCHAR) AS props FROM raw"
            # years 1970 to 9999 only: a time no event has would stop every batch it is in
            " WHERE id IS NOT NULL AND app IS NOT NULL AND workspace IS NOT NULL"
            " AND ts BETWEEN 0 AND 253402300799999)"
        )
        groups = con.execute(
            "SELECT grp, app, workspace, day, count(*) FROM batch GROUP BY ALL ORDER BY grp"
        ).fetchall()
        files = []
        written = 0
        for grp, app, workspace, day, count in groups:
            if not _DAY.fullmatch(day or ""):  # a time outside years 0000-9999: refused at ingestion, never here
                continue
            path = tmp / f"{int(grp)}.parquet"
            con.execute(
                f"COPY (SELECT * EXCLUDE (grp, day) FROM batch WHERE grp = {int(grp)} ORDER BY ts) "
                f"TO {_literal(str(path))} (FORMAT parquet, COMPRESSION zstd)"
            )
            files.append(((app, workspace, day), path))
            written += count
        return files, written, total - written
    finally:
        con.close()


async def archive_forever(
    events: EventLog,
    topic: str,
    group: str,
    archiver: Archiver,
    *,
    flush_seconds: float = 60.0,
    flush_bytes: int = 64 << 20,
) -> None:
    """The archiving consumer: batches of at most `flush_seconds` (or `flush_bytes`) of events, each stored
    before the group's offsets move past it. On any failure the batch is dropped and read again."""
    while True:
        buffer: list[Any] = []
        size = 0
        first_at = 0.0
        try:
            async for records in events.batches(topic, group, wait=min(1.0, flush_seconds)):
                if records and not buffer:
                    first_at = time.monotonic()
                buffer.extend(records)
                size += sum(len(r.value) for r in records)
                if buffer and (size >= flush_bytes or time.monotonic() - first_at >= flush_seconds):
                    await archiver.write([r.value for r in buffer])
                    await events.commit_batch(group, buffer)
                    buffer, size = [], 0
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the log or the object store away: read again from the last stored batch
            log.warning("history archiver: %r; resuming in 2 s", e)
            await asyncio.sleep(2)


class FileCache:
    """Archived files copied to a local folder for DuckDB, least recently used dropped past `max_bytes` (never
    one a running query reads)."""

    def __init__(self, objects: ObjectStore, folder: str | Path | None, max_bytes: int):
        self.objects = objects
        self._own = not folder  # a folder of ours goes whole on close; a configured one keeps what is not ours
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="mpaas-history-cache-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spill = self.folder / "spill"
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, int] = OrderedDict()  # cache name -> size, least recently used first
        self._bytes = 0
        self._pins: dict[str, int] = {}  # cache name -> running queries reading it
        self._fetching: dict[str, asyncio.Task[Path]] = {}
        self._remove_ours()  # left by an earlier process: not tracked, so removed

    def _remove_ours(self) -> None:
        for stale in [*self.folder.glob("*.parquet"), *self.folder.glob(".*.part")]:
            with contextlib.suppress(OSError):
                stale.unlink()
        shutil.rmtree(self.spill, ignore_errors=True)

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self._remove_ours()

    @staticmethod
    def _name(key: str) -> str:
        return quote(key, safe="") + ".parquet"

    @contextlib.asynccontextmanager
    async def use(self, keys: Sequence[str]) -> AsyncIterator[list[Path]]:
        """Local copies of `keys` (fetched at most once each, even by concurrent queries), kept while in use."""
        names = [self._name(k) for k in keys]
        for name in names:
            self._pins[name] = self._pins.get(name, 0) + 1
        try:
            yield list(await asyncio.gather(*(self._path(k) for k in keys)))
        finally:
            for name in names:
                self._pins[name] -= 1
                if not self._pins[name]:
                    del self._pins[name]
            self.trim()

    async def _path(self, key: str) -> Path:
        name = self._name(key)
        if name in self._files:
            self._files.move_to_end(name)
            return self.folder / name
        task = self._fetching.get(name)
        if task is None:
            # A task of its own: a query cancelled meanwhile neither fails the others that wait for the same
            # file nor leaves a partial one behind.
            task = self._fetching[name] = asyncio.get_running_loop().create_task(self._fetch(key, name))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, even if none waits
        return await asyncio.shield(task)

    async def _fetch(self, key: str, name: str) -> Path:
        try:
            data = await self.objects.get(key)
            path = self.folder / name
            await asyncio.to_thread(_write, self.folder / f".{secrets.token_hex(8)}.part", path, data)
            self._files[name] = len(data)
            self._bytes += len(data)
            self.trim()  # the query that asked may be gone (unpinned): the bound still holds
            return path
        finally:
            del self._fetching[name]

    def trim(self) -> None:
        """Drop the least recently used files past the bound."""
        for name in list(self._files):
            if self._bytes <= self.max_bytes:
                break
            if name in self._pins:
                continue
            self._bytes -= self._files.pop(name)
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()


def _write(part: Path, path: Path, data: bytes) -> None:
    try:
        part.write_bytes(data)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


class History:
    """Retention and funnel queries over the archived events of one app."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        cache_dir: str | Path | None = None,
        cache_bytes: int = 2 << 30,
        max_query_bytes: int = 1 << 30,
        threads: int = 2,
        concurrency: int = 2,
    ):
        self.objects = objects
        self.cache = FileCache(objects, cache_dir, cache_bytes)
        self.max_query_bytes = min(max_query_bytes, cache_bytes)
        self.threads = threads
        self._slots = asyncio.Semaphore(concurrency)

    async def keys(self, app: str, workspace: str, days: Sequence[date]) -> list[str]:
        listed = await asyncio.gather(*(self.objects.list(partition(app, workspace, d.isoformat())) for d in days))
        return [k for keys in listed for k in keys if k.endswith(".parquet")]

    async def _keys_within_bounds(self, app: str, workspace: str, days: Sequence[date]) -> list[str]:
        keys = await self.keys(app, workspace, days)
        sizes = await asyncio.gather(*(self.objects.stat(k) for k in keys))
        total = sum(s.size for s in sizes if s is not None)
        if total > self.max_query_bytes:
            raise QueryError(
                f"the range holds {total} bytes of events, more than this server reads for one query "
                f"({self.max_query_bytes}): ask for fewer days"
            )
        return keys

    async def _run(
        self, name: str, app: str, workspace: str, days: Sequence[date], sql: str, params: list[Any]
    ) -> list[tuple[Any, ...]]:
        started = time.perf_counter()
        async with self._slots:
            keys = await self._keys_within_bounds(app, workspace, days)
            if not keys:
                return []
            try:
                async with self.cache.use(keys) as paths:
                    opened: list[duckdb.DuckDBPyConnection] = []
                    work = asyncio.ensure_future(
                        asyncio.to_thread(self._execute, sql, [[str(p) for p in paths], *params], opened)
                    )
                    try:
                        return await asyncio.shield(work)
                    except asyncio.CancelledError:
                        # Cancelling the task does not stop DuckDB's thread: it is interrupted, and its slot
                        # and files kept until it has stopped.
                        for con in opened:
                            con.interrupt()
                        await asyncio.wait([work])
                        if not work.cancelled():
                            work.exception()  # retrieved: DuckDB's "interrupted"
                        raise
            finally:
                QUERY.labels(name).observe(time.perf_counter() - started)

    def _execute(
        self, sql: str, params: list[Any], opened: list[duckdb.DuckDBPyConnection] | None = None
    ) -> list[tuple[Any, ...]]:
        con = _connect(self.cache.spill, self.threads)
        if opened is not None:
            opened.append(con)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    async def retention(
        self,
        app: str,
        workspace: str,
        first: date,
        last: date,
        *,
        days: int = 7,
        start_event: str | None = None,
        return_event: str | None = None,
        by: str = "device",
        new_only: bool = False,
    ) -> dict[str, Any]:
        """Of those who did `start_event` (any event: None) on each day from `first` to `last` (for the first
        time ever, with `new_only`), how many did `return_event` on each of the `days` days after."""
        _check_range(first, last)
        if not 1 <= days <= MAX_RETURN_DAYS:
            raise QueryError(f"days: from 1 to {MAX_RETURN_DAYS}")
        who = _who(by)
        end = last + timedelta(days=days)
        span = _days(first, end)
        if new_only:  # first time ever: every archived day before the range is read too
            span = await self._archived_days(app, workspace, end)
            if len(span) > MAX_RANGE_DAYS + MAX_RETURN_DAYS:
                raise QueryError("new_only reads the app's whole history, which is longer than a year here")
        rows = await self._run(
            "retention",
            app,
            workspace,
            span,
            f"""
            WITH e AS (
                SELECT DISTINCT ON (id) {who} AS who, event, CAST(ts AS DATE) AS d
                FROM read_parquet($1) WHERE {who} <> ''
            ),
            starts AS (SELECT who, d FROM e WHERE $2::VARCHAR IS NULL OR event = $2),
            cohort AS (
                SELECT DISTINCT who, d AS cohort FROM (
                    SELECT who, {"min(d)" if new_only else "d"} AS d FROM starts {"GROUP BY who" if new_only else ""}
                ) WHERE d BETWEEN $3 AND $4
            ),
            back AS (SELECT DISTINCT who, d FROM e WHERE $5::VARCHAR IS NULL OR event = $5)
            SELECT c.cohort, 0 AS k, count(*) FROM cohort c GROUP BY ALL
            UNION ALL
            SELECT c.cohort, date_diff('day', c.cohort, b.d) AS k, count(DISTINCT c.who)
            FROM cohort c JOIN back b ON b.who = c.who AND b.d > c.cohort AND b.d <= c.cohort + $6::INTEGER
            GROUP BY ALL
            """,
            [start_event, first, last, return_event, days],
        )
        table: dict[date, list[int]] = {d: [0] * (days + 1) for d in _days(first, last)}
        for cohort, k, count in rows:
            if cohort in table and 0 <= k <= days:
                table[cohort][k] = int(count)
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "by": by,
            "startEvent": start_event,
            "returnEvent": return_event,
            "newOnly": new_only,
            "cohorts": [
                {
                    "day": d.isoformat(),
                    "size": counts[0],
                    "returned": counts[1:],
                    # only days already past the cohort's day and inside the archive are meaningful: the rest 0
                    "rates": [round(c / counts[0], 4) if counts[0] else 0.0 for c in counts[1:]],
                }
                for d, counts in sorted(table.items())
            ],
        }

    async def funnel(
        self,
        app: str,
        workspace: str,
        first: date,
        last: date,
        steps: Sequence[str],
        *,
        window_seconds: int = 86400,
        by: str = "device",
    ) -> dict[str, Any]:
        """How many did `steps[0]` between `first` and `last`, then each next step in order, all within
        `window_seconds` of their first step."""
        _check_range(first, last)
        if not 2 <= len(steps) <= MAX_FUNNEL_STEPS:
            raise QueryError(f"steps: from 2 to {MAX_FUNNEL_STEPS} event names")
        if not 1 <= window_seconds <= MAX_FUNNEL_WINDOW_SECONDS:
            raise QueryError(f"windowSeconds: from 1 to {MAX_FUNNEL_WINDOW_SECONDS}")
        who = _who(by)
        # A start late on `last` ends its window up to that many whole days on (a date drops a timedelta's seconds).
        span = _days(first, last + timedelta(days=-(-window_seconds // 86400)))
        # Each step takes the earliest next event after the one before, per start: the earliest keeps the most
        # room for the steps after it, so no path that completes is missed.
        ctes = [
            f"e AS (SELECT DISTINCT ON (id) {who} AS who, event, ts FROM read_parquet($1) WHERE {who} <> ''"
            f" AND event IN (SELECT unnest($2::VARCHAR[])))",
            "s1 AS (SELECT who, ts AS t0, ts AS t FROM e WHERE event = $2[1] AND CAST(ts AS DATE) BETWEEN $3 AND $4)",
        ]
        for i in range(2, len(steps) + 1):
            # ASOF: per start, the nearest next event at or after the step before (strictly after when the step
            # repeats the previous one's name, so one event is not two steps): linear, however many a device sends.
            after = ">" if steps[i - 1] == steps[i - 2] else ">="
            ctes.append(
                f"s{i} AS (SELECT p.who, p.t0, x.ts AS t FROM s{i - 1} p ASOF JOIN"
                f" (SELECT who, ts FROM e WHERE event = $2[{i}]) x ON x.who = p.who AND x.ts {after} p.t"
                " WHERE x.ts <= p.t0 + to_seconds($5::BIGINT))"
            )
        counts = " UNION ALL ".join(
            f"SELECT {i} AS step, count(DISTINCT who) FROM s{i}" for i in range(1, len(steps) + 1)
        )
        rows = await self._run(
            "funnel",
            app,
            workspace,
            span,
            f"WITH {', '.join(ctes)} {counts}",
            [list(steps), first, last, window_seconds],
        )
        found = {int(step): int(count) for step, count in rows}
        out = []
        for i, name in enumerate(steps, start=1):
            count = found.get(i, 0)
            before = found.get(i - 1, 0) if i > 1 else count
            start = found.get(1, 0)
            out.append(
                {
                    "event": name,
                    "count": count,
                    "fromPrevious": round(count / before, 4) if before else 0.0,
                    "fromStart": round(count / start, 4) if start else 0.0,
                }
            )
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "by": by,
            "windowSeconds": window_seconds,
            "steps": out,
        }

    async def counts(
        self, app: str, workspace: str, first: date, last: date, *, event: str | None = None
    ) -> dict[str, Any]:
        """Events and distinct devices and users per day and event name (one event: `event`)."""
        _check_range(first, last)
        rows = await self._run(
            "counts",
            app,
            workspace,
            _days(first, last),
            """
            SELECT CAST(ts AS DATE) AS d, event, count(*), count(DISTINCT device), count(DISTINCT "user")
                FILTER (WHERE "user" <> '')
            FROM (SELECT DISTINCT ON (id) event, ts, device, "user" FROM read_parquet($1)
                  WHERE $2::VARCHAR IS NULL OR event = $2)
            WHERE CAST(ts AS DATE) BETWEEN $3 AND $4
            GROUP BY ALL ORDER BY d, event
            """,
            [event, first, last],
        )
        days: dict[str, list[dict[str, Any]]] = {d.isoformat(): [] for d in _days(first, last)}
        for d, name, count, devices, users in rows:
            days[d.isoformat()].append({"event": name, "events": count, "devices": devices, "users": users})
        return {"from": first.isoformat(), "to": last.isoformat(), "days": days}

    async def _archived_days(self, app: str, workspace: str, end: date) -> list[date]:
        root = f"{PREFIX}/app={quote(app, safe='')}/ws={quote(workspace, safe='')}/day="
        found = set()
        for key in await self.objects.list(root):
            day = key[len(root) :].split("/", 1)[0]
            if _DAY.fullmatch(day):
                with contextlib.suppress(ValueError):
                    d = date.fromisoformat(day)
                    if d <= end:
                        found.add(d)
        return sorted(found)

    def close(self) -> None:
        self.cache.close()


def _who(by: str) -> str:
    if by == "device":
        return "device"
    if by == "user":
        return '"user"'
    raise QueryError("by: device or user")


def _check_range(first: date, last: date) -> None:
    if last < first:
        raise QueryError("to is before from")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise QueryError(f"at most {MAX_RANGE_DAYS} days from from to to")


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day(value: str, name: str) -> date:
    """A YYYY-MM-DD query value (ASCII digits only), or a QueryError naming the parameter."""
    if not _DAY.fullmatch(value):
        raise QueryError(f"{name}: a day as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise QueryError(f"{name}: {value} is not a day of the calendar") from None


class FunnelRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    steps: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        min_length=2, max_length=MAX_FUNNEL_STEPS
    )
    from_: str = Field(alias="from")
    to: str
    window_seconds: int = Field(default=86400, alias="windowSeconds", ge=1, le=MAX_FUNNEL_WINDOW_SECONDS)
    by: Literal["device", "user"] = "device"


def add_routes(app: FastAPI, live: LiveConfig[AppDirectory], history: History | None) -> None:
    """The history queries on the admin query app (docs/analytics.md, "History")."""

    def target(app_id: str, workspace_id: str) -> History:
        if live.current.resolve(f"{app_id}/{workspace_id}") is None:
            raise HTTPException(404, f"app {app_id}/{workspace_id} is not registered")
        if history is None:
            raise HTTPException(503, "no object store configured (MPAAS_OBJECTS_URL): no history is kept")
        return history

    async def answer(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await call
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        except Exception as e:  # DuckDB, the disk, or the object store (S3's errors are no OSError), a file gone
            log.warning("history query failed: %r", e, exc_info=not isinstance(e, duckdb.Error | OSError))
            raise HTTPException(503, "the history could not be read just now; try again") from None

    base = "/v1/apps/{app_id}/{workspace_id}/history"

    @app.get(f"{base}/retention")
    async def retention(
        app_id: str,
        workspace_id: str,
        from_: Annotated[str, Query(alias="from")],
        to: str,
        days: Annotated[int, Query(ge=1, le=MAX_RETURN_DAYS)] = 7,
        start_event: Annotated[str | None, Query(alias="startEvent", max_length=200)] = None,
        return_event: Annotated[str | None, Query(alias="returnEvent", max_length=200)] = None,
        by: Literal["device", "user"] = "device",
        new_only: Annotated[bool, Query(alias="newOnly")] = False,
    ) -> dict[str, Any]:
        h = target(app_id, workspace_id)

        async def run() -> dict[str, Any]:
            first, last = day(from_, "from"), day(to, "to")
            return await h.retention(
                app_id,
                workspace_id,
                first,
                last,
                days=days,
                start_event=start_event,
                return_event=return_event,
                by=by,
                new_only=new_only,
            )

        return await answer(run())

    @app.post(f"{base}/funnel")
    async def funnel(app_id: str, workspace_id: str, body: FunnelRequest) -> dict[str, Any]:
        h = target(app_id, workspace_id)

        async def run() -> dict[str, Any]:
            first, last = day(body.from_, "from"), day(body.to, "to")
            return await h.funnel(
                app_id, workspace_id, first, last, body.steps, window_seconds=body.window_seconds, by=body.by
            )

        return await answer(run())

    @app.get(f"{base}/events")
    async def counts(
        app_id: str,
        workspace_id: str,
        from_: Annotated[str, Query(alias="from")],
        to: str,
        event: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        h = target(app_id, workspace_id)

        async def run() -> dict[str, Any]:
            return await h.counts(app_id, workspace_id, day(from_, "from"), day(to, "to"), event=event)

        return await answer(run())
