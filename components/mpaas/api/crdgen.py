"""Render CustomResourceDefinitions from the pydantic models.

Pydantic's JSON schema is close to Kubernetes' structural OpenAPI v3 but not
equal: `$ref`s must be inlined, `anyOf [X, null]` becomes plain X, titles go,
and our CEL rules and list-map markers are carried through. Descriptions stay
(what `kubectl explain` shows): a field's `Field(description=...)`, else its
model's docstring.
"""

from __future__ import annotations

from typing import Any

from . import API_VERSION, GROUP, VERSION, Kind
from .base import ApiModel

_DROP = {"title", "$defs", "discriminator"}


def _cel_by_title(
    model: type[ApiModel], out: dict[str, list[dict[str, str]]], defaults: dict[str, dict[str, Any]]
) -> None:
    """Collect `__cel__` rules of a model and every model it contains, keyed by schema title.

    Also note the fields whose default is a whole sub-object: the schema gets
    the default object itself (CEL rules see it before nested defaults apply).
    """
    if model.__name__ in out:
        return
    out[model.__name__] = list(getattr(model, "__cel__", []))
    defaults[model.__name__] = {}
    for name, f in model.model_fields.items():
        if f.default_factory is not None and isinstance(f.annotation, type) and issubclass(f.annotation, ApiModel):
            defaults[model.__name__][f.alias or name] = f.default_factory().wire()  # type: ignore[call-arg]
        for t in _models_in(f.annotation):
            _cel_by_title(t, out, defaults)


def _models_in(annotation: Any) -> list[type[ApiModel]]:
    found: list[type[ApiModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, ApiModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


def structural(
    schema: dict[str, Any],
    defs: dict[str, Any],
    rules: dict[str, list[dict[str, str]]],
    defaults: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs, rules, defaults)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(options) == 1:
            return structural({**options[0], **rest}, defs, rules, defaults)
        # Several non-null options: only used for free-form values.
        return {"x-kubernetes-preserve-unknown-fields": True, **_clean(rest)}
    out: dict[str, Any] = {}
    title = schema.get("title")
    for k, v in schema.items():
        if k in _DROP:
            continue
        if k == "default" and v is None:
            continue
        if k == "properties":
            out[k] = {name: structural(p, defs, rules, defaults) for name, p in v.items()}
            for name, value in defaults.get(title or "", {}).items():
                out[k][name].setdefault("default", value)
        elif k == "items":
            out[k] = structural(v, defs, rules, defaults)
        elif k == "additionalProperties":
            out[k] = structural(v, defs, rules, defaults) if isinstance(v, dict) else v
        elif k == "description":
            out[k] = " ".join(v.split())
        else:
            out[k] = v
    if out.get("type") == "object" and "properties" in out and title in rules and rules[title]:
        out["x-kubernetes-validations"] = out.get("x-kubernetes-validations", []) + rules[title]
    if out.get("type") == "object" and out.get("additionalProperties") is False:
        del out["additionalProperties"]  # structural schemas prune unknown fields instead
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("type", None) if not out.get("properties") else None
        if "type" not in out and "properties" not in out:
            out.pop("additionalProperties", None)
    if out.get("type") is None and not out.get("x-kubernetes-preserve-unknown-fields") and not out.get("properties"):
        if "enum" in out:
            out["type"] = "string"
    if out.get("format") == "date-time":
        out["type"] = "string"
    return out


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k not in _DROP and not (k == "default" and v is None)}
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    return out


def model_schema(model: type[ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    rules: dict[str, list[dict[str, str]]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    _cel_by_title(model, rules, defaults)
    return structural(raw, raw.get("$defs", {}), rules, defaults)


def _summary(kind: Kind) -> str:
    import sys

    doc = sys.modules[kind.spec.__module__].__doc__ or kind.kind
    return doc.strip().splitlines()[0]


def crd(kind: Kind) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec)
    status_schema = model_schema(kind.status)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": kind.printer_columns,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": _summary(kind),
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string", "description": f"Versioned schema of this object: {API_VERSION}."},
                    "kind": {"type": "string", "description": f"Kind of this object: {kind.kind}."},
                    # The API server allows nothing but the type here: kubectl explain shows ObjectMeta's own docs.
                    "metadata": {"type": "object"},
                    "spec": spec_schema,
                    "status": status_schema,
                },
            }
        },
    }
    if kind.root_rules:
        version["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = kind.root_rules
    if kind.scale:
        version["subresources"]["scale"] = kind.scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": ["mpaas"],
            },
            "versions": [version],
        },
    }
