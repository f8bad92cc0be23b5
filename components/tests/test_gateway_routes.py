"""Route compilation and endpoint choice."""

import collections

import pytest

from mpaas.config import validate
from mpaas.gateway.routes import compile_gateway

pytestmark = pytest.mark.unit


def resource(spec: dict) -> object:
    return validate("MpaasGateway", {"metadata": {"name": "g", "namespace": "ns", "generation": 4}, "spec": spec})


def test_timeouts_inherit_from_the_upstream_and_weights_split_traffic() -> None:
    table = compile_gateway(
        resource(
            {  # type: ignore[arg-type]
                "upstreams": [
                    {
                        "name": "u",
                        "timeoutMilliseconds": 1500,
                        "endpoints": [
                            {"url": "http://a:1/", "weight": 300},
                            {"url": "http://b:1", "weight": 100},
                            {"url": "http://c:1", "weight": 0},
                        ],
                    },
                    {"name": "svc", "serviceRef": {"name": "backend", "port": 8080}},
                ],
                "apis": [
                    {"operationType": "a", "upstream": "u"},
                    {"operationType": "b", "upstream": "u", "timeoutMilliseconds": 200},
                    {"operationType": "c", "upstream": "svc", "path": "/c"},
                ],
            }
        )
    )
    assert table.generation == 4 and table.gateway == "ns/g"
    assert table.apis["a"].timeout_seconds == 1.5 and table.apis["b"].timeout_seconds == 0.2
    assert table.apis["c"].upstream.base_urls == ("http://backend.ns.svc:8080",)
    picks = collections.Counter(table.apis["a"].upstream.pick() for _ in range(20000))
    assert set(picks) == {"http://a:1", "http://b:1"}  # weight 0 takes no traffic
    assert 2.6 < picks["http://a:1"] / picks["http://b:1"] < 3.4


def test_every_result_code_is_listed_and_documented() -> None:
    from pathlib import Path

    from mpaas.gateway import codes

    defined = {v.code for v in vars(codes).values() if isinstance(v, codes.ResultCode)}
    assert defined == {c.code for c in codes.ALL}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    for c in codes.ALL:
        assert f"| {c.code} | `{c.name}` | {c.http_status} | {c.memo} |" in doc, (
            f"{c.code} missing from docs/gateway.md"
        )
