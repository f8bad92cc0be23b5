"""Keys kept in Secrets, across config changes: rotation with overlap, revocation, keys not readable yet.

Every component that authenticates with keys from Secrets builds them through
one `KeyRing`: the gateway's signature verifiers and session-key unwrappers
today, push's vendor credentials next. A component names the Secrets it reads
(LiveConfig's `named` watches) and reads them with `secret_data`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .config import Resources, unlisted

SECRET = "Secret"

K = TypeVar("K")
# (key material in use, valid until epoch seconds or None for the current one); current first.
KeyChain = tuple[tuple[K, float | None], ...]


class KeyRing:
    """Every key built from Secrets, kept across config changes.

    When a Secret changes a key (rotation), the previous key stays usable for
    `overlap` seconds, so clients still on the old key keep working while they
    pick up the new one. A Secret that is deleted, or no longer holds the key,
    revokes it at once, with every previous key: that is how an operator
    withdraws a leaked key. A key that does not load (`build` raises
    ValueError: broken PEM, too short) keeps the last good key in use, as does
    a Secret not yet known (its watch still waiting for access); the problem
    is reported.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._current: dict[tuple[str, ...], tuple[bytes, Any]] = {}
        self._previous: dict[tuple[str, ...], list[tuple[Any, float]]] = {}

    def chain(
        self,
        key: tuple[str, ...],
        material: bytes | None,
        build: Callable[[bytes], K],
        overlap: int,
        *,
        known: bool = True,
    ) -> tuple[KeyChain[K], str | None]:
        """The usable keys for `key` given the Secret's current `material` (None: Secret or entry missing;
        `known` False: the Secret's content is not known yet, so its absence is not a deletion)."""
        if not material and known:  # deleted, or the entry removed: revoked now, previous keys too
            revoked = self._current.pop(key, None) is not None
            revoked = bool(self._previous.pop(key, None)) or revoked
            return (), "credentials Secret or key entry not found" + (" (key revoked)" if revoked else "")
        now = self.clock()
        previous = [(v, until) for v, until in self._previous.get(key, []) if until > now]
        problem = None
        current = None
        seen = self._current.get(key)
        if not material:
            problem = "credentials Secret not readable yet"
        elif seen is not None and seen[0] == material:
            current = seen[1]
        else:
            try:
                current = build(material)
            except ValueError as e:
                problem = str(e)
            if current is not None:
                if seen is not None and overlap > 0:
                    previous.append((seen[1], now + overlap))
                self._current[key] = (material, current)
        if current is None and key in self._current:
            current = self._current[key][1]
        self._previous[key] = previous
        out: list[tuple[K, float | None]] = [(current, None)] if current is not None else []
        out += [(v, until) for v, until in previous]
        return tuple(out), problem


def secret_data(resources: Resources, namespace: str, name: str | None) -> dict[str, bytes] | None:
    """The Secret's decoded data; {} when it does not exist; None when it is not known yet (watch not listed)."""
    if not name:
        return {}
    res = resources.get(SECRET, {}).get((namespace, name))
    if res is None:
        return None if (namespace, name) in resources.get(unlisted(SECRET), {}) else {}
    return decode_secret(res.spec or {})


def decode_secret(data: dict[str, Any]) -> dict[str, bytes]:
    """A Secret's `data`, decoded; an entry that is not base64 is left out (as if missing)."""
    out = {}
    for k, v in data.items():
        try:
            out[k] = base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            continue
    return out
