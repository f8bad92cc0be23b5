"""A well-formedness check of protobuf wire format, for bodies sent as protobuf.

Without the message's schema the gateway cannot check field types, but it can
refuse bytes that no protobuf message encodes to: truncated varints, lengths
beyond the body, unknown wire types, field number 0, unbalanced groups.
"""

from __future__ import annotations

CONTENT_TYPES = ("application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    for n in range(10):
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if n == 9:
            break
    raise ValueError("varint longer than 10 bytes")


def check(data: bytes) -> None:
    """Raise ValueError saying what is wrong when `data` is not valid protobuf wire format."""
    i, groups = 0, []
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _varint(data, i)
            i += length
        elif wire == 5:
            i += 4
        elif wire == 3:
            groups.append(field)
        elif wire == 4:
            if not groups or groups.pop() != field:
                raise ValueError(f"end of group {field} without its start")
        else:
            raise ValueError(f"unknown wire type {wire}")
        if i > len(data):
            raise ValueError("field runs past the end of the body")
    if groups:
        raise ValueError(f"group {groups[-1]} not closed")


def is_protobuf(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in CONTENT_TYPES
