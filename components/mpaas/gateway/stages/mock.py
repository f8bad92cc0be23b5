"""Stage `mock` — `spec.apis[].mock` (enabled, statusCode, body, template): answer without an upstream, with
static JSON or a template filled from the request's JSON body and headers (`{{body.field}}`,
`{{header.Name}}`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...api.gateway import MockResponse
from ...http1 import Request
from .. import bodycheck, codes
from ..outcome import Outcome


@dataclass(frozen=True)
class CompiledMock:
    status: int
    render: Callable[[object, Mapping[str, str]], bytes]  # (request JSON, headers) -> body


_PLACEHOLDER = re.compile(r"\{\{\s*(body|header)\.([A-Za-z0-9_.-]+)\s*\}\}")


def _lookup(source: str, name: str, body: object, headers: Mapping[str, str]) -> object:
    if source == "header":
        return headers.get(name.lower(), "")
    value = body
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def compile_mock(status: int, body: object, template: bool) -> CompiledMock:
    """A mock response: static JSON, or a template with {{body.field}} and {{header.Name}} placeholders."""
    static = json.dumps(body if body is not None else {}, ensure_ascii=False).encode()
    if not template:
        return CompiledMock(status, lambda _body, _headers: static)

    def fill(node: object, req: object, headers: Mapping[str, str]) -> object:
        if isinstance(node, str):
            whole = _PLACEHOLDER.fullmatch(node)
            if whole:  # "{{body.count}}" keeps the value's JSON type
                return _lookup(whole.group(1), whole.group(2), req, headers)
            return _PLACEHOLDER.sub(lambda m: str(_lookup(m.group(1), m.group(2), req, headers) or ""), node)
        if isinstance(node, list):
            return [fill(x, req, headers) for x in node]
        if isinstance(node, dict):
            return {k: fill(v, req, headers) for k, v in node.items()}
        return node

    return CompiledMock(status, lambda req, headers: json.dumps(fill(body, req, headers), ensure_ascii=False).encode())


def from_spec(spec: MockResponse | None) -> CompiledMock | None:
    """None unless a mock is defined and enabled."""
    if spec is None or not spec.enabled:
        return None
    return compile_mock(spec.status_code, spec.body, spec.template)


def answer(mock: CompiledMock, request: Request, body: bytes, trace_id: str, rest: bool) -> Outcome:
    request_json = bodycheck.load_json(body) if body else None  # bounded, whatever the Content-Type
    return Outcome(
        codes.SUCCESS.code,
        mock.status if rest else 200,
        {"Result-Status": "1000", "Memo": "mock", "Mgw-TraceId": trace_id, "Content-Type": "application/json"},
        mock.render(request_json, request.headers),
        "_mock",
    )
