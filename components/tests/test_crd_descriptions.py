"""Every field of every CRD is documented, so `kubectl explain` describes the whole API."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mpaas.api import KINDS
from mpaas.api.base import ApiModel
from mpaas.api.crdgen import _models_in, crd

pytestmark = pytest.mark.unit


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def properties(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every property under `schema` as (path, schema): nested objects, list items (`[]`) and map values (`{}`)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, prop in (schema.get("properties") or {}).items():
        where = f"{path}.{name}" if path else name
        out.append((where, prop))
        out += properties(prop, where)
    if isinstance(schema.get("items"), dict):
        out += properties(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += properties(schema["additionalProperties"], f"{path}{{}}")
    return out


# The API server refuses anything but `type` on the root metadata (kubectl explain shows ObjectMeta's docs).
SERVER_DOCUMENTED = {"metadata"}


def undocumented(schema: dict[str, Any]) -> list[str]:
    return [
        path
        for path, prop in properties(schema)
        if path not in SERVER_DOCUMENTED and not str(prop.get("description") or "").strip()
    ]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_field_has_a_description(kind: str) -> None:
    schema = root_schema(kind)
    assert {"spec", "status"} <= set(schema["properties"])
    missing = undocumented(schema)
    assert not missing, f"{kind}: {len(missing)} fields without a description:\n  " + "\n  ".join(missing)


def test_the_check_finds_nested_fields_and_list_items() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "documented",
                "properties": {
                    "apis": {
                        "type": "array",
                        "description": "documented",
                        "items": {"type": "object", "properties": {"path": {"type": "string"}}},
                    },
                    "limits": {"type": "object", "properties": {"burst": {"type": "integer", "description": " "}}},
                },
            },
            "status": {"type": "object"},
        },
    }
    assert undocumented(schema) == ["spec.apis[].path", "spec.limits", "spec.limits.burst", "status"]


def _default_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_descriptions_state_scalar_defaults(kind: str) -> None:
    """A field with a default says so ("Default 300."), and names the default the schema really applies."""
    wrong = []
    for path, prop in properties(root_schema(kind)):
        default = prop.get("default")
        if isinstance(default, dict | list) or default in (None, ""):
            continue
        text = _default_text(default)
        if not re.search(rf"\bdefault:? {re.escape(text)}(?!\w)", prop.get("description") or "", re.IGNORECASE):
            wrong.append(f"{path} (default {text}): {prop.get('description')!r}")
    assert not wrong, f"{kind}: descriptions that do not state the default:\n  " + "\n  ".join(wrong)


def _models(model: type[ApiModel], seen: set[type[ApiModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for f in model.model_fields.values():
        for m in _models_in(f.annotation):
            _models(m, seen)


def test_every_model_has_its_own_docstring() -> None:
    """Object types are described too: a model's docstring becomes its schema's description."""
    seen: set[type[ApiModel]] = set()
    for kind in KINDS.values():
        _models(kind.spec, seen)
        _models(kind.status, seen)
    missing = sorted(m.__qualname__ for m in seen if not (m.__dict__.get("__doc__") or "").strip())
    assert not missing, f"models without a docstring: {', '.join(missing)}"
