"""Protobuf wire-format checks, against bytes from a reference encoder (hand-assembled per the spec)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpaas.gateway import protowire

pytestmark = pytest.mark.unit


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire) + payload


GOOD = (
    field(1, 0, varint(150))
    + field(2, 2, varint(7) + b"testing")
    + field(3, 1, b"\x00" * 8)
    + field(4, 5, b"\x01\x02\x03\x04")
    + field(5, 3, b"")
    + field(6, 0, varint(1))
    + field(5, 4, b"")
    + field(536870911, 0, varint(2**64 - 1))
)


def test_accepts_well_formed_messages() -> None:
    protowire.check(b"")
    protowire.check(bytes.fromhex("089601"))  # the spec's example: field 1 = 150
    protowire.check(GOOD)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bytes.fromhex("0896"), "truncated varint"),
        (field(2, 2, varint(10) + b"short"), "past the end"),
        (field(1, 6, b""), "unknown wire type"),
        (b"\x00\x01", "field number 0"),
        (field(5, 3, b""), "not closed"),
        (field(5, 4, b""), "without its start"),
        (field(1, 0, b"\xff" * 11), "longer than 10 bytes"),
        (b'{"json": true}', "past the end"),
    ],
)
def test_rejects_malformed_bytes(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        protowire.check(data)


@given(st.binary(max_size=300))
def test_never_crashes(data: bytes) -> None:
    try:
        protowire.check(data)
    except ValueError:
        pass
