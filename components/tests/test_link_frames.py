"""The link protocol's pieces on their own: frames (round trips, strict decoding, fuzzing), tokens, the
heartbeat policy, and inbox batches."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpaas.link import frames, heartbeat, inbox
from mpaas.link.frames import FrameError, UnknownFrame
from mpaas.link.tokens import TokenKey, check

pytestmark = pytest.mark.unit


def test_client_frames_round_trip() -> None:
    for f in (
        frames.Hello("SHOP", "prod", "设备-1", b"v1.1.x", 300, frames.Network.CELLULAR),
        frames.Pull(2**40, 17),
        frames.Pull(3, 1, frames.BROADCAST),
        frames.Ack(0),
        frames.Ack(9, frames.BROADCAST),
        frames.Ping(frames.Network.WIFI),
    ):
        assert frames.decode_client(f.encode()) == f


def test_server_frames_round_trip() -> None:
    for f in (
        frames.Welcome(270, 12, 1_764_500_000_123, 4),
        frames.Notify(99),
        frames.Notify(5, frames.BROADCAST),
        frames.Messages(
            [frames.Message(3, b"x" * 300, frames.URGENT, 1_764_500_000_000), frames.Message(4, b"")], 9, 2
        ),
        frames.Pong(60),
        frames.GoAway(1001, ["wss://a:8443/v1/link", "wss://b:8443/v1/link"], 250),
    ):
        assert frames.decode_server(f.encode()) == f


def test_the_encoding_is_the_documented_one() -> None:
    # ACK of 300 on the inbox: type 0x03, stream 0, then 300 as LEB128 (0xac 0x02), as docs/link.md spells it.
    assert frames.Ack(300).encode() == b"\x03\x00\xac\x02"
    assert frames.Pull(0, 256, frames.BROADCAST).encode() == b"\x02\x01\x00\x80\x02"
    assert frames.Hello("A", "W", "D", b"T").encode() == b"\x01\x01\x01A\x01W\x01D\x01T\x00\x00\x00"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (b"\x03", "cut short"),
        (b"\x03\x00\x80", "cut short"),
        (b"\x03\x00\x80\x00", "shortest form"),
        (b"\x03\x00" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x03\x00\x01\x00", "bytes after"),
        (b"\x03\x02\x01", "stream 2"),
        (b"\x01\x01\x05AB", "cut short"),
        (b"\x01\x01" + b"\x81\x01" + b"A" * 129, "longer than 128"),
        (b"\x01\x01\x02\xff\xfe\x01W\x01D\x01T\x00\x00", "not UTF-8"),
    ],
)
def test_malformed_frames_say_what_is_wrong(data: bytes, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        frames.decode_client(data)


def test_an_unknown_type_is_told_apart() -> None:
    with pytest.raises(UnknownFrame) as e:
        frames.decode_client(b"\x7f\x00")
    assert e.value.kind == 0x7F
    with pytest.raises(UnknownFrame):
        frames.decode_client(frames.Welcome(1, 1, 1).encode())  # a server frame from a client


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_frame_error(data: bytes) -> None:
    try:
        frames.decode_client(data)
    except FrameError:
        pass


def test_mutated_frames_decode_or_raise_a_frame_error() -> None:
    rng = random.Random(5)
    seeds = [frames.Hello("SHOP", "prod", "d", b"tok", 5, 1).encode(), frames.Pull(7, 9).encode()]
    for _ in range(20_000):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            frames.decode_client(bytes(b))
        except FrameError:
            pass


def test_tokens_are_the_documented_hmac() -> None:
    key = os.urandom(32)
    token = TokenKey(key).issue("SHOP", "prod", "d-1", ttl_seconds=600)
    version, expires, mac = token.split(b".")
    assert version == b"v1"
    expected = hmac.new(key, f"mpaas-link-v1\nSHOP\nprod\nd-1\n{int(expires)}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(mac + b"=") == expected
    assert isinstance(check(token, [TokenKey(key)], "SHOP", "prod", "d-1", 0), TokenKey)


def test_tokens_that_do_not_fit_are_refused_with_the_reason() -> None:
    key, other = TokenKey(b"a" * 32), TokenKey(b"b" * 32)
    token = key.issue("SHOP", "prod", "d-1", ttl_seconds=600)
    assert isinstance(check(token, [other, key], "SHOP", "prod", "d-1", 0), TokenKey)  # a rotated key, in overlap
    assert "does not match" in str(check(token, [other], "SHOP", "prod", "d-1", 0))
    assert "does not match" in str(check(token, [key], "SHOP", "prod", "d-2", 0))
    assert "expired" in str(check(token, [key], "SHOP", "prod", "d-1", 2**40))
    for bad in (b"", b"v2.1.x", token + b"=", b"v1.\xd9\xa1." + token.split(b".")[2], token.replace(b"v1.", b"v1.-")):
        assert "not v1" in str(check(bad, [key], "SHOP", "prod", "d-1", 0)), bad
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenKey(b"short")


def test_the_heartbeat_grows_on_success_and_backs_off_after_a_timeout() -> None:
    b = heartbeat.Bounds(30, 270)
    assert heartbeat.start(None, b) == 30
    assert heartbeat.grown(30, 2, 0, b) == 30 and heartbeat.grown(30, 3, 0, b) == 60
    assert heartbeat.grown(270, 3, 0, b) == 270
    r = heartbeat.after_timeout(180, b)
    assert (r.seconds, r.ceiling) == (150, 180)
    assert heartbeat.start(r, b) == 150
    assert heartbeat.grown(150, 3, 180, b) == 150  # not back up to the interval that failed
    assert heartbeat.grown(120, 3, 180, b) == 150
    assert heartbeat.after_timeout(30, b).seconds == 30  # never below the channel's minimum
    assert heartbeat.start(heartbeat.Remembered(999, 0), b) == 270  # bounds tightened since: clamped


def test_an_inbox_entry_round_trips_and_a_foreign_one_is_left_out() -> None:
    raw = inbox.encode(b"payload", frames.URGENT, 123)
    m = inbox.decode(7, raw)
    assert m == frames.Message(7, b"payload", frames.URGENT, 123)
    assert inbox.decode(8, b"\x00\xff") is None
