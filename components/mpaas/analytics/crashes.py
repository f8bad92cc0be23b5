"""Crash grouping: a crash's stack, normalized into a fingerprint, so one bug is one group across devices.

The fingerprint is the exception's type and its top frames (function names with their module or class), with
what changes between builds and runs taken out: line and column numbers, addresses and offsets, numbered
lambdas and anonymous classes. Stacks from the JVM (Java, Kotlin), JavaScript engines, Apple crash reports
and Python are read; anything else is grouped by its first line with the numbers taken out. Stacks come
here symbolicated when their app uploaded what it takes (symbols.py: R8/ProGuard mappings, dSYMs), so an
Apple frame reads `function (file:line)` and groups by the function's name and file; else as sent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

TOP_FRAMES = 8
SAMPLE_BYTES = 4096
TITLE_CHARS = 200
LINE_CHARS = 300  # of each stack line read for frames, and at most LINES lines: the work per crash is bounded
LINES = 200

_JVM = re.compile(r"^\s*at\s+([\w$.<>]+)\(")
_JS = re.compile(r"^\s*at\s+(?:async\s+)?(?:new\s+)?([^\s(]+)\s+\(")
_JS_ANONYMOUS = re.compile(r"^\s*at\s+(?:async\s+)?\(?([^\s()]+?):\d+:\d+\)?\s*$")
_APPLE = re.compile(r"^\s*\d+\s+(\S+)\s+0x[0-9a-fA-F]+\s+(\S.*)$")
_OFFSET = re.compile(r"\s+\+\s+\d+\s*$")
_PYTHON = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')
_NUMBERED = re.compile(r"\$(?:lambda\$)?[\w]*?\d+|0x[0-9a-fA-F]+|\d+")


@dataclass(frozen=True)
class Crash:
    fingerprint: str
    type: str
    title: str
    sample: str


def _clean(text: str) -> str:
    return _NUMBERED.sub("#", text)


def frames(stack: str) -> list[str]:
    out: list[str] = []
    for raw in stack.splitlines()[:LINES]:
        line = raw[:LINE_CHARS]
        if m := _JVM.match(line):
            out.append(_clean(m.group(1)))
        elif m := _APPLE.match(line):
            out.append(f"{m.group(1)} {_clean(_OFFSET.sub('', m.group(2)))}")
        elif m := _PYTHON.match(line):
            out.append(f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}")
        elif m := _JS.match(line):
            out.append(_clean(m.group(1)))
        elif m := _JS_ANONYMOUS.match(line):
            out.append(_clean(m.group(1).rsplit("/", 1)[-1]))
        if len(out) == TOP_FRAMES:
            break
    return out


def group(stack: str, type_: str = "") -> Crash:
    stack = stack[: LINES * LINE_CHARS]
    first = next((line.strip()[:LINE_CHARS] for line in stack.splitlines()[:LINES] if line.strip()), "")
    if type_ or frames(first):  # given, or a report that starts with its frames (no exception line)
        kind = type_[:TITLE_CHARS]
    else:
        kind = (first.split(":", 1)[0].strip() if ":" in first else first)[:TITLE_CHARS]
    top = frames(stack)
    basis = "\n".join([kind, *top]) if top else _clean(first)
    fingerprint = hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()[:16]
    sample = stack.encode("utf-8", "replace")[:SAMPLE_BYTES].decode("utf-8", "ignore")
    return Crash(fingerprint, kind, first[:TITLE_CHARS], sample)


def of_event(name: str, props: dict[str, Any]) -> Crash | None:
    """The crash an event reports, in each format's own fields; None when it carries no stack or message (or
    fields of the wrong shape: the event still counts as a crash, it is just not grouped)."""
    try:
        return _of_event(name, props)
    except (TypeError, ValueError, AttributeError, KeyError):
        return None


def _of_event(name: str, props: dict[str, Any]) -> Crash | None:
    if name == "$exception":  # PostHog: $exception_list (structured) or the raw stack
        listed = props.get("$exception_list")
        if isinstance(listed, list) and listed and isinstance(listed[0], dict):
            first = listed[0]
            trace = first.get("stacktrace")
            found = trace.get("frames") if isinstance(trace, dict) else None
            frames_ = [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []
            lines = [f"{first.get('type', '')}: {first.get('value', '')}"]
            # Sentry's order, which PostHog keeps: outermost first, the crash site last.
            for f in reversed(frames_[-TOP_FRAMES:]):
                lines.append(f"    at {f.get('module') or ''}.{f.get('function') or '?'}(x)")
            return group("\n".join(lines), str(first.get("type") or ""))
    found = raw_stack(name, props)
    return group(*found) if found is not None else None


def raw_stack(name: str, props: dict[str, Any]) -> tuple[str, str] | None:
    """(stack as text, exception type or "") of a crash event that carries its stack as text."""
    if name == "$exception":
        raw = props.get("$exception_stack_trace_raw") or props.get("$exception_message")
        given = props.get("$exception_type")
    else:
        raw = props.get("_error") if name == "$crash" else props.get("stack")  # Countly's field, the platform's
        given = props.get("type") if name == "crash" else props.get("_name")
    if isinstance(raw, str) and raw.strip():
        return raw, given if isinstance(given, str) else ""
    return None
