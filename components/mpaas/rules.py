"""The gray-rule language: targeting expressions over request attributes.

    DEVICE_ID MOD 1000 IN (100..200, 450..600) && CITY IN (Hangzhou, Shanghai)
    APP_VERSION >= 2.1.0 && !(BRAND IN (Acme)) || USER_ID IN ("u1", "u2")

Grammar (keywords and attribute names are case-insensitive):

    expr      := and ( '||' and )*
    and       := unary ( '&&' unary )*
    unary     := '!' unary | '(' expr ')' | predicate
    predicate := term ( ['NOT'] 'IN' '(' item (',' item)* ')' | CMP value )
    term      := ATTRIBUTE [ 'MOD' INT ]
    item      := value | INT '..' INT
    CMP       := '==' | '!=' | '<' | '<=' | '>' | '>='

`X MOD N` takes X itself when it is a whole number and a stable hash (CRC-32)
of it otherwise, so "device id mod 1000 in 0..99" picks the same 10% of devices
on every replica. Versions (APP_VERSION, OS_VERSION) compare numerically by
dotted part. A rule is compiled once into nested closures; evaluating it costs
a few microseconds. `!` and parentheses nest at most 32 levels deep.

Attribute values come from clients. Text becomes a number only through
`parse_uint` (ASCII digits, bounded length); a value that is not one is
treated as text (MOD hashes it, a numeric range or comparison does not
match, a version that does not parse matches no version comparison), so
no client value makes a rule raise.
"""

from __future__ import annotations

import operator
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ATTRIBUTES = {
    "DEVICE_ID",
    "USER_ID",
    "APP_VERSION",
    "OS_VERSION",
    "PLATFORM",
    "BRAND",
    "MODEL",
    "CITY",
    "NETWORK",
    "CHANNEL",
    "APP_ID",
    "WORKSPACE_ID",
    "CLIENT_IP",
}
VERSION_ATTRIBUTES = {"APP_VERSION", "OS_VERSION"}

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

Attrs = Mapping[str, str]
Predicate = Callable[[Attrs], bool]


class RuleError(ValueError):
    """A rule that does not parse; the message points at the offending position."""

    def __init__(self, rule: str, pos: int, message: str):
        self.rule, self.pos = rule, pos
        super().__init__(f"{message} at position {pos}: {rule[:pos]}⟨here⟩{rule[pos:]}")


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|,|\.\.)
      | "(?P<str>[^"]*)"
      | (?P<num>\d+(?:\.\d+)*(?![\w.]*[A-Za-z_]))
      | (?P<word>[A-Za-z_][\w.:@-]*|[\w][\w.:@-]*)
    )""",
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str  # op | str | num | word | end
    text: str
    pos: int


def _tokens(rule: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(rule):
        if rule[pos:].strip() == "":
            break
        m = _TOKEN.match(rule, pos)
        if not m or m.end() == pos:
            raise RuleError(rule, pos, "unexpected character")
        kind = m.lastgroup or "word"
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(_Tok("end", "", len(rule)))
    return out


# Bounds on client text read as numbers: a whole number of up to 18 digits fits in 63 bits; a version of
# up to 64 characters is any real one. Device ids up to 64 digits still count as numbers for MOD.
MAX_DIGITS = 18
MAX_BUCKET_DIGITS = 64
MAX_VERSION_CHARS = 64


def parse_uint(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """`text` as a whole number when it is 1 to `max_digits` ASCII digits, else None.

    The one way client text becomes a number (here and in the gateway): `str.isdigit` accepts characters
    `int` refuses ("\u00b2"), `int` accepts what no protocol field holds (" 7", "+7", "1_000", other
    scripts' digits) and refuses more than 4300 digits; the length bound also bounds the work.
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


_VERSION_PART = re.compile(r"[0-9]*")  # ASCII digits only (\d would take other scripts' digits)


def version_key(v: str) -> tuple[int, ...] | None:
    """Dotted version parts as numbers (the leading digits of each part, trailing zeros dropped); None when
    `v` is longer than MAX_VERSION_CHARS or a part has more than MAX_DIGITS digits."""
    if len(v) > MAX_VERSION_CHARS:
        return None
    parts = []
    for p in v.split("."):
        digits = _VERSION_PART.match(p)
        text = digits.group() if digits else ""
        if not text:
            parts.append(0)
            continue
        n = parse_uint(text)
        if n is None:
            return None
        parts.append(n)
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def bucket(value: str, modulus: int) -> int:
    """Stable bucket of a value: the number itself if it is one (ASCII digits, at most
    MAX_BUCKET_DIGITS), else CRC-32 of its UTF-8 bytes."""
    n = parse_uint(value, MAX_BUCKET_DIGITS)
    if n is not None:
        return n % modulus
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % modulus


MAX_NESTING = 32  # of ! and ( ): deeper would exhaust the recursion a rule is parsed and evaluated with


class _Parser:
    def __init__(self, rule: str):
        self.rule = rule
        self.toks = _tokens(rule)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str | None = None, text: str | None = None) -> _Tok:
        t = self.tok
        if (kind and t.kind != kind) or (text and t.text.upper() != text):
            want = text or kind
            raise RuleError(self.rule, t.pos, f"expected {want!r}, found {t.text or 'end of rule'!r}")
        self.i += 1
        return t

    def at(self, text: str) -> bool:
        return self.tok.kind in ("op", "word") and self.tok.text.upper() == text

    def parse(self) -> Predicate:
        if self.tok.kind == "end":
            raise RuleError(self.rule, 0, "empty rule")
        fn = self.expr()
        if self.tok.kind != "end":
            raise RuleError(self.rule, self.tok.pos, f"unexpected {self.tok.text!r}")
        return fn

    def expr(self) -> Predicate:
        parts = [self.and_()]
        while self.at("||"):
            self.take()
            parts.append(self.and_())
        if len(parts) == 1:
            return parts[0]
        return lambda a: any(p(a) for p in parts)

    def and_(self) -> Predicate:
        parts = [self.unary()]
        while self.at("&&"):
            self.take()
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda a: all(p(a) for p in parts)

    def unary(self) -> Predicate:
        if self.at("!") or self.at("("):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise RuleError(self.rule, self.tok.pos, f"nested deeper than {MAX_NESTING} levels")
            try:
                return self._nested()
            finally:
                self.depth -= 1
        return self._nested()

    def _nested(self) -> Predicate:
        if self.at("!"):
            self.take()
            inner = self.unary()
            return lambda a: not inner(a)
        if self.at("("):
            self.take()
            inner = self.expr()
            self.take("op", ")")
            return inner
        return self.predicate()

    def predicate(self) -> Predicate:
        t = self.take("word")
        attr = t.text.upper()
        if attr not in ATTRIBUTES:
            raise RuleError(self.rule, t.pos, f"unknown attribute {t.text!r} (known: {', '.join(sorted(ATTRIBUTES))})")
        modulus = None
        if self.at("MOD"):
            self.take()
            m = self.take("num")
            modulus = parse_uint(m.text)
            if modulus is None or modulus < 1:
                raise RuleError(self.rule, m.pos, "MOD needs a positive whole number")
        negate = False
        if self.at("NOT"):
            self.take()
            negate = True
            if not self.at("IN"):
                raise RuleError(self.rule, self.tok.pos, "expected IN after NOT")
        if self.at("IN"):
            self.take()
            fn = self._in(attr, modulus)
            return (lambda a: not fn(a)) if negate else fn
        op = self.take("op")
        if op.text not in ("==", "!=", "<", "<=", ">", ">="):
            raise RuleError(self.rule, op.pos, f"expected IN or a comparison, found {op.text!r}")
        value = self.value()
        return self._compare(attr, modulus, op.text, value)

    def value(self) -> str:
        t = self.tok
        if t.kind in ("str", "num", "word"):
            self.i += 1
            return t.text
        raise RuleError(self.rule, t.pos, f"expected a value, found {t.text or 'end of rule'!r}")

    def _in(self, attr: str, modulus: int | None) -> Predicate:
        self.take("op", "(")
        values: set[str] = set()
        ranges: list[tuple[int, int]] = []
        while True:
            start = self.tok
            v = self.value()
            if self.at(".."):
                self.take()
                end = self.value()
                lo_, hi_ = parse_uint(v), parse_uint(end)
                if lo_ is None or hi_ is None:
                    raise RuleError(self.rule, start.pos, "a range needs whole numbers: 100..200")
                lo, hi = lo_, hi_
                if lo > hi:
                    raise RuleError(self.rule, start.pos, f"empty range {lo}..{hi}")
                ranges.append((lo, hi))
            else:
                values.add(v)
            if self.at(","):
                self.take()
                continue
            self.take("op", ")")
            break
        if modulus is not None:
            nums = {n for v in values if (n := parse_uint(v)) is not None}
            bad = [v for v in values if parse_uint(v) is None]
            if bad:
                raise RuleError(self.rule, start.pos, f"MOD results are numbers, not {bad[0]!r}")

            def in_bucket(a: Attrs) -> bool:
                raw = a.get(attr)
                if raw is None or raw == "":
                    return False
                b = bucket(raw, modulus)
                return b in nums or any(lo <= b <= hi for lo, hi in ranges)

            return in_bucket
        frozen = frozenset(values)
        lowered = frozenset(v.lower() for v in values)

        def in_set(a: Attrs) -> bool:
            raw = a.get(attr)
            if raw is None:
                return False
            if raw in frozen or raw.lower() in lowered:
                return True
            if not ranges:
                return False
            n = parse_uint(raw)
            return n is not None and any(lo <= n <= hi for lo, hi in ranges)

        return in_set

    def _compare(self, attr: str, modulus: int | None, op: str, value: str) -> Predicate:
        cmp: Callable[[Any, Any], bool] = _COMPARE[op]
        if modulus is not None:
            m_n = parse_uint(value)
            if m_n is None:
                raise RuleError(self.rule, self.toks[self.i - 1].pos, "MOD results compare with whole numbers")
            n = m_n
            return lambda a: (raw := a.get(attr)) is not None and raw != "" and cmp(bucket(raw, modulus), n)
        if attr in VERSION_ATTRIBUTES:
            vk = version_key(value)
            if vk is None:
                raise RuleError(self.rule, self.toks[self.i - 1].pos, "not a version")

            def version_cmp(a: Attrs) -> bool:
                raw = a.get(attr)
                if not raw:
                    return False
                k = version_key(raw)
                return k is not None and cmp(k, vk)

            return version_cmp
        if op in ("==", "!="):
            low = value.lower()
            return lambda a: cmp((a.get(attr) or "").lower(), low)
        c_n = parse_uint(value)
        if c_n is not None:
            n2 = c_n

            def number_cmp(a: Attrs) -> bool:
                raw = a.get(attr)
                v = parse_uint(raw) if raw is not None else None
                return v is not None and cmp(v, n2)

            return number_cmp
        return lambda a: (raw := a.get(attr)) is not None and cmp(raw, value)


def compile_rule(rule: str) -> Predicate:
    """Compile a rule into a predicate over an attribute mapping; raises RuleError."""
    return _Parser(rule).parse()


def percent_of(value: str, percent: int, salt: str = "") -> bool:
    """Stable membership of `value` in the first `percent` of 100 hash buckets."""
    if percent >= 100:
        return True
    if percent <= 0 or not value:
        return False
    return zlib.crc32((salt + value).encode("utf-8", "surrogatepass")) % 100 < percent
