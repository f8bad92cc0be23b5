"""Is a request body what its Content-Type says? JSON must parse; protobuf must be well-formed wire format.

JSON is checked with the decoder's `raw_decode` on the UTF-8 text (RFC 8259:
JSON between systems is UTF-8): `json.loads` on bytes first guesses the
encoding in Python and costs ~10x as much for a small body.
"""

from __future__ import annotations

import json

from . import protowire

_decode_json = json.JSONDecoder().raw_decode
_JSON_SPACE = " \t\n\r"


def check(content_type: str, body: bytes) -> None:
    """Raise ValueError saying what is wrong; other content types pass."""
    if content_type.startswith("application/json"):
        check_json(body)
    elif protowire.is_protobuf(content_type):
        protowire.check(body)


def check_json(body: bytes) -> None:
    text = body.decode()  # UnicodeDecodeError is a ValueError
    if text[:1] == "\ufeff":  # a byte order mark may be ignored (RFC 8259 section 8.1)
        text = text[1:]
    text = text.strip(_JSON_SPACE)
    _, end = _decode_json(text)
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at character {end}")
