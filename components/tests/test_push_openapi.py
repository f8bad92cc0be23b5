"""The push server API's OpenAPI document (components/mpaas/push/openapi.yaml) against the code, in-process.

The document is valid OpenAPI 3.1 with valid Draft 2020-12 schemas; its routes are the app's routes; its error
codes are those the code can answer (collected from the source, with their statuses); its request examples
are valid by its schemas, taken by the code's own parsers and answered by the app (built, not started, with
memory stores, driven over ASGI) as documented; and bodies the code refuses are refused by the schemas too.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml

import mpaas.push
from mpaas.push import PushSettings, build
from mpaas.push.auth import sign_headers
from mpaas.push.config import AppKeys, PushConfig
from mpaas.push.messages import (
    Invalid,
    idempotency_key,
    parse_content,
    parse_options,
    parse_target,
    parse_time_ms,
)

pytestmark = pytest.mark.unit

PUSH = Path(mpaas.push.__file__).parent
DOCUMENT = PUSH / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
APP, WS, KEY = "SHOP", "prod", b"s" * 32
# What the examples name: the path parameters, and what the setup calls create.
RECEIPTS = "/v1/push/receipts/{namespace}/{name}/{token}"  # the vendors' receipt address
PATH_VALUES = {"deviceId": "phone-1", "userId": "alice", "name": "welcome", "namespace": "shop", "token": "t" * 22}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOCUMENT.read_text())
    assert isinstance(loaded, dict)
    return loaded


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        node = pointer(doc, node["$ref"])
    return node


def pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A Draft 2020-12 validator of `schema` whose `#/components/...` references resolve in the document."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def request_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    schema = resolve(doc, op["requestBody"])["content"]["application/json"]["schema"]
    assert isinstance(schema, dict)
    return schema


def walk(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) of the nested dicts and lists."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


# --- 1. a valid OpenAPI 3.1 document ------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    try:
        from openapi_spec_validator import validate
    except ImportError:  # not installed: schemathesis's copy of the OpenAPI 3.1 schema, and the metaschema
        pass
    else:
        validate(doc)
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    errors = [
        f"{e.instance_path}: {e.message[:300]}" for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(doc)
    ]
    assert not errors, errors

    schemas = dict(doc["components"]["schemas"])
    schemas.update({f"schema {i}": v for i, (k, v) in enumerate(walk(doc["paths"])) if k == "schema"})
    schemas.update({f"component schema {i}": v for i, (k, v) in enumerate(walk(doc["components"])) if k == "schema"})
    for name, schema in schemas.items():
        try:
            jsonschema_rs.meta.validate({"$schema": DRAFT_2020_12, **schema})
        except jsonschema_rs.ValidationError as e:
            pytest.fail(f"{name}: not a Draft 2020-12 schema: {e}")

    refs = [v for k, v in walk(doc) if k == "$ref"]
    for ref in refs:
        pointer(doc, ref)  # every reference resolves
    used = {ref.rsplit("/", 1)[1] for ref in refs if ref.startswith("#/components/schemas/")}
    assert set(doc["components"]["schemas"]) - used == set(), "schemas nothing uses"

    for method, path, op in operations(doc):
        assert op.get("operationId") and op.get("summary"), (method, path)
        if method in ("PUT", "POST"):
            assert op.get("requestBody", {}).get("required") is True, (method, path)
        for status, response in op["responses"].items():
            assert resolve(doc, response)["content"]["application/json"]["schema"], (method, path, status)


# --- 2. the routes are the app's routes ---------------------------------------------------------------


def code_routes() -> set[tuple[str, str]]:
    served = build(PushSettings())  # memory stores; not started
    out = set()
    for route in served.app.routes:
        path = getattr(route, "path", "")
        if path.startswith(("/v1/push", "/api/")):
            out |= {(m, path) for m in getattr(route, "methods", set()) - {"HEAD"}}
    return out


def test_every_route_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    documented = set()
    for method, path, op in operations(doc):
        placeholders = re.findall(r"\{(\w+)\}", path)
        params = [resolve(doc, p) for p in [*doc["paths"][path].get("parameters", []), *op.get("parameters", [])]]
        assert sorted(p["name"] for p in params if p["in"] == "path") == sorted(placeholders), (method, path)
        assert all(p["required"] for p in params if p["in"] == "path")
        documented.add((method, re.sub(r"\{(\w+)\}", lambda m: "{" + snake(m.group(1)) + "}", path)))
    routes = code_routes()
    assert routes, "no push routes built"
    assert documented - routes == set(), "documented, not served"
    assert routes - documented == set(), "served, not documented"


# --- 3. the error codes are the code's --------------------------------------------------------------


def source_codes() -> tuple[set[str], set[tuple[int, str]]]:
    """Every result code in components/mpaas/push/*.py: the code (and status) of each `Invalid(...)` and auth's
    `_refuse(...)`, their defaults, and the `{"code": ...}` literals (a batch's per-message refusals)."""
    codes: set[str] = set()
    pairs: set[tuple[int, str]] = set()
    defaults = {"Invalid": ("InvalidRequest", 400), "_refuse": ("Unauthorized", 401)}
    for f in sorted(PUSH.glob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                args = node.args.args[len(node.args.args) - len(node.args.defaults) :]
                for arg, default in zip(args, node.args.defaults, strict=True):
                    if arg.arg == "code" and isinstance(default, ast.Constant) and isinstance(default.value, str):
                        codes.add(default.value)
            elif isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                if name not in defaults:
                    continue
                given = {k.arg: k.value for k in node.keywords}
                code_node = node.args[1] if len(node.args) > 1 else given.get("code")
                status_node = node.args[2] if len(node.args) > 2 else given.get("status")
                if code_node is not None and not isinstance(code_node, ast.Constant):
                    continue  # a refusal passed on (messages[i]: e.code)
                code = code_node.value if code_node is not None else defaults[name][0]
                status = defaults[name][1]
                if name == "Invalid" and status_node is not None:
                    assert isinstance(status_node, ast.Constant), ast.unparse(node)
                    status = status_node.value
                codes.add(code)
                pairs.add((status, code))
            elif isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "code" and isinstance(v, ast.Constant):
                        if isinstance(v.value, str) and v.value[:1].isupper():  # not a vendor's "0" (receipts)
                            codes.add(v.value)
    return codes, pairs


def schema_codes(doc: dict[str, Any], schema: Any) -> set[str]:
    """The `code` enums of a schema, through its references."""
    out: set[str] = set()
    if isinstance(schema, dict):
        if "$ref" in schema:
            out |= schema_codes(doc, pointer(doc, schema["$ref"]))
        code = schema.get("properties", {}).get("code", {})
        out |= set(code.get("enum", []))
        for k, v in schema.items():
            if k != "properties":
                out |= schema_codes(doc, v)
    elif isinstance(schema, list):
        for v in schema:
            out |= schema_codes(doc, v)
    return out


def documented_codes(doc: dict[str, Any]) -> set[tuple[int, str]]:
    pairs = set()
    for _, _, op in operations(doc):
        for status, response in op["responses"].items():
            schema = resolve(doc, response)["content"]["application/json"]["schema"]
            pairs |= {(int(status), c) for c in schema_codes(doc, schema)}
    return pairs


def test_every_error_code_is_documented_and_every_documented_one_exists(doc: dict[str, Any]) -> None:
    codes, pairs = source_codes()
    # What the brief names, as a check of the collection itself.
    assert {"InvalidRequest", "StoreUnavailable", "UnknownDevice", "Unauthorized", "NonceReplayed"} <= codes
    assert (404, "UnknownDevice") in pairs and (401, "SignatureInvalid") in pairs
    in_doc = documented_codes(doc)
    assert {c for _, c in in_doc} == codes
    errors = {(s, c) for s, c in in_doc if s >= 400}
    assert errors - pairs == set(), "documented under a status the code does not answer with"
    assert pairs - errors == set(), "answered by the code, not documented with that status"


# --- 4. examples, parsers and the app ----------------------------------------------------------------


def examples(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    media = resolve(doc, op["requestBody"])["content"]["application/json"]
    found = {name: resolve(doc, e)["value"] for name, e in media.get("examples", {}).items()}
    if "example" in media:
        found["example"] = media["example"]
    return found


def test_every_request_example_is_valid_by_its_schema(doc: dict[str, Any]) -> None:
    seen = 0
    for method, path, op in operations(doc):
        if "requestBody" not in op:
            continue
        found = examples(doc, op)
        assert found, f"{method} {path}: no example"
        check = validator(doc, request_schema(doc, op))
        for name, value in found.items():
            errors = [f"{e.instance_path}: {e.message}" for e in check.iter_errors(value)]
            assert not errors, (method, path, name, errors)
            seen += 1
    assert seen >= 14


def parse_send(body: dict[str, Any]) -> None:
    """A send's fields through the code's parsers (api.py's build_message without the stores)."""
    parse_target(body.get("target"))
    if "template" not in body:
        parse_content(body.get("notification"))
    scheduled = body.get("scheduledAt")
    now = parse_time_ms(scheduled, "scheduledAt") - 3_600_000 if scheduled is not None else int(time.time() * 1000)
    parse_options(body, now)
    idempotency_key(body, None)


def test_the_examples_are_taken_by_the_codes_parsers(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    sends = list(examples(doc, paths["/v1/push/messages"]["post"]).values())
    for batch in examples(doc, paths["/v1/push/messages/batch"]["post"]).values():
        sends += batch["messages"]
    assert any("scheduledAt" in s for s in sends) and any("template" in s for s in sends)
    for send in sends:
        parse_send(send)
    for template in examples(doc, paths["/v1/push/templates/{name}"]["put"]).values():
        parse_content(template)


# Bodies the code refuses (400 InvalidRequest), each refused by the route's request schema as well.
SEND = {"target": {"type": "device", "ids": ["phone-1"]}, "notification": {"title": "Sale"}}
NOTE = SEND["notification"]
REFUSED_SENDS: dict[str, dict[str, Any]] = {
    "ttlSeconds -1": {**SEND, "ttlSeconds": -1},
    "ttlSeconds past 30 days": {**SEND, "ttlSeconds": 2592001},
    "ttlSeconds a string": {**SEND, "ttlSeconds": "60"},
    "target type everyone": {**SEND, "target": {"type": "everyone"}},
    "target type token": {**SEND, "target": {"type": "token", "ids": ["x"]}},
    "no target": {"notification": NOTE},
    "ids for all": {**SEND, "target": {"type": "all", "ids": ["x"]}},
    "no ids": {**SEND, "target": {"type": "user"}},
    "empty ids": {**SEND, "target": {"type": "user", "ids": []}},
    "1001 ids": {**SEND, "target": {"type": "device", "ids": [f"d{i}" for i in range(1001)]}},
    "an id with a space": {**SEND, "target": {"type": "device", "ids": ["a b"]}},
    "an id with a brace": {**SEND, "target": {"type": "alias", "ids": ["a{b"]}},
    "an id of 129": {**SEND, "target": {"type": "user", "ids": ["u" * 129]}},
    "a tag of 65": {**SEND, "target": {"type": "tag", "ids": ["t" * 65]}},
    "a filter on devices": {**SEND, "target": {"type": "device", "ids": ["d"], "filter": {"platforms": ["ios"]}}},
    "an unknown filter field": {**SEND, "target": {"type": "all", "filter": {"brands": ["apple"]}}},
    "a filter platform symbian": {**SEND, "target": {"type": "all", "filter": {"platforms": ["symbian"]}}},
    "a version 2.x": {**SEND, "target": {"type": "all", "filter": {"minAppVersion": "2.x"}}},
    "a version of 5 numbers": {**SEND, "target": {"type": "all", "filter": {"maxAppVersion": "1.2.3.4.5"}}},
    "badge '1'": {**SEND, "notification": {**NOTE, "badge": "1"}},
    "badge true": {**SEND, "notification": {**NOTE, "badge": True}},
    "badge 100000": {**SEND, "notification": {**NOTE, "badge": 100000}},
    "an unknown notification field": {**SEND, "notification": {**NOTE, "color": "red"}},
    "an empty notification": {**SEND, "notification": {}},
    "empty data alone": {**SEND, "notification": {"data": {}}},
    "a title of 513": {**SEND, "notification": {"title": "t" * 513}},
    "a number in data": {**SEND, "notification": {"data": {"sku": 42}}},
    "65 data keys": {**SEND, "notification": {"data": {f"k{i}": "v" for i in range(65)}}},
    "a data key of 257": {**SEND, "notification": {"data": {"k" * 257: "v"}}},
    "notification and template": {**SEND, "template": {"name": "welcome"}},
    "neither notification nor template": {"target": SEND["target"]},
    "template variables not strings": {
        "target": SEND["target"],
        "template": {"name": "welcome", "variables": {"n": 1}},
    },
    "an unknown field": {**SEND, "priority": "high"},
    "urgent 'yes'": {**SEND, "urgent": "yes"},
    "collapseKey with a space": {**SEND, "collapseKey": "a b"},
    "collapseKey of 65": {**SEND, "collapseKey": "c" * 65},
    "scheduledAt 0": {**SEND, "scheduledAt": 0},
    "scheduledAt true": {**SEND, "scheduledAt": True},
    "idempotencyKey of 129": {**SEND, "idempotencyKey": "k" * 129},
    "idempotencyKey a number": {**SEND, "idempotencyKey": 42},
}
GORUSH = {"tokens": ["abc"], "platform": 1, "message": "hi"}
REFUSED: list[tuple[str, str, str, Any]] = [
    *[("POST", "/v1/push/messages", name, body) for name, body in REFUSED_SENDS.items()],
    ("POST", "/v1/push/messages/batch", "no messages", {"messages": []}),
    ("POST", "/v1/push/messages/batch", "501 messages", {"messages": [SEND] * 501}),
    ("POST", "/v1/push/messages/batch", "a refused send", {"messages": [SEND, REFUSED_SENDS["ttlSeconds -1"]]}),
    ("PUT", "/v1/push/devices/{deviceId}", "no platform", {"brand": "apple"}),
    ("PUT", "/v1/push/devices/{deviceId}", "platform symbian", {"platform": "symbian"}),
    ("PUT", "/v1/push/devices/{deviceId}", "a brand with a space", {"platform": "android", "brand": "mate 60"}),
    ("PUT", "/v1/push/devices/{deviceId}", "a brand of 33", {"platform": "android", "brand": "b" * 33}),
    ("PUT", "/v1/push/devices/{deviceId}", "a GCM token", {"platform": "android", "tokens": {"GCM": "t"}}),
    ("PUT", "/v1/push/devices/{deviceId}", "a token with a space", {"platform": "ios", "tokens": {"APNs": "a b"}}),
    ("PUT", "/v1/push/devices/{deviceId}", "a token of 1025", {"platform": "ios", "tokens": {"APNs": "t" * 1025}}),
    ("PUT", "/v1/push/devices/{deviceId}", "appVersion of 33", {"platform": "ios", "appVersion": "1" * 33}),
    ("PUT", "/v1/push/devices/{deviceId}", "101 tags", {"platform": "ios", "tags": [f"t{i}" for i in range(101)]}),
    ("PUT", "/v1/push/devices/{deviceId}", "an empty tag", {"platform": "ios", "tags": [""]}),
    ("POST", "/v1/push/devices/{deviceId}/tags", "add a string", {"add": "vip"}),
    ("POST", "/v1/push/devices/{deviceId}/tags", "remove 101", {"remove": [f"t{i}" for i in range(101)]}),
    ("PUT", "/v1/push/devices/{deviceId}/alias", "an alias with a space", {"alias": "a b"}),
    ("PUT", "/v1/push/devices/{deviceId}/alias", "an alias a number", {"alias": 5}),
    ("POST", "/v1/push/bind", "no deviceId", {"userId": "alice"}),
    ("POST", "/v1/push/bind", "an empty userId", {"userId": "", "deviceId": "phone-1"}),
    ("POST", "/v1/push/unbind", "a deviceId of 129", {"userId": "alice", "deviceId": "d" * 129}),
    ("POST", "/v1/push/receipts", "event read", {"messageId": "0" * 28, "deviceId": "phone-1", "event": "read"}),
    ("POST", "/v1/push/receipts", "messageId xyz", {"messageId": "xyz", "deviceId": "phone-1", "event": "opened"}),
    ("POST", "/v1/push/receipts", "no deviceId", {"messageId": "0" * 28, "event": "opened"}),
    ("PUT", "/v1/push/templates/{name}", "an unknown field", {"title": "x", "color": "red"}),
    ("PUT", "/v1/push/templates/{name}", "nothing to show", {"badge": 1}),
    ("PUT", "/v1/push/templates/{name}", "badge -1", {"title": "x", "badge": -1}),
    ("POST", "/api/push", "no notifications", {"notifications": []}),
    ("POST", "/api/push", "501 notifications", {"notifications": [GORUSH] * 501}),
    ("POST", "/api/push", "platform 8", {"notifications": [{**GORUSH, "platform": 8}]}),
    ("POST", "/api/push", "platform '1'", {"notifications": [{**GORUSH, "platform": "1"}]}),
    ("POST", "/api/push", "no tokens", {"notifications": [{"platform": 1, "message": "hi"}]}),
    ("POST", "/api/push", "1001 tokens", {"notifications": [{**GORUSH, "tokens": [f"t{i}" for i in range(1001)]}]}),
    ("POST", "/api/push", "nothing to show", {"notifications": [{"tokens": ["abc"], "platform": 2}]}),
    ("POST", "/api/push", "time_to_live -1", {"notifications": [{**GORUSH, "time_to_live": -1}]}),
    ("POST", "/api/push", "expiration a date", {"notifications": [{**GORUSH, "expiration": "2026-12-01"}]}),
    ("POST", "/api/push", "collapse_id with a space", {"notifications": [{**GORUSH, "collapse_id": "a b"}]}),
    ("POST", "/api/push", "badge 100000", {"notifications": [{**GORUSH, "badge": 100000}]}),
    ("POST", "/api/push", "data not an object", {"notifications": [{**GORUSH, "data": ["x"]}]}),
]


def test_bodies_the_code_refuses_are_refused_by_the_schemas(doc: dict[str, Any]) -> None:
    for method, path, name, body in REFUSED:
        op = doc["paths"][path][method.lower()]
        assert not validator(doc, request_schema(doc, op)).is_valid(body), (method, path, name)
    for name, body in REFUSED_SENDS.items():
        if name not in ("an unknown field", "notification and template", "template variables not strings"):
            with pytest.raises(Invalid):  # the parsers alone refuse it (the others: build_message and render)
                parse_send(body)


class Api:
    """The push app built with memory stores (not started), its app keyed, called signed over ASGI."""

    def __init__(self) -> None:
        served = build(PushSettings())
        served.app.state.live.current = PushConfig(apps={(APP, WS): AppKeys(APP, WS, ((KEY, None),), None)})
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=served.app), base_url="http://push")

    async def call(self, method: str, path: str, body: Any = None, *, signed: bool = True) -> httpx.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = sign_headers(KEY, method, path, "", APP, WS, raw) if signed else {}
        return await self.client.request(method, path, content=raw, headers=headers)


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def fresh(body: Any) -> Any:
    """The body with each scheduledAt an hour ahead (the examples' dates pass)."""
    if isinstance(body, dict):
        return {k: (int(time.time() * 1000) + 3_600_000 if k == "scheduledAt" else fresh(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [fresh(v) for v in body]
    return body


def check_answer(doc: dict[str, Any], method: str, path: str, answer: httpx.Response) -> None:
    """The status is one the operation documents and the body is valid by that response's schema."""
    op = doc["paths"][path][method.lower()]
    status = str(answer.status_code)
    assert status in op["responses"], (method, path, status, answer.text[:300])
    schema = resolve(doc, op["responses"][status])["content"]["application/json"]["schema"]
    errors = [f"{e.instance_path}: {e.message}" for e in validator(doc, schema).iter_errors(answer.json())]
    assert not errors, (method, path, status, answer.text[:300], errors)


# The order the operations run in: what the others name is created first, deletions come last.
FIRST = [
    ("PUT", "/v1/push/devices/{deviceId}"),
    ("POST", "/v1/push/bind"),
    ("PUT", "/v1/push/devices/{deviceId}/alias"),
    ("PUT", "/v1/push/templates/{name}"),
    ("POST", "/v1/push/messages"),
]
LAST = [
    ("POST", "/v1/push/unbind"),
    ("DELETE", "/v1/push/messages/{messageId}"),
    ("DELETE", "/v1/push/templates/{name}"),
    ("DELETE", "/v1/push/devices/{deviceId}"),
]


async def test_the_app_answers_the_examples_as_documented(doc: dict[str, Any]) -> None:
    api = Api()
    ops = {(m, p): op for m, p, op in operations(doc)}
    order = [*FIRST, *sorted(set(ops) - set(FIRST) - set(LAST)), *LAST]
    values = dict(PATH_VALUES)
    statuses: dict[tuple[str, str], set[int]] = {}
    async with api.client:
        for method, path in order:
            op = ops[(method, path)]
            bodies = [fresh(b) for b in examples(doc, op).values()] if "requestBody" in op else [None]
            if (method, path) == ("PUT", "/v1/push/devices/{deviceId}/alias"):
                bodies.reverse()  # removed, then set: the alias stays for the sends
            for body in bodies:
                answer = await api.call(method, fill(path, values), body)
                check_answer(doc, method, path, answer)
                assert answer.status_code < 400 or answer.status_code == 404, (method, path, answer.text[:300])
                statuses.setdefault((method, path), set()).add(answer.status_code)
                if method == "POST" and path == "/v1/push/messages" and answer.json()["state"] == "Scheduled":
                    values["messageId"] = answer.json()["messageId"]
            # Unsigned, every route answers 401 Unauthorized, as documented; the vendors' receipt address (its
            # token the credential) answers 404 to a token it does not know.
            answer = await api.call(method, fill(path, values), None, signed=False)
            expected = (404, "UnknownChannel") if op.get("security") == [] else (401, "Unauthorized")
            assert (answer.status_code, answer.json()["code"]) == expected, (method, path)
            check_answer(doc, method, path, answer)
    not_ok = {k: v for k, v in statuses.items() if not any(s < 300 for s in v)}
    # What the examples name exists by then: only the receipt of an example message id is unknown, and the
    # example channel's receipt address.
    assert set(not_ok) == {("POST", "/v1/push/receipts"), ("POST", RECEIPTS)}, not_ok


async def test_the_app_refuses_what_the_schemas_refuse(doc: dict[str, Any]) -> None:
    api = Api()
    async with api.client:
        await api.call("PUT", "/v1/push/devices/phone-1", {"platform": "ios"})
        for method, path, name, body in REFUSED:
            answer = await api.call(method, fill(path, PATH_VALUES), body)
            assert (answer.status_code, answer.json()["code"]) == (400, "InvalidRequest"), (name, answer.text[:300])
            check_answer(doc, method, path, answer)


async def test_a_template_over_16_kib_is_refused() -> None:
    api = Api()
    async with api.client:
        big = {"title": "t", "data": {f"k{i}": "v" * 1000 for i in range(17)}}
        answer = await api.call("PUT", "/v1/push/templates/big", big)
        assert (answer.status_code, answer.json()["code"]) == (413, "PayloadTooLarge"), answer.text
        assert (await api.call("PUT", "/v1/push/templates/small", {"title": "t"})).status_code == 200
