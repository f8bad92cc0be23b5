"""Device inboxes: every message for a device, numbered, kept until the device acks it or its TTL passes.

One SequencedLog per device (`app/workspace/device`), one reader (the device). An entry is the message's flags,
its expiry (ms since the epoch, 0: none) and its payload, each as the frames encode them. The log drops the
oldest entries past MAX_MESSAGES (a device away for months does not hold an unbounded inbox), and removes
an inbox idle for IDLE_DAYS whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..stores.seqlog import SequencedLog
from . import frames
from .frames import FrameError, Message, Reader

READER = "device"
MAX_MESSAGES = 1000
IDLE_DAYS = 30
MAX_TTL_SECONDS = IDLE_DAYS * 86400
MAX_PAYLOAD = 64 * 1024
MAX_BATCH_BYTES = 256 * 1024  # payload bytes in one MESSAGES frame (at least one message): the client pulls on
# The receipt log: the acks of RECEIPT messages, written by the link pods for push to count as delivered. One
# log (RECEIPT_LOG) of JSON lists of [device key, message id], one entry per pod's flush of acks.
RECEIPT_LOG = "delivered"
RECEIPT_SECONDS = 86400  # kept this long for push to read
RECEIPT_ENTRIES = 100_000
_END = 1 << 62  # a position past every number: a read from it gives the last number alone


@dataclass(frozen=True)
class Batch:
    messages: list[Message]
    last_seq: int


def encode(payload: bytes, flags: int, expires_at_ms: int) -> bytes:
    out = bytearray([0])  # a frame-like header byte, so Reader reads the fields after it
    frames._uvarint(out, flags)
    frames._uvarint(out, expires_at_ms)
    out += payload
    return bytes(out)


def decode(seq: int, raw: bytes) -> Message | None:
    try:
        r = Reader(raw)
        flags, expires = r.uvarint(), r.uvarint()
    except FrameError:
        return None  # not written by this module: left out
    return Message(seq, raw[r.pos :], flags, expires)


class Inbox:
    def __init__(self, log: SequencedLog):
        self.log = log

    async def append(
        self, device: str, payload: bytes, *, urgent: bool, ttl_seconds: float, dedupe: str | None = None
    ) -> Message:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"a message is at most {MAX_PAYLOAD} bytes")
        ttl = min(ttl_seconds, MAX_TTL_SECONDS)
        expires = int((time.time() + ttl) * 1000)
        flags = frames.URGENT if urgent else 0
        seq = await self.log.append(device, encode(payload, flags, expires), ttl_seconds=ttl, dedupe=dedupe)
        return Message(seq, payload, flags, expires)

    async def append_many(
        self,
        devices: list[str],
        payload: bytes,
        *,
        urgent: bool,
        ttl_seconds: float,
        dedupe: str | None = None,
        receipt: bool = False,
    ) -> list[Message | None]:
        """The same message into many inboxes in one round trip; None for one that is full (never: inboxes
        drop their oldest). `dedupe`: the message's id, so that a retried fan-out appends nothing twice.
        `receipt`: the devices' acks of it are reported (frames.RECEIPT)."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"a message is at most {MAX_PAYLOAD} bytes")
        ttl = min(ttl_seconds, MAX_TTL_SECONDS)
        expires = int((time.time() + ttl) * 1000)
        flags = (frames.URGENT if urgent else 0) | (frames.RECEIPT if receipt else 0)
        raw = encode(payload, flags, expires)
        seqs = await self.log.append_many([(d, raw, ttl) for d in devices], dedupe=dedupe)
        return [Message(s, payload, flags, expires) if isinstance(s, int) else None for s in seqs]

    async def read(self, device: str, after: int, count: int) -> Batch:
        batch = await self.log.read(device, after=after, count=count)
        now = int(time.time() * 1000)
        messages: list[Message] = []
        size = 0
        for seq, raw in batch.entries:
            m = decode(seq, raw)
            if m is not None and (not m.expires_at_ms or m.expires_at_ms > now):
                if messages and size + len(m.payload) > MAX_BATCH_BYTES:
                    break
                messages.append(m)
                size += len(m.payload)
        return Batch(messages, batch.last_seq)

    async def ack(self, device: str, seq: int) -> int:
        return await self.log.ack(device, READER, seq)

    async def ack_many(self, acks: list[tuple[str, int]]) -> list[int]:
        return await self.log.ack_many([(device, READER, seq) for device, seq in acks])

    async def last(self, device: str) -> int:
        return (await self.log.read(device, after=_END, count=1)).last_seq
