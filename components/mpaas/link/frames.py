"""The link protocol's frames (docs/link.md): one frame per WebSocket binary message, subprotocol `mpaas-link.v1`.

A frame is its type (one byte) and its fields in a fixed order, each an unsigned LEB128 varint or a byte string
(a varint length, then the bytes). Decoding is strict: a truncated field, a varint longer than 10 bytes, a
string over its bound or bytes left over is a `FrameError`, which the server answers with close code
PROTOCOL_ERROR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum

SUBPROTOCOL = "mpaas-link.v1"
VERSION = 1
MAX_FRAME = 64 * 1024  # bytes of one frame from a client; larger: close FRAME_TOO_LARGE
MAX_ID = 128  # bytes of an app, workspace or device id
MAX_TOKEN = 512
MAX_PULL = 256  # messages in one MESSAGES frame


class FrameType(IntEnum):
    # client -> server
    HELLO = 0x01
    PULL = 0x02
    ACK = 0x03
    PING = 0x04
    # server -> client
    WELCOME = 0x81
    NOTIFY = 0x82
    MESSAGES = 0x83
    PONG = 0x84
    GOAWAY = 0x85


class Close(IntEnum):
    """WebSocket close codes the server sends, with the reason in the close frame's text."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server drains: a GOAWAY frame said where to go
    PROTOCOL_ERROR = 4000  # a frame that does not decode, or a fragmented message
    UNAUTHORIZED = 4001  # the token is wrong, expired, or its key was revoked
    REPLACED = 4002  # a newer connection of the same device took over
    NOT_AUTHENTICATED = 4003  # a frame other than HELLO before WELCOME
    UNKNOWN_FRAME = 4004  # a frame type this version does not know, or a text message
    FRAME_TOO_LARGE = 4005
    RATE_LIMITED = 4006  # more frames per second than the connection may send
    SLOW_READER = 4007  # the client did not read what was sent to it: its buffer is full
    HEARTBEAT_TIMEOUT = 4008  # no frame within the heartbeat interval and its grace
    BAD_ACK = 4009  # an ack of a number never sent
    UNKNOWN_APP = 4010  # no Link PushChannel for the app
    UNSUPPORTED_VERSION = 4011
    SERVER_FULL = 4012  # the pod holds its maximum of connections: ask dispatch for another
    HELLO_TIMEOUT = 4013  # no HELLO within the handshake's time
    INTERNAL_ERROR = 4500  # the server's store failed: reconnect later


INBOX, BROADCAST = 0, 1  # the two streams a device reads: its own inbox, and its app's broadcasts


class Network(IntEnum):
    UNKNOWN = 0
    WIFI = 1
    CELLULAR = 2
    ETHERNET = 3


class FrameError(ValueError):
    """A frame that does not decode; says why."""


# Ids are keys in the stores and fields of the pods' notices: no control characters, spaces or braces (and,
# for apps and workspaces, no "/": the device key is app/workspace/device).
_DEVICE_ID = re.compile(r"[^\x00-\x20\x7f{}]{1,128}")
_APP_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def valid_device_id(s: str) -> bool:
    return _DEVICE_ID.fullmatch(s) is not None


def valid_app_id(s: str) -> bool:
    return _APP_ID.fullmatch(s) is not None


# --- encoding ---------------------------------------------------------------------------------------------


def _uvarint(out: bytearray, n: int) -> None:
    if n < 0:
        raise ValueError("varints are unsigned")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _bytes(out: bytearray, b: bytes) -> None:
    _uvarint(out, len(b))
    out += b


class Reader:
    """Reads a frame's fields in order; every read checks what is left."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview):
        self.data = bytes(data)
        self.pos = 1  # after the type

    def uvarint(self) -> int:
        n = shift = 0
        data = self.data
        for i in range(10):
            if self.pos >= len(data):
                raise FrameError("a field is cut short")
            b = data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                if i and b == 0:
                    raise FrameError("a varint is not in its shortest form")
                return n
            shift += 7
        raise FrameError("a varint longer than 10 bytes")

    def bytes(self, limit: int, what: str) -> bytes:
        n = self.uvarint()
        if n > limit:
            raise FrameError(f"{what} is longer than {limit} bytes")
        if self.pos + n > len(self.data):
            raise FrameError(f"{what} is cut short")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self, limit: int, what: str) -> str:
        raw = self.bytes(limit, what)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise FrameError(f"{what} is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError("bytes after the frame's last field")


# --- client frames ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    app_id: str
    workspace_id: str
    device_id: str
    token: bytes
    last_acked: int = 0  # the newest sequence number of its inbox the client has processed (0: none)
    network: int = Network.UNKNOWN
    version: int = VERSION
    broadcast_acked: int = 0  # the newest broadcast number it has processed (0: none yet, start now)

    def encode(self) -> bytes:
        out = bytearray([FrameType.HELLO])
        _uvarint(out, self.version)
        for s in (self.app_id, self.workspace_id, self.device_id):
            _bytes(out, s.encode())
        _bytes(out, self.token)
        _uvarint(out, self.last_acked)
        _uvarint(out, self.network)
        _uvarint(out, self.broadcast_acked)
        return bytes(out)


@dataclass(frozen=True)
class Pull:
    after: int
    max: int = MAX_PULL
    stream: int = INBOX

    def encode(self) -> bytes:
        out = bytearray([FrameType.PULL])
        _uvarint(out, self.stream)
        _uvarint(out, self.after)
        _uvarint(out, self.max)
        return bytes(out)


@dataclass(frozen=True)
class Ack:
    seq: int
    stream: int = INBOX

    def encode(self) -> bytes:
        out = bytearray([FrameType.ACK])
        _uvarint(out, self.stream)
        _uvarint(out, self.seq)
        return bytes(out)


@dataclass(frozen=True)
class Ping:
    network: int = Network.UNKNOWN  # the network the client is on now (the interval is kept per network)

    def encode(self) -> bytes:
        out = bytearray([FrameType.PING])
        _uvarint(out, self.network)
        return bytes(out)


ClientFrame = Hello | Pull | Ack | Ping


def decode_client(data: bytes | memoryview) -> ClientFrame:
    """A client's frame; FrameError when it does not decode, UnknownFrame for a type this version lacks."""
    if not data:
        raise FrameError("an empty frame")
    r = Reader(data)
    kind = r.data[0]
    frame: ClientFrame
    if kind == FrameType.HELLO:
        version = r.uvarint()
        app = r.text(MAX_ID, "appId")
        workspace = r.text(MAX_ID, "workspaceId")
        device = r.text(MAX_ID, "deviceId")
        token = r.bytes(MAX_TOKEN, "the token")
        acked, network, broadcast = r.uvarint(), r.uvarint(), r.uvarint()
        if network > Network.ETHERNET:
            raise FrameError(f"network {network}: 0 to {int(Network.ETHERNET)}")
        frame = Hello(app, workspace, device, token, acked, network, version, broadcast)
    elif kind == FrameType.PULL:
        stream = _stream(r)
        frame = Pull(r.uvarint(), r.uvarint(), stream)
    elif kind == FrameType.ACK:
        stream = _stream(r)
        frame = Ack(r.uvarint(), stream)
    elif kind == FrameType.PING:
        network = r.uvarint()
        if network > Network.ETHERNET:
            raise FrameError(f"network {network}: 0 to {int(Network.ETHERNET)}")
        frame = Ping(network)
    else:
        raise UnknownFrame(kind)
    r.end()
    return frame


def _stream(r: Reader) -> int:
    stream = r.uvarint()
    if stream not in (INBOX, BROADCAST):
        raise FrameError(f"stream {stream}: 0 (inbox) or 1 (broadcast)")
    return stream


class UnknownFrame(FrameError):
    def __init__(self, kind: int):
        super().__init__(f"unknown frame type 0x{kind:02x}")
        self.kind = kind


# --- server frames ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Welcome:
    heartbeat_seconds: int
    last_seq: int  # the newest number in the device's inbox (0: empty, or never written)
    server_time_ms: int
    broadcast_last_seq: int = 0  # the newest broadcast of the app

    def encode(self) -> bytes:
        out = bytearray([FrameType.WELCOME])
        for n in (self.heartbeat_seconds, self.last_seq, self.server_time_ms, self.broadcast_last_seq):
            _uvarint(out, n)
        return bytes(out)


@dataclass(frozen=True)
class Notify:
    last_seq: int
    stream: int = INBOX

    def encode(self) -> bytes:
        out = bytearray([FrameType.NOTIFY])
        _uvarint(out, self.stream)
        _uvarint(out, self.last_seq)
        return bytes(out)


URGENT = 1
# The payload is a JSON object with a messageId its sender wants to hear was delivered: the device's ack of it
# is reported (push's "delivered" receipts). A client may ignore it.
RECEIPT = 2


@dataclass(frozen=True)
class Message:
    seq: int
    payload: bytes
    flags: int = 0  # URGENT
    expires_at_ms: int = 0  # 0: never


@dataclass(frozen=True)
class Messages:
    messages: list[Message]
    last_seq: int  # the newest number in the stream: more to pull when above the last message's
    after: int = 0  # the number the messages follow (what was pulled from)
    stream: int = INBOX

    def encode(self) -> bytes:
        out = bytearray([FrameType.MESSAGES])
        _uvarint(out, self.stream)
        _uvarint(out, self.after)
        _uvarint(out, self.last_seq)
        _uvarint(out, len(self.messages))
        for m in self.messages:
            _uvarint(out, m.seq)
            _uvarint(out, m.flags)
            _uvarint(out, m.expires_at_ms)
            _bytes(out, m.payload)
        return bytes(out)


@dataclass(frozen=True)
class Pong:
    heartbeat_seconds: int  # the interval to wait before the next PING

    def encode(self) -> bytes:
        out = bytearray([FrameType.PONG])
        _uvarint(out, self.heartbeat_seconds)
        return bytes(out)


@dataclass(frozen=True)
class GoAway:
    reason: int  # Close code the connection ends with
    addresses: list[str] = field(default_factory=list)  # where to reconnect, lightest first
    delay_ms: int = 0  # wait this long (plus jitter of the client's) before reconnecting

    def encode(self) -> bytes:
        out = bytearray([FrameType.GOAWAY])
        _uvarint(out, self.reason)
        _uvarint(out, self.delay_ms)
        _uvarint(out, len(self.addresses))
        for a in self.addresses:
            _bytes(out, a.encode())
        return bytes(out)


ServerFrame = Welcome | Notify | Messages | Pong | GoAway


def decode_server(data: bytes | memoryview, *, max_payload: int = 1 << 20) -> ServerFrame:
    """A server's frame (clients and tests); FrameError when it does not decode."""
    if not data:
        raise FrameError("an empty frame")
    r = Reader(data)
    kind = r.data[0]
    frame: ServerFrame
    if kind == FrameType.WELCOME:
        frame = Welcome(r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint())
    elif kind == FrameType.NOTIFY:
        stream = _stream(r)
        frame = Notify(r.uvarint(), stream)
    elif kind == FrameType.MESSAGES:
        stream = _stream(r)
        after, last, count = r.uvarint(), r.uvarint(), r.uvarint()
        if count > MAX_PULL:
            raise FrameError(f"more than {MAX_PULL} messages in one frame")
        items = []
        for _ in range(count):
            seq, flags, expires = r.uvarint(), r.uvarint(), r.uvarint()
            items.append(Message(seq, r.bytes(max_payload, "a payload"), flags, expires))
        frame = Messages(items, last, after, stream)
    elif kind == FrameType.PONG:
        frame = Pong(r.uvarint())
    elif kind == FrameType.GOAWAY:
        reason, delay, count = r.uvarint(), r.uvarint(), r.uvarint()
        if count > 16:
            raise FrameError("more than 16 addresses")
        frame = GoAway(reason, [r.text(512, "an address") for _ in range(count)], delay)
    else:
        raise UnknownFrame(kind)
    r.end()
    return frame
