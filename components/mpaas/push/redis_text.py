"""Redis replies as text: the client answers bytes (or str with decode_responses), typed as either."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
