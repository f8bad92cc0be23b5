"""Route compilation and endpoint choice."""

import collections

import pytest

from mpaas.config import validate
from mpaas.gateway.stages import forward
from mpaas.gateway.stages.route import compile_gateway

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
    assert table.apis["a"].forward.timeout_seconds == 1.5 and table.apis["b"].forward.timeout_seconds == 0.2
    assert table.apis["c"].forward.upstream.base_urls == ("http://backend.ns.svc:8080",)
    picks = collections.Counter(table.apis["a"].forward.upstream.pick() for _ in range(20000))
    assert set(picks) == {"http://a:1", "http://b:1"}  # weight 0 takes no traffic
    assert 2.6 < picks["http://a:1"] / picks["http://b:1"] < 3.4


def cluster_groups() -> object:
    return compile_gateway(
        resource(
            {  # type: ignore[arg-type]
                "upstreams": [
                    {"name": "a", "endpoints": [{"url": "http://a:1"}]},
                    {"name": "b", "endpoints": [{"url": "http://b:1"}]},
                    {"name": "standby", "endpoints": [{"url": "http://s:1"}]},
                    {"name": "dr", "endpoints": [{"url": "http://dr:1"}]},
                    {
                        "name": "bj",
                        "clusters": [
                            {"upstream": "a", "weight": 1000},
                            {"upstream": "standby", "weight": 0},
                            {"upstream": "b", "weight": 3000},
                        ],
                        "failoverUpstream": "dr",
                    },
                    {"name": "solo", "endpoints": [{"url": "http://x:1"}], "failoverUpstream": "bj"},
                ],
                "apis": [{"operationType": "op", "upstream": "bj"}],
            }
        )
    )


def test_a_cluster_group_mixes_its_members_by_weight() -> None:
    table = cluster_groups()
    group = table.apis["op"].forward.upstream
    assert group.members == ("a", "standby", "b") and group.base_urls == ()
    picks = collections.Counter(forward.member(table.upstreams, group).name for _ in range(20000))
    assert set(picks) == {"a", "b"}  # the standby takes nothing while the others can
    assert 2.6 < picks["b"] / picks["a"] < 3.4


def test_alternatives_are_the_siblings_by_weight_then_standbys_then_the_failover() -> None:
    table = cluster_groups()
    up = table.upstreams  # type: ignore[attr-defined]

    def names(first: str, used: str) -> list[str]:
        return [u.name for u in forward.alternatives(table.upstreams, up[first], up[used])]

    assert names("bj", "a") == ["b", "standby", "dr"]
    assert names("bj", "b") == ["a", "standby", "dr"]
    assert names("bj", "standby") in (["b", "a", "dr"], ["a", "b", "dr"])
    orders = collections.Counter(tuple(names("bj", "dr")) for _ in range(4000))
    assert set(orders) == {("b", "a", "standby"), ("a", "b", "standby")}
    # The heavier sibling comes first about 3 times in 4 (P(b first) = 3000 / 4000).
    assert 0.70 < orders[("b", "a", "standby")] / 4000 < 0.80
    # A plain upstream's failover may be a group: its members take the request, never the group itself.
    assert sorted(names("solo", "solo")) == ["a", "b", "standby"]
    assert names("a", "a") == []  # a plain upstream without failoverUpstream has nowhere else to go


@pytest.mark.parametrize(
    ("clusters", "message"),
    [
        ([{"upstream": "g"}], r"clusters\[0\].upstream: a cluster group cannot contain itself"),
        ([{"upstream": "nope"}], r"clusters\[0\].upstream: no upstream named 'nope'"),
        ([{"upstream": "inner"}], r"clusters\[0\].upstream: 'inner' is a cluster group itself"),
        ([{"upstream": "a"}, {"upstream": "a"}], r"clusters\[1\].upstream: 'a' is listed twice"),
    ],
)
def test_cluster_group_references_are_checked(clusters: list, message: str) -> None:
    from mpaas.api import InvalidResource

    spec = {
        "upstreams": [
            {"name": "a", "endpoints": [{"url": "http://a:1"}]},
            {"name": "inner", "clusters": [{"upstream": "a"}]},
            {"name": "g", "clusters": clusters},
        ],
        "apis": [{"operationType": "op", "upstream": "g"}],
    }
    with pytest.raises(InvalidResource, match=message):
        resource(spec)


def test_header_mappings_match_any_spelling_of_the_name() -> None:
    from mpaas.http1 import Headers

    table = compile_gateway(
        resource(
            {  # type: ignore[arg-type]
                "upstreams": [{"name": "u", "endpoints": [{"url": "http://a:1"}]}],
                "apis": [{"operationType": "a", "upstream": "u", "headerMappings": [{"from": "X-Device", "to": "d"}]}],
            }
        )
    )
    ((src, _),) = table.apis["a"].forward.header_mappings
    assert Headers([("x-device", "phone-1")]).get(src) == "phone-1"  # names arrive lower-cased
