"""The resource models: defaults, messages that say what to fix, checks beyond the schema, CRD rendering."""

import copy
from pathlib import Path

import pytest
import yaml

from conftest import example as _example
from mpaas.api import DELIVERY_TASK, KINDS, MPAAS_GATEWAY, PUSH_CHANNEL, InvalidResource
from mpaas.api.crdgen import crd
from mpaas.api.render import CHART_COPY, CHART_PEERING, render_all, render_kinds, render_peering

pytestmark = pytest.mark.unit


def example(kind: str) -> dict:
    return _example(kind, keep_namespace=True)


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "demo"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_example_is_valid(kind: str) -> None:
    KINDS[kind].parse_spec(example(kind))


def test_gateway_defaults() -> None:
    spec = MPAAS_GATEWAY.parse_spec({"metadata": {"name": "g"}, "spec": {}})
    assert spec.replicas == 2 and spec.max_body_bytes == 1_048_576
    api = MPAAS_GATEWAY.parse_spec(example("MpaasGateway")).apis[0]
    assert api.method == "POST" and api.retries == 0 and api.state == "Online"


def test_unknown_field_is_named_in_the_error() -> None:
    obj = copy.deepcopy(example("MpaasGateway"))
    obj["spec"]["apis"][0]["timeoutMs"] = 5
    with pytest.raises(InvalidResource) as e:
        MPAAS_GATEWAY.parse_spec(obj)
    assert "spec.apis[0].timeoutMs" in str(e.value)


def test_api_with_unknown_upstream_is_rejected() -> None:
    obj = copy.deepcopy(example("MpaasGateway"))
    obj["spec"]["apis"][0]["upstream"] = "nope"
    with pytest.raises(
        InvalidResource, match=r"spec.apis\[0\] \(com.demo.user.profile\).upstream: no upstream named 'nope'"
    ):
        MPAAS_GATEWAY.parse_spec(obj)


def test_canary_rule_must_parse() -> None:
    obj = copy.deepcopy(example("MpaasGateway"))
    obj["spec"]["upstreams"].append({"name": "canary", "endpoints": [{"url": "http://127.0.0.1:1"}]})
    obj["spec"]["apis"][0]["canary"] = {"upstream": "canary", "rule": "DEVICE_ID MOD 100 IN (0..9"}
    with pytest.raises(InvalidResource, match=r"canary.rule: expected '\)'"):
        MPAAS_GATEWAY.parse_spec(obj)
    obj["spec"]["apis"][0]["canary"]["rule"] = "DEVICE_ID MOD 100 IN (0..9)"
    MPAAS_GATEWAY.parse_spec(obj)


def test_delivery_stages_must_not_shrink() -> None:
    obj = copy.deepcopy(example("DeliveryTask"))
    obj["spec"]["stages"] = [{"percent": 50, "durationSeconds": 600}, {"percent": 20}]
    with pytest.raises(InvalidResource, match="percents must not decrease"):
        DELIVERY_TASK.parse_spec(obj)


def test_push_channel_type_is_an_enum() -> None:
    obj = copy.deepcopy(example("PushChannel"))
    obj["spec"]["type"] = "Carrier-Pigeon"
    with pytest.raises(InvalidResource, match=r"spec.type: Input should be 'Link', 'APNs'"):
        PUSH_CHANNEL.parse_spec(obj)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_shape(kind: str) -> None:
    doc = crd(KINDS[kind])
    version = doc["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]["properties"]
    assert version["subresources"]["status"] == {}
    assert {"observedGeneration", "conditions"} <= set(status)
    cond = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= set(cond)
    assert any(c["name"] == "Status" for c in version["additionalPrinterColumns"])
    text = yaml.safe_dump(doc)
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text


def test_gateway_crd_has_scale_and_cel() -> None:
    version = crd(MPAAS_GATEWAY)["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("self.upstreams.exists" in r for r in rules)
    assert spec["properties"]["apis"]["x-kubernetes-list-map-keys"] == ["operationType"]


def test_generated_files_are_current() -> None:
    for folder, files in (
        (ROOT / "crds", render_all()),
        (ROOT / CHART_COPY, render_kinds()),
        (ROOT / CHART_PEERING, render_peering()),
    ):
        for name, text in files.items():
            assert (folder / name).read_text() == text, f"{folder / name} drifted: run hack/gen-crds"


def test_a_field_nothing_reads_is_refused_not_ignored() -> None:
    obj = copy.deepcopy(example("MpaasGateway"))
    obj["spec"]["rollout"] = {"steps": [{"setWeight": 10}, {"pause": {"durationSeconds": 60}}]}
    with pytest.raises(InvalidResource) as e:
        MPAAS_GATEWAY.parse_spec(obj)
    assert "spec.rollout: stepwise rollouts are not implemented yet" in str(e.value)
