"""Generated clients: the code generated (unit), and that it compiles (component tier: TypeScript with tsc --strict,
Kotlin with kotlinc, both from the test environment's cache)."""

import json
import subprocess
from pathlib import Path

import pytest

from mpaas.config import LiveConfig
from mpaas.gateway import codegen
from mpaas.gateway.admin import openapi_document
from mpaas.gateway.stages.route import EMPTY, KIND, RouteTable, compiler
from testenv_paths import kotlin_classpath, kotlin_stdlib, tsc

ITEM = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["book", "game"]},
        "owner": {"type": "object", "properties": {"name": {"type": "string"}}},
        "note": {"type": ["string", "null"]},
    },
}


def export() -> dict:
    live: LiveConfig[RouteTable] = LiveConfig("gen", [KIND], compiler(None, None), EMPTY)
    live.on_snapshot(
        KIND,
        {
            ("ns", "gw"): {
                "kind": KIND,
                "metadata": {"name": "gw", "namespace": "ns"},
                "spec": {
                    "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
                    "apis": [
                        {
                            "operationType": "com.shop.item.get",
                            "upstream": "u",
                            "requestSchema": ITEM,
                            "responseSchema": {
                                "type": "object",
                                "properties": {"item": ITEM, "price": {"type": "number"}},
                            },
                        },
                        {"operationType": "com.shop.ping", "upstream": "u"},
                    ],
                },
            }
        },
    )
    return openapi_document(live.current, live, "APP")


@pytest.mark.unit
def test_names() -> None:
    assert codegen.camel("com.shop.item-get") == "comShopItemGet"
    assert codegen.pascal("com.shop.item_get") == "ComShopItemGet"


@pytest.mark.unit
def test_typescript_client_code() -> None:
    code = codegen.typescript(export())
    assert "comShopItemGet(request: ComShopItemGetRequest): Promise<ComShopItemGetResponse>" in code
    assert '"kind"?: "book" | "game";' in code and '"id": number;' in code
    assert "export class GatewayClient" in code and "export class GatewayError" in code


@pytest.mark.component
def test_typescript_client_compiles(tmp_path: Path) -> None:
    code = codegen.typescript(export())
    (tmp_path / "gateway.ts").write_text(code)
    (tmp_path / "use.ts").write_text(
        'import { GatewayClient, GatewayError } from "./gateway";\n'
        'const c = new GatewayClient("http://gw", "APP", "prod");\n'
        "async function main(): Promise<number> {\n"
        '  const r = await c.comShopItemGet({ id: 1, kind: "book", note: null });\n'
        "  const price: number | undefined = r.price;\n"
        "  try { await c.comShopPing({}); } catch (e) { if (e instanceof GatewayError) return e.resultStatus; }\n"
        "  return (r.item?.id ?? 0) + (price ?? 0);\n"
        "}\n"
        "void main;\n"
    )
    r = subprocess.run(
        [
            tsc(),
            "--strict",
            "--noEmit",
            "--target",
            "es2022",
            "--lib",
            "es2022,dom",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            str(tmp_path / "gateway.ts"),
            str(tmp_path / "use.ts"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.unit
def test_kotlin_client_code() -> None:
    code = codegen.kotlin(export(), "com.example.shop")
    assert "fun comShopItemGet(request: ComShopItemGetRequest): ComShopItemGetResponse" in code
    assert "val id: Long" in code and "val tags: List<String>? = null" in code
    assert "package com.example.shop" in code and "class GatewayClient" in code


@pytest.mark.component
def test_kotlin_client_compiles(tmp_path: Path) -> None:
    code = codegen.kotlin(export(), "com.example.shop")
    (tmp_path / "Gateway.kt").write_text(code)
    r = subprocess.run(
        [
            "java",
            "-cp",
            kotlin_classpath(),
            "org.jetbrains.kotlin.cli.jvm.K2JVMCompiler",
            "-no-stdlib",
            "-no-reflect",
            "-classpath",
            kotlin_stdlib(),
            "-d",
            str(tmp_path / "out"),
            str(tmp_path / "Gateway.kt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "out" / "com" / "example" / "shop" / "GatewayClient.class").exists()


@pytest.mark.unit
def test_cli_writes_a_client(tmp_path: Path) -> None:
    from mpaas.cli import main

    (tmp_path / "openapi.json").write_text(json.dumps(export()))
    assert (
        main(
            [
                "client-gen",
                "--openapi",
                str(tmp_path / "openapi.json"),
                "--lang",
                "typescript",
                "--out",
                str(tmp_path / "client.ts"),
            ]
        )
        == 0
    )
    assert "export class GatewayClient" in (tmp_path / "client.ts").read_text()
