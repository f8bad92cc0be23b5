"""Result codes: what a component answers a client with, in a `Result-Status` header or a protocol frame.

Each component lists its codes in its own table (`<component>/codes.py`, named in the registry) and documents
each one in `docs/<component>.md` as a row `| code | `Name` | HTTP status | memo |`; a test checks both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResultCode:
    code: int
    name: str
    http_status: int
    memo: str

    def because(self, memo: str) -> ResultCode:
        """The same code with a memo that says what exactly was wrong."""
        return ResultCode(self.code, self.name, self.http_status, memo)


def table(namespace: dict[str, object]) -> list[ResultCode]:
    """Every ResultCode defined in a module's namespace, in code order (call it with `globals()`)."""
    found = sorted((v for v in namespace.values() if isinstance(v, ResultCode)), key=lambda c: c.code)
    codes = [c.code for c in found]
    if len(set(codes)) != len(codes):
        raise ValueError(f"result codes defined twice: {sorted({c for c in codes if codes.count(c) > 1})}")
    return found


def doc_row(c: ResultCode) -> str:
    """The row a component's docs hold for `c`."""
    return f"| {c.code} | `{c.name}` | {c.http_status} | {c.memo} |"
