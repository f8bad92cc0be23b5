"""The link server: WebSocket connections from devices (picows), each a `Session`, and what moves between them
and the stores (docs/link.md).

Per connection the server holds only a small `Session` (slots, no task of its own while idle): frames arrive
in picows callbacks; one needing the store is queued, and a task works the connection's queue while it is not
empty, so a connection's frames are handled in order and an idle one costs no task. Deadlines (the HELLO's, the
next heartbeat's) sit in one-second buckets swept by one task for the whole process.

Messages wait in each device's inbox (a SequencedLog in Redis): numbered per device, kept until acked or
their TTL. A delivery appends to the inbox, then tells the pod holding the device (the route table, Redis) to
notify it: at once when urgent, at the next heartbeat when not. The pods listen on a Redis channel each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from picows import (
    WSCloseCode,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from prometheus_client import Counter, Gauge, Histogram

from ..stores.presence import Lease, RouteTable
from ..stores.seqlog import SequencedLog
from . import frames, heartbeat
from .config import AppLink, LinkConfig
from .frames import Close, FrameError, FrameType, UnknownFrame
from .inbox import RECEIPT_LOG, RECEIPT_SECONDS, Inbox
from .pods import Pods, dispatch_body
from .tokens import TokenKey, check

log = logging.getLogger("mpaas.link")

HELLO_SECONDS = 10  # a connection that has not said HELLO by then is closed
RATE_PER_SECOND = 10.0  # frames a connection may send, sustained
RATE_BURST = 40.0
SEND_HIGH_WATER = 64 * 1024  # bytes queued to a client before its transport asks us to pause
SLOW_READER_BYTES = 1024 * 1024  # queued past this (4 full MESSAGES frames), or paused too long: dropped
SLOW_READER_SECONDS = 30.0
DIRECT_MAX_PAYLOAD = 1024  # a message this small to a client that is caught up is sent, not notified
QUEUE_LIMIT = 64  # frames waiting for the store on one connection; more: it is flooding
PROBE_MAX_DELAY_SECONDS = 0.5  # a full pod answers a probe this late
DRAIN_WAVES = 10
ACK_FLUSH_SECONDS = 0.05
MAX_AWAITED_ACKS = 256  # RECEIPT messages a connection remembers until acked
RECEIPTS_PER_ENTRY = 1000  # acks of RECEIPT messages in one entry of the receipt log


def receipt_id(payload: bytes) -> str | None:
    """The messageId of a RECEIPT message's JSON payload; None when it has none."""
    try:
        message_id = orjson.loads(payload).get("messageId")
    except (ValueError, AttributeError):
        return None
    return message_id if isinstance(message_id, str) and 0 < len(message_id) <= 64 else None


READ_CHUNK = 32  # entries read from the store for one PULL (at most 2 MiB): more, and the client pulls again

CONNECTIONS = Gauge("mpaas_link_connections", "Authenticated connections held by this process")
OPENED = Counter("mpaas_link_connections_opened_total", "WebSocket connections accepted")
CLOSED = Counter("mpaas_link_closes_total", "Connections closed by the server, by close code", ["code"])
FRAMES = Counter("mpaas_link_frames_total", "Frames received, by type", ["type"])
DELIVERED = Counter("mpaas_link_messages_sent_total", "Messages sent to devices (each time, resends included)")
ACKED = Counter("mpaas_link_acks_total", "Acks received")
NOTIFY_LATENCY = Histogram(
    "mpaas_link_notify_seconds",
    "From a delivery's append to its notify or message leaving this process",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


_FRAME_COUNTS = {t: FRAMES.labels(t.__name__.upper()) for t in (frames.Hello, frames.Pull, frames.Ack, frames.Ping)}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Limits:
    max_connections: int = 100_000
    hello_seconds: float = HELLO_SECONDS


NEW, HELLO, OPEN = 0, 1, 2  # Session.state: connected; HELLO received (being checked); WELCOME sent


class Session(WSListener):
    """One device's connection. Slots only: 100 000 of them must stay small."""

    __slots__ = (
        "app",
        "app_key",
        "bpending",
        "bsent",
        "catching",
        "ceiling",
        "closing",
        "deadline",
        "device",
        "inbox",
        "interval",
        "key_id",
        "lease",
        "network",
        "paused_at",
        "pending",
        "pending_at",
        "queue",
        "receipts",
        "refilled",
        "sent",
        "server",
        "state",
        "successes",
        "tokens",
        "transport",
        "worker",
    )

    def __init__(self, server: LinkServer):
        self.server = server
        self.transport: WSTransport | None = None
        self.state = NEW
        self.closing = False
        self.app: AppLink | None = None
        self.device = ""  # app/workspace/device: the inbox and route key
        self.inbox = ""
        self.lease: Lease | None = None
        self.key_id = ""
        self.interval = 0
        self.successes = 0
        self.ceiling = 0
        self.network = 0
        self.deadline = 0.0
        self.sent = 0  # the newest sequence number sent on this connection (or acked in its HELLO)
        self.pending = 0  # a non-urgent delivery's number, told at the next heartbeat
        self.app_key = ""  # app/workspace: its broadcast stream
        self.bsent = 0  # the newest broadcast number sent (or acked in HELLO, or the last one at connect)
        self.bpending = 0  # a non-urgent broadcast, told at the next heartbeat
        self.catching = False  # a route refresh in flight
        self.pending_at = 0.0
        self.tokens = RATE_BURST
        self.refilled = time.monotonic()
        self.queue: deque[Any] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.paused_at = 0.0
        self.receipts: dict[int, str] | None = None  # number -> message id: sent, to be reported when acked

    # --- picows callbacks -------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        OPENED.inc()
        under = transport.underlying_transport
        under.set_write_buffer_limits(high=SEND_HIGH_WATER)
        limits = self.server.limits
        if len(self.server.sessions) + len(self.server.pending_hello) >= limits.max_connections or len(
            self.server.pending_hello
        ) >= max(limits.max_connections // 10, 100):  # connections that never say HELLO fill a tenth at most
            self.close(Close.SERVER_FULL, "this link process is full: ask /dispatch for another")
            return
        self.server.expect(self, time.monotonic() + self.server.limits.hello_seconds)
        self.server.pending_hello.add(self)

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if self.closing:
            return
        kind = frame.msg_type
        if kind != WSMsgType.BINARY:
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            elif kind in (WSMsgType.PING, WSMsgType.PONG):
                pass  # WebSocket's own pings (picows answers them): no heartbeat of ours
            else:
                self.close(Close.UNKNOWN_FRAME, "frames are binary WebSocket messages")
            return
        if not frame.fin:
            self.close(Close.PROTOCOL_ERROR, "a frame is one unfragmented WebSocket message")
            return
        now = time.monotonic()
        self.tokens = min(RATE_BURST, self.tokens + (now - self.refilled) * RATE_PER_SECOND)
        self.refilled = now
        if self.tokens < 1:
            self.close(Close.RATE_LIMITED, f"more than {RATE_PER_SECOND:g} frames a second")
            return
        self.tokens -= 1
        try:
            parsed = frames.decode_client(frame.get_payload_as_memoryview())
        except UnknownFrame as e:
            self.close(Close.UNKNOWN_FRAME, str(e))
            return
        except FrameError as e:
            self.close(Close.PROTOCOL_ERROR, str(e))
            return
        _FRAME_COUNTS[type(parsed)].inc()
        if isinstance(parsed, frames.Hello):
            if self.state != NEW:
                self.close(Close.PROTOCOL_ERROR, "HELLO once")
                return
            self.state = HELLO
        elif self.state == NEW:
            self.close(Close.NOT_AUTHENTICATED, "HELLO first")
            return
        if self.state == OPEN:
            # A sign of life: the deadline moves; its bucket stays, and the sweep finds the new one when it fires.
            self.deadline = now + heartbeat.deadline_seconds(self.interval)
            if isinstance(parsed, frames.Ping):
                self._ping(parsed)  # nothing to wait for: answered at once
                return
            if isinstance(parsed, frames.Ack) and not self.queue:  # in order with the frames before it
                self._ack(parsed)
                return
        if self.queue is None:
            self.queue = deque()
        if len(self.queue) >= QUEUE_LIMIT:
            self.close(Close.RATE_LIMITED, "too many frames waiting for an answer")
            return
        self.queue.append(parsed)
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closing = True
        self.server.gone(self)

    def pause_writing(self) -> None:
        self.paused_at = time.monotonic()
        self.server.expect_reader(self)

    def resume_writing(self) -> None:
        self.paused_at = 0.0

    # --- work -------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            while self.queue and not self.closing:
                frame = self.queue.popleft()
                if isinstance(frame, frames.Hello):
                    await self._hello(frame)
                elif isinstance(frame, frames.Pull):
                    await self._pull(frame)
                elif isinstance(frame, frames.Ack):
                    self._ack(frame)
                elif isinstance(frame, frames.Ping):  # sent before the WELCOME came back
                    self._ping(frame)
        except Exception as e:  # the store failed: the client reconnects and resumes from its last ack
            log.warning("link: connection of %s closed on a store error: %r", self.device or "a device", e)
            self.close(Close.INTERNAL_ERROR, "the server's store failed: reconnect")
        finally:
            self.worker = None
            if not self.queue:
                self.queue = None

    async def _hello(self, hello: frames.Hello) -> None:
        server = self.server
        if hello.version != frames.VERSION:
            self.close(Close.UNSUPPORTED_VERSION, f"this server speaks version {frames.VERSION}")
            return
        app = server.config().find(hello.app_id, hello.workspace_id)
        if app is None:
            self.close(Close.UNKNOWN_APP, "no Link PushChannel for this app")
            return
        if not frames.valid_device_id(hello.device_id) or not frames.valid_app_id(hello.workspace_id):
            self.close(Close.UNAUTHORIZED, "a device id of 1-128 printable bytes, no spaces or braces, is required")
            return
        if server.draining:
            self.close(Close.GOING_AWAY, "the server drains: ask /dispatch for another")
            return
        key = check(hello.token, list(app.keys), hello.app_id, hello.workspace_id, hello.device_id, time.time())
        if not isinstance(key, TokenKey):
            self.close(Close.UNAUTHORIZED, key if app.keys else (app.problem or "no token key"))
            return
        self.app, self.key_id, self.network = app, key.id, hello.network
        self.device = f"{hello.app_id}/{hello.workspace_id}/{hello.device_id}"
        self.inbox = self.device
        self.app_key = f"{hello.app_id}/{hello.workspace_id}"
        remembered = await server.heartbeats.get(self.device, self.network)
        self.interval = heartbeat.start(remembered, app.bounds)
        self.ceiling = remembered.ceiling if remembered else 0
        self.lease = await server.routes.claim(self.device, server.pod, ttl_seconds=self._route_ttl())
        if self.closing:  # gone while claiming: give the route back
            await server.routes.release(self.lease)
            return
        server.adopt(self)
        if self.lease.previous_pod and self.lease.previous_pod != server.pod:  # that pod closes its connection
            server.later(server.bus_replaced(self.lease.previous_pod, self.device, self.lease.token))
        cursor = 0
        if hello.last_acked:
            if server.receipts is not None:
                await self._acked_in_hello(hello.last_acked)
            cursor = await server.inbox.ack(self.inbox, hello.last_acked)
        last = await server.inbox.last(self.inbox)
        # An app without broadcasts yet: the client's own cursor, or a number below every future one (so 0
        # always means "new to them").
        blast = await server.broadcasts.last(self.app_key) or hello.broadcast_acked or _now_ms() * 1000
        if self.closing:
            return
        self.sent = max(cursor, min(hello.last_acked, last))
        # A device new to broadcasts starts at the newest: the app's past broadcasts are not its.
        self.bsent = min(hello.broadcast_acked, blast) if hello.broadcast_acked else blast
        self.state = OPEN
        self.deadline = time.monotonic() + heartbeat.deadline_seconds(self.interval)  # its bucket re-sorts it
        self.send(frames.Welcome(self.interval, last, _now_ms(), blast).encode())
        if self.pending > last:  # a delivery while this was said: tell it now
            self.notify(self.pending, urgent=True, at=self.pending_at)
        if self.bpending > blast:
            self.notify_broadcast(self.bpending, urgent=True)

    async def _acked_in_hello(self, upto: int) -> None:
        """The RECEIPT messages a HELLO acks (received before a connection dropped, acked only now): reported
        delivered like any ack of them. The inbox holds nothing acked, so its first entries are those; read
        before the ack drops them, at most MAX_AWAITED_ACKS, as a connection remembers."""
        batch = await self.server.inbox.read(self.inbox, 0, MAX_AWAITED_ACKS)
        ids = [m for m in batch.messages if m.seq <= upto and m.flags & frames.RECEIPT]
        self.server.delivered(self.device, [i for i in map(receipt_id, (m.payload for m in ids)) if i is not None])

    async def _pull(self, pull: frames.Pull) -> None:
        count = min(max(pull.max, 1), READ_CHUNK)
        if pull.stream == frames.BROADCAST:
            batch = await self.server.broadcasts.read(self.app_key, pull.after, count)
            self.send(frames.Messages(batch.messages, batch.last_seq, pull.after, frames.BROADCAST).encode())
            # Nothing left to read up to lastSeq (expired, or evicted): the client moves past it.
            upto = batch.messages[-1].seq if batch.messages else max(batch.last_seq, pull.after)
            self.bsent = max(self.bsent, upto)
            self.server.count_sent(len(batch.messages))
            return
        batch = await self.server.inbox.read(self.inbox, pull.after, count)
        self.send(frames.Messages(batch.messages, batch.last_seq, pull.after).encode())
        self._await_acks(batch.messages)
        upto = batch.messages[-1].seq if batch.messages else max(batch.last_seq, pull.after)
        self.sent = max(self.sent, upto)
        self.server.count_sent(len(batch.messages))
        if self.pending and self.sent >= self.pending:
            self.pending = 0

    def _ack(self, ack: frames.Ack) -> None:
        sent = self.bsent if ack.stream == frames.BROADCAST else self.sent
        if ack.seq > sent:
            self.close(Close.BAD_ACK, f"ack of {ack.seq}, but {sent} is the newest number sent")
            return
        ACKED.inc()
        if ack.stream == frames.INBOX:  # broadcasts are kept for every device: the client holds its cursor
            self.server.acked(self.inbox, ack.seq)
            if self.receipts:
                done = [seq for seq in self.receipts if seq <= ack.seq]
                self.server.delivered(self.device, [self.receipts.pop(seq) for seq in done])

    def _await_acks(self, messages: list[frames.Message]) -> None:
        """Remember the messages sent whose acks their sender wants to hear of (frames.RECEIPT)."""
        for m in messages:
            if m.flags & frames.RECEIPT:
                message_id = receipt_id(m.payload)
                if message_id is not None:
                    if self.receipts is None:
                        self.receipts = {}
                    elif len(self.receipts) >= MAX_AWAITED_ACKS:  # a client that never acks: the oldest go
                        del self.receipts[next(iter(self.receipts))]
                    self.receipts[m.seq] = message_id

    def _ping(self, ping: frames.Ping) -> None:
        app = self.app
        assert app is not None
        if ping.network != self.network:  # another network: its own interval
            self.network, self.successes = ping.network, 0
            self.server.later(self._switch_network())
        else:
            self.successes += 1
            longer = heartbeat.grown(self.interval, self.successes, self.ceiling, app.bounds)
            if longer != self.interval:
                self.interval, self.successes = longer, 0
                self.server.later(self.server.heartbeats.set(self.device, self.network, longer, self.ceiling))
        self.send(frames.Pong(self.interval).encode())
        self.deadline = time.monotonic() + heartbeat.deadline_seconds(self.interval)
        if self.pending:  # delayed push: the non-urgent messages ride this heartbeat
            self.notify(self.pending, urgent=True, at=self.pending_at)
        if self.bpending:
            self.notify_broadcast(self.bpending, urgent=True)
        if not self.pending and not self.bpending:  # a notice lost on the bus: what was not sent, told now
            self.server.later(self._catch_up())
        if self.lease is not None and not self.catching:
            self.catching = True  # one refresh at a time: a ping flood makes no pile of store calls
            self.server.later(self._refresh_route(self.lease))

    async def _refresh_route(self, lease: Lease) -> None:
        try:
            if not await self.server.routes.heartbeat(lease, ttl_seconds=self._route_ttl()):
                # Another connection of the device took the route (its notice to close this one was lost).
                self.close(Close.REPLACED, "a newer connection of this device took over")
        finally:
            self.catching = False

    async def _catch_up(self) -> None:
        last = await self.server.inbox.last(self.inbox)
        if last > self.sent:
            self.notify(last, urgent=True)
        blast = await self.server.broadcasts.last(self.app_key)
        if blast > self.bsent:
            self.notify_broadcast(blast, urgent=True)

    async def _switch_network(self) -> None:
        app = self.app
        assert app is not None
        remembered = await self.server.heartbeats.get(self.device, self.network)
        self.interval = heartbeat.start(remembered, app.bounds)
        self.ceiling = remembered.ceiling if remembered else 0

    def _route_ttl(self) -> float:
        return heartbeat.deadline_seconds(self.interval or heartbeat.Bounds().max_seconds) * 2

    # --- to the client ------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closing:
            return
        t.send(WSMsgType.BINARY, data)
        # Past the high-water mark the transport paused us (pause_writing): only then can the buffer be large.
        if self.paused_at and t.underlying_transport.get_write_buffer_size() > SLOW_READER_BYTES:
            self.close(Close.SLOW_READER, "the client does not read what it is sent", abort=True)

    def notify(self, last_seq: int, *, urgent: bool, at: float = 0.0, small: frames.Message | None = None) -> None:
        """The inbox holds `last_seq` now: tell the client (urgent) or at its next heartbeat."""
        if self.closing or last_seq <= self.sent:
            return
        if not urgent or self.state != OPEN:  # before WELCOME: told right after it
            if last_seq > self.pending:
                self.pending, self.pending_at = last_seq, at or time.monotonic()
            return
        if small is not None and small.seq == last_seq == self.sent + 1 and len(small.payload) <= DIRECT_MAX_PAYLOAD:
            self.send(frames.Messages([small], last_seq, self.sent).encode())
            self.sent = last_seq
            self.server.count_sent(1)
            self._await_acks([small])
        else:
            self.send(frames.Notify(last_seq).encode())
        if at:
            NOTIFY_LATENCY.observe(max(time.monotonic() - at, 0.0))
        if self.pending <= last_seq:
            self.pending = 0

    def notify_broadcast(self, seq: int, *, urgent: bool, direct: bytes = b"", frame: bytes = b"") -> None:
        """The app's broadcast stream holds `seq` now. `direct`: that message, as the MESSAGES frame a client
        that has every broadcast before it gets; `frame`: the NOTIFY (both encoded once for every session)."""
        if self.closing or seq <= self.bsent:
            return
        if not urgent or self.state != OPEN:
            self.bpending = max(self.bpending, seq)
            return
        if direct and seq == self.bsent + 1:
            self.send(direct)
            self.bsent = seq
        else:
            self.send(frame or frames.Notify(seq, frames.BROADCAST).encode())
        if self.bpending <= seq:
            self.bpending = 0

    def close(self, code: Close, reason: str, *, abort: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        CLOSED.labels(str(int(code))).inc()
        t = self.transport
        if t is not None:
            if abort:
                t.disconnect(graceful=False)
            else:
                with contextlib.suppress(Exception):
                    t.send_close(WSCloseCode(int(code)), reason.encode()[:120])
                t.disconnect()

    def timed_out(self) -> None:
        if self.state != OPEN:
            self.close(Close.HELLO_TIMEOUT, f"no HELLO within {self.server.limits.hello_seconds:g} s")
            return
        app = self.app
        if app is not None:  # the network dropped it between pings: a shorter interval next time
            remembered = heartbeat.after_timeout(self.interval, app.bounds)
            self.server.later(
                self.server.heartbeats.set(self.device, self.network, remembered.seconds, remembered.ceiling)
            )
        self.close(Close.HEARTBEAT_TIMEOUT, f"no frame within {heartbeat.deadline_seconds(self.interval)} s")


class LinkServer:
    """The connections of this process, their deadlines, and the pod's side of routing."""

    def __init__(
        self,
        config: Callable[[], LinkConfig],
        inbox: Inbox,
        routes: RouteTable,
        heartbeats: HeartbeatMemory,
        pod: str,
        limits: Limits | None = None,
        broadcasts: Inbox | None = None,
        receipts: SequencedLog | None = None,
    ):
        self.config, self.inbox, self.routes, self.heartbeats, self.pod = config, inbox, routes, heartbeats, pod
        self.receipts = receipts  # where acks of RECEIPT messages go (RECEIPT_LOG), None: nowhere
        self.limits = limits or Limits()
        self.sessions: dict[str, Session] = {}  # device key -> its authenticated session
        self.by_app: dict[str, set[Session]] = {}  # app/workspace -> its sessions: broadcasts
        self.broadcasts = broadcasts or inbox  # the apps' broadcast streams (by app/workspace)
        self.pending_hello: set[Session] = set()  # connected, not adopted yet
        self.bus: Any = None  # deliver.Bus, set by the component: tells other pods of routes taken over
        self.pods: Pods | None = None  # the deployment's pods and their load (dispatch, drain)
        self.sent = 0  # messages sent since the process started
        self.draining = False
        self._buckets: dict[int, set[Session]] = {}
        self._readers: set[Session] = set()  # paused writers, checked by the sweep
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._acks: dict[str, int] = {}  # inbox -> the newest number acked, not written yet
        self._delivered: list[tuple[str, str]] = []  # (device key, message id) acked, not written yet
        self._flusher: asyncio.Task[None] | None = None

    # --- picows factory ---

    def listener(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        path = request.path.split(b"?")[0]
        if path == b"/dispatch" and self.pods is not None:
            body = dispatch_body(self.pods.ranked())
            answer = WSUpgradeResponse.create_ok_response(
                body, {"Content-Type": "application/json", "Cache-Control": "no-store"}
            )
            return WSUpgradeResponseWithListener(answer, None)
        if path == b"/v1/link/probe":
            return Probe(self.probe_delay())
        if path not in (b"/v1/link", b"/v1/link/"):
            return None  # 404
        offered = [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", []) for p in v.split(",")]
        if not offered:
            return Session(self)
        if frames.SUBPROTOCOL not in offered:
            refusal = WSUpgradeResponse.create_error_response(400, f"subprotocol {frames.SUBPROTOCOL} only\n".encode())
            return WSUpgradeResponseWithListener(refusal, None)
        agreed = WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": frames.SUBPROTOCOL})
        return WSUpgradeResponseWithListener(agreed, Session(self))

    # --- registry ---

    def adopt(self, session: Session) -> None:
        self.pending_hello.discard(session)
        older = self.sessions.get(session.device)
        if older is not None and older is not session:
            older.close(Close.REPLACED, "a newer connection of this device took over")
        self.sessions[session.device] = session
        self.by_app.setdefault(session.app_key, set()).add(session)
        CONNECTIONS.set(len(self.sessions))

    def gone(self, session: Session) -> None:
        self.pending_hello.discard(session)
        if self.sessions.get(session.device) is session:
            del self.sessions[session.device]
            CONNECTIONS.set(len(self.sessions))
        peers = self.by_app.get(session.app_key)
        if peers is not None:
            peers.discard(session)
            if not peers:
                del self.by_app[session.app_key]
        if session.lease is not None:
            self.later(self.routes.release(session.lease))
        self._readers.discard(session)

    def count_sent(self, n: int) -> None:
        self.sent += n
        DELIVERED.inc(n)

    async def bus_replaced(self, pod: str, device: str, token: str) -> None:
        if self.bus is not None:
            await self.bus.replaced(pod, device, token)

    def notify(self, device: str, message: frames.Message, *, small: bool, at: float) -> None:
        """A delivery for a device this process may hold (deliver.Local)."""
        session = self.sessions.get(device)
        if session is not None:
            urgent = bool(message.flags & frames.URGENT)
            session.notify(message.seq, urgent=urgent, at=at, small=message if small else None)

    def broadcast(self, app_key: str, message: frames.Message, *, small: bool, at: float) -> None:
        """A broadcast of an app (deliver.Local): every session of it told, or sent the message itself."""
        peers = self.by_app.get(app_key)
        if not peers:
            return
        urgent = bool(message.flags & frames.URGENT)
        direct = b""
        if small and len(message.payload) <= DIRECT_MAX_PAYLOAD:
            direct = frames.Messages([message], message.seq, message.seq - 1, frames.BROADCAST).encode()
        notice = frames.Notify(message.seq, frames.BROADCAST).encode()
        sent = 0
        for session in list(peers):
            before = session.bsent
            session.notify_broadcast(message.seq, urgent=urgent, direct=direct, frame=notice)
            sent += session.bsent != before
        self.count_sent(sent)
        if at:
            NOTIFY_LATENCY.observe(max(time.monotonic() - at, 0.0))

    def replaced(self, device: str, token: str) -> None:
        """Another pod took this device's route (told through the pod channel)."""
        session = self.sessions.get(device)
        if session is not None and session.lease is not None and session.lease.token != token:
            session.close(Close.REPLACED, "a newer connection of this device took over")

    def close_revoked(self) -> None:
        """Connections authenticated by a token key that is no longer valid (deleted, or past its overlap)."""
        valid = self.config().key_ids()
        for session in list(self.sessions.values()):
            if session.key_id not in valid:
                session.close(Close.UNAUTHORIZED, "the token key was revoked")

    def load(self) -> float:
        return len(self.sessions) / self.limits.max_connections

    def probe_delay(self) -> float:
        """A loaded pod answers probes late, in proportion to its load: clients drift to lighter ones."""
        return min(self.load(), 1.0) * PROBE_MAX_DELAY_SECONDS

    async def drain(self, seconds: float) -> None:
        """Send every client elsewhere within `seconds`: GOAWAY with the lightest other pods, in waves (so
        they do not all reconnect at once), then close them (1001)."""
        self.draining = True
        addresses = [p.address for p in self.pods.ranked(exclude=self.pod)] if self.pods is not None else []
        sessions = list(self.sessions.values())
        for session in list(self.pending_hello):
            session.close(Close.GOING_AWAY, "the server drains: ask /dispatch for another")
        waves = max(1, min(DRAIN_WAVES, len(sessions)))
        step = max(seconds * 0.8, 0.0) / waves
        for i in range(waves):
            for n, session in enumerate(sessions[i::waves]):
                delay = int(random.uniform(0, step * 1000))  # spread over the wave's time: no thundering herd
                # Each client gets the pods in another order: they spread instead of all filling the lightest.
                turn = n % len(addresses) if addresses else 0
                order = addresses[turn:] + addresses[:turn]
                session.send(frames.GoAway(Close.GOING_AWAY, order, delay).encode())
                session.close(Close.GOING_AWAY, "the server drains: reconnect where GOAWAY says")
            if i + 1 < waves:
                await asyncio.sleep(step)

    # --- acks: written to the inboxes together, every ACK_FLUSH_SECONDS ---

    def acked(self, inbox: str, seq: int) -> None:
        if seq > self._acks.get(inbox, 0):
            self._acks[inbox] = seq
        self._flush_soon()

    def delivered(self, device: str, message_ids: list[str]) -> None:
        """Acks of RECEIPT messages: written to the receipt log with the acks (or alone: a HELLO's)."""
        if self.receipts is not None and message_ids:
            self._delivered += [(device, m) for m in message_ids]
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        await asyncio.sleep(ACK_FLUSH_SECONDS)
        while self._acks or self._delivered:
            batch, self._acks = self._acks, {}
            delivered, self._delivered = self._delivered, []
            try:
                if batch:
                    await self.inbox.ack_many(list(batch.items()))
            except Exception as e:  # lost acks only resend messages, which clients drop by their numbers
                log.warning("link: %d acks not written: %r", len(batch), e)
            if delivered and self.receipts is not None:
                try:
                    for i in range(0, len(delivered), RECEIPTS_PER_ENTRY):  # entries of a bounded size
                        part = orjson.dumps(delivered[i : i + RECEIPTS_PER_ENTRY])
                        await self.receipts.append(RECEIPT_LOG, part, ttl_seconds=RECEIPT_SECONDS)
                except Exception as e:  # receipts are figures: lost ones are not sent again
                    log.warning("link: %d delivery receipts not written: %r", len(delivered), e)

    # --- deadlines ---

    def expect(self, session: Session, at: float) -> None:
        session.deadline = at
        self._buckets.setdefault(int(at) + 1, set()).add(session)

    def expect_reader(self, session: Session) -> None:
        self._readers.add(session)

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for second in [s for s in self._buckets if s <= now]:
                for session in self._buckets.pop(second):
                    if session.closing:
                        continue
                    try:
                        if session.deadline <= now:
                            session.timed_out()
                        else:  # a frame came since: its new deadline has its own bucket
                            self._buckets.setdefault(int(session.deadline) + 1, set()).add(session)
                    except Exception:  # one session's failure must not stop every deadline
                        log.exception("link: a deadline of %s failed", session.device or "a connection")
            for session in list(self._readers):
                if session.closing or not session.paused_at:
                    self._readers.discard(session)
                elif now - session.paused_at > SLOW_READER_SECONDS:
                    self._readers.discard(session)
                    session.close(Close.SLOW_READER, "the client does not read what it is sent", abort=True)

    # --- background work ---

    def later(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("link: background store call failed: %r", task.exception())

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self.sweep(), name="link deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._acks:  # what was acked before the stop is kept
            with contextlib.suppress(Exception):
                await self.inbox.ack_many(list(self._acks.items()))
        for session in [*self.sessions.values(), *self.pending_hello]:
            session.close(Close.GOING_AWAY, "the server is stopping")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


class Probe(WSListener):
    """`/v1/link/probe`: one binary frame after the pod's load-given delay, then a normal close."""

    __slots__ = ("delay",)

    def __init__(self, delay: float):
        self.delay = delay

    def on_ws_connected(self, transport: WSTransport) -> None:
        asyncio.get_running_loop().call_later(self.delay, self._answer, transport)

    @staticmethod
    def _answer(transport: WSTransport) -> None:
        if not transport.is_disconnected:
            transport.send(WSMsgType.BINARY, b"\x00")
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


class HeartbeatMemory:
    """Each device's interval per network, in the hot store."""

    def __init__(self, store: Any, *, prefix: str = "link:hb:"):
        self.store, self.prefix = store, prefix

    async def get(self, device: str, network: int) -> heartbeat.Remembered | None:
        raw = await self.store.get(f"{self.prefix}{device}:{network}")
        if not raw:
            return None
        try:
            seconds, ceiling = (int(x) for x in raw.decode().split(" "))
        except ValueError:
            return None
        return heartbeat.Remembered(seconds, ceiling)

    async def set(self, device: str, network: int, seconds: int, ceiling: int) -> None:
        ttl = heartbeat.CEILING_DAYS * 86400 if ceiling else 30 * 86400
        await self.store.set(f"{self.prefix}{device}:{network}", f"{seconds} {ceiling}".encode(), ttl_seconds=ttl)


__all__ = ["FrameType", "HeartbeatMemory", "Limits", "LinkServer", "SequencedLog", "Session"]
