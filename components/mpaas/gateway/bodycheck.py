"""Is a request body what its Content-Type says? JSON must parse; protobuf must be well-formed wire format.

JSON is checked with the decoder's `raw_decode` on the UTF-8 text (RFC 8259:
JSON between systems is UTF-8): `json.loads` on bytes first guesses the
encoding in Python and costs ~10x as much for a small body.

Every check is bounded: JSON nests at most `MAX_JSON_DEPTH` arrays and objects
deep (the decoder recurses once per level, so without a bound a body decides
how deep the stack goes). A body with no more brackets than that cannot nest
deeper and is decoded directly; any other is decoded under the interpreter's
recursion guard and measured. Media types compare case-insensitively
(RFC 9110 8.3.1).
"""

from __future__ import annotations

import json
from typing import Any

from . import protowire

MAX_JSON_DEPTH = 128  # arrays and objects inside each other (docs/gateway.md)

_decode_json = json.JSONDecoder().raw_decode
_JSON_SPACE = " \t\n\r"
_JSON = "application/json"


def is_json(content_type: str) -> bool:
    """`application/json`, any case, with or without parameters (`; charset=utf-8`)."""
    if content_type == _JSON:
        return True  # the common spelling, without the work below
    return content_type.split(";", 1)[0].strip().lower() == _JSON


def check(content_type: str, body: bytes) -> None:
    """Raise ValueError saying what is wrong; other content types pass."""
    if is_json(content_type):
        check_json(body)
    elif protowire.is_protobuf(content_type):
        protowire.check(body)


def check_json(body: bytes) -> None:
    text = body.decode()  # UnicodeDecodeError is a ValueError
    if text[:1] == "\ufeff":  # a byte order mark may be ignored (RFC 8259 section 8.1)
        text = text[1:]
    text = text.strip(_JSON_SPACE)
    _, end = _decode_bounded(text)
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at character {end}")


def load_json(body: bytes) -> object | None:
    """The JSON value of a body, or None when it is not JSON or nests deeper than MAX_JSON_DEPTH."""
    try:
        text = body.decode()
        if text[:1] == "\ufeff":
            text = text[1:]
        text = text.strip(_JSON_SPACE)
        value, end = _decode_bounded(text)
    except ValueError:
        return None
    return value if end == len(text) else None


def _decode_bounded(text: str) -> tuple[object, int]:
    """raw_decode, refusing (ValueError) what nests deeper than MAX_JSON_DEPTH."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return _decode_json(text)  # cannot nest deeper than it has brackets
    try:
        value, end = _decode_json(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH}") from None
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH}")
    return value, end


def _deeper_than(value: object, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep in a decoded value (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False
