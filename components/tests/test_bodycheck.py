"""Body checks: JSON as `json.loads` would judge UTF-8 text, protobuf by wire format."""

import json

import pytest

from mpaas.gateway import bodycheck

pytestmark = pytest.mark.unit

GOOD = [b"{}", b" [1, 2.5e3, null] \r\n", b'"x"', b"\xef\xbb\xbf{}", '{"名": "值"}'.encode(), b"0", b"true"]
BAD = [b"", b"   ", b"{", b"{} {}", b"[1,]", b"{}x", b"\xff{}", b"NaNx", b'{"a": 1}\x0b', b"\x00"]


@pytest.mark.parametrize("body", GOOD)
def test_json_accepted(body: bytes) -> None:
    bodycheck.check("application/json; charset=utf-8", body)
    json.loads(body)  # the reference agrees


@pytest.mark.parametrize("body", BAD)
def test_json_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        bodycheck.check("application/json", body)
    with pytest.raises(ValueError):
        json.loads(body)  # the reference agrees


def test_other_types_pass_and_protobuf_is_checked() -> None:
    bodycheck.check("text/plain", b"{")
    bodycheck.check("application/x-protobuf", b"\x08\x96\x01")
    with pytest.raises(ValueError):
        bodycheck.check("application/x-protobuf", b"\x08")  # truncated varint
