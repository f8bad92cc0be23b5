"""A link client as docs/link.md describes one: the reference for mobile SDKs, and the simulator's and the
tests' device.

    client = LinkClient("ws://host:8443/v1/link", "SHOP", "prod", "device-1", token)
    await client.connect()              # HELLO with the last acked number, WELCOME, then pull what waits
    message = await client.messages.get()
    ...
    await client.close()

It reads two streams, its inbox and its app's broadcasts: it pulls after WELCOME and on every NOTIFY, hands
each message to `messages` (broadcasts to `broadcasts`) once and in order (a message it already handed out,
seen again after a reconnect, is not handed out twice), acks after handing out, and pings at the interval
the server asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, ws_connect

from . import frames
from .frames import Ack, Hello, Message, Ping, Pull


class Closed(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(f"closed {code}: {reason}")
        self.code, self.reason = code, reason


class LinkClient:
    def __init__(
        self,
        url: str,
        app_id: str,
        workspace_id: str,
        device_id: str,
        token: bytes,
        *,
        last_acked: int = 0,
        broadcast_acked: int = 0,
        network: int = frames.Network.WIFI,
        ping: bool = True,
        auto_ack: bool = True,
    ):
        self.url, self.app_id, self.workspace_id, self.device_id = url, app_id, workspace_id, device_id
        self.token, self.network, self.ping, self.auto_ack = token, network, ping, auto_ack
        self.last_acked = last_acked  # the newest number handed out and acked: a reconnect resumes after it
        self.broadcast_acked = broadcast_acked  # the same, of the broadcasts (0: none read yet, start now)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.broadcasts: asyncio.Queue[Message] = asyncio.Queue()
        self.frames: list[Any] = []  # every server frame, in order (tests look at them)
        self.welcome: frames.Welcome | None = None
        self.interval = 0
        self.closed: asyncio.Future[Closed] | None = None
        self.goaway: frames.GoAway | None = None
        self._transport: WSTransport | None = None
        self._welcomed: asyncio.Event = asyncio.Event()
        self._pulling = [False, False]  # per stream
        self._want = [0, 0]  # the newest number known to be in each stream
        self._pinger: asyncio.Task[None] | None = None

    async def connect(self, wait_seconds: float = 10.0) -> frames.Welcome:
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        client = self

        class Listener(WSListener):
            def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
                if frame.msg_type == WSMsgType.CLOSE:
                    client._close_seen(int(frame.get_close_code()), frame.get_close_message().decode(errors="replace"))
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                elif frame.msg_type == WSMsgType.BINARY:
                    client._on_frame(frames.decode_server(frame.get_payload_as_bytes()))

            def on_ws_disconnected(self, transport: WSTransport) -> None:
                client._close_seen(1006, "disconnected")

        self._transport, _ = await ws_connect(
            Listener, self.url, extra_headers={"Sec-WebSocket-Protocol": frames.SUBPROTOCOL}
        )
        self.send(
            Hello(
                self.app_id,
                self.workspace_id,
                self.device_id,
                self.token,
                self.last_acked,
                self.network,
                broadcast_acked=self.broadcast_acked,
            )
        )
        welcome: asyncio.Future[Any] = asyncio.ensure_future(self._welcomed.wait())
        waits: set[asyncio.Future[Any]] = {welcome, self.closed}
        done, _ = await asyncio.wait(waits, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED)
        if welcome not in done:
            welcome.cancel()
            if self.closed.done():
                raise self.closed.result()
            raise TimeoutError("no WELCOME")
        assert self.welcome is not None
        return self.welcome

    def send(self, frame: Hello | Pull | Ack | Ping) -> None:
        if self._transport is not None and not self._transport.is_disconnected:
            self._transport.send(WSMsgType.BINARY, frame.encode())

    def send_raw(self, data: bytes, kind: WSMsgType = WSMsgType.BINARY) -> None:
        assert self._transport is not None
        self._transport.send(kind, data)

    def _on_frame(self, frame: frames.ServerFrame) -> None:
        self.frames.append(frame)
        if isinstance(frame, frames.Welcome):
            self.welcome, self.interval = frame, frame.heartbeat_seconds
            self._welcomed.set()
            if frame.last_seq < self.last_acked:  # the inbox was removed (idle): its numbers start again
                self.last_acked = 0
            if not self.broadcast_acked or frame.broadcast_last_seq < self.broadcast_acked:
                self.broadcast_acked = frame.broadcast_last_seq  # new to broadcasts (or they restarted): from now
            self._want = [frame.last_seq, frame.broadcast_last_seq]
            self._pull(frames.INBOX)
            self._pull(frames.BROADCAST)
            if self.ping and self._pinger is None:
                self._pinger = asyncio.get_running_loop().create_task(self._ping_loop())
        elif isinstance(frame, frames.Notify):
            self._want[frame.stream] = max(self._want[frame.stream], frame.last_seq)
            self._pull(frame.stream)
        elif isinstance(frame, frames.Messages):
            s = frame.stream
            self._pulling[s] = False
            acked = self.broadcast_acked if s == frames.BROADCAST else self.last_acked
            queue = self.broadcasts if s == frames.BROADCAST else self.messages
            newest = acked
            for m in frame.messages:
                if m.seq > newest:  # once each, in order
                    queue.put_nowait(m)
                    newest = m.seq
            if not frame.messages and frame.last_seq > newest:  # all up to lastSeq expired unread: move past
                newest = frame.last_seq
            self._want[s] = max(frame.last_seq, newest)  # the server's answer: what is there now
            if newest > acked:
                if s == frames.BROADCAST:  # not acked: the client's own cursor, sent in its next HELLO
                    self.broadcast_acked = newest
                elif self.auto_ack:
                    self.ack(newest, s)
            self._pull(s)
        elif isinstance(frame, frames.Pong):
            self.interval = frame.heartbeat_seconds
        elif isinstance(frame, frames.GoAway):
            self.goaway = frame

    def ack(self, seq: int, stream: int = frames.INBOX) -> None:
        if stream == frames.BROADCAST:
            self.broadcast_acked = max(self.broadcast_acked, seq)
        else:
            self.last_acked = max(self.last_acked, seq)
        self.send(Ack(seq, stream))

    def _pull(self, stream: int) -> None:
        acked = self.broadcast_acked if stream == frames.BROADCAST else self.last_acked
        if not self._pulling[stream] and self._want[stream] > acked:
            self._pulling[stream] = True
            self.send(Pull(acked, frames.MAX_PULL, stream))

    async def _ping_loop(self) -> None:
        while self.closed is not None and not self.closed.done():
            await asyncio.sleep(max(self.interval, 1))
            self.send(Ping(self.network))

    def _close_seen(self, code: int, reason: str) -> None:
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(Closed(code, reason))
        if self._pinger is not None:
            self._pinger.cancel()

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        t = self._transport
        if t is not None and not t.is_disconnected:
            with contextlib.suppress(Exception):
                t.send_close(WSCloseCode.OK)
            t.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t.wait_disconnected(), 5)
