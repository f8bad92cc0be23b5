"""CodePush: the requests' parsing, the deployment-key map, and which bundle a client gets (no servers)."""

import copy
import hashlib
import json
from typing import Any

import pytest

from mpaas.api import KINDS, InvalidResource
from mpaas.api.delivery import Package
from mpaas.config import validate
from mpaas.delivery.check import DeliveryConfig, compile_config
from mpaas.delivery.codepush import CodePush, Deployment, Invalid, compile_deployments, parse_check, parse_report
from mpaas.delivery.targeting import Seats
from mpaas.stores.sets import MemoryMemberSets

KEY = "prod-key-7Hc2WqLmZx"


def gateway(name: str, deployments: list[dict[str, str]], app: str = "SHOP", created: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "MpaasGateway",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created or "2026-11-01T00:00:00Z"},
        "spec": {"apps": [{"appId": app, "workspaceId": "prod", "codePush": {"deployments": deployments}}]},
    }


def bundle(name: str, version: str, **spec: Any) -> dict[str, Any]:
    data = name.encode()
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": "Hotfix",
            "package": {
                "uri": f"https://cdn.example/{name}.zip",
                "version": version,
                "sha256": hashlib.sha256(data).hexdigest(),
                "sizeBytes": len(data),
            },
            **spec,
        },
    }


def resources(*docs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"DeliveryTask": {}, "MpaasGateway": {}}
    for doc in docs:
        r = validate(doc["kind"], doc)
        out[doc["kind"]][(r.namespace, r.name)] = r
    return out


PROD = {"name": "Production", "platform": "Android", "key": KEY}


@pytest.mark.unit
def test_a_check_reads_both_spellings_and_says_what_is_wrong() -> None:
    camel = parse_check(f"deploymentKey={KEY}&appVersion=1.2.0&packageHash=ab&label=v2&clientUniqueId=d1")
    snake = parse_check(
        f"deployment_key={KEY}&app_version=1.2.0&package_hash=ab&label=v2&client_unique_id=d1&is_companion=true"
    )
    assert (camel.deployment_key, camel.app_version, camel.package_hash, camel.label) == (KEY, "1.2.0", "ab", "v2")
    assert snake.client_unique_id == "d1" and snake.is_companion and not camel.is_companion
    for query, message in [
        ("appVersion=1.0.0&clientUniqueId=d", "deploymentKey is required"),
        (f"deploymentKey={KEY}&clientUniqueId=d", "appVersion is required"),
        (f"deploymentKey={KEY}&appVersion=latest&clientUniqueId=d", "semver"),
        (f"deploymentKey={KEY}&appVersion=1.0", "clientUniqueId is required"),
        (f"deploymentKey={KEY}&deploymentKey=x&appVersion=1&clientUniqueId=d", "given twice"),
        ("&".join(f"x{i}=1" for i in range(40)), "at most 16"),
        (f"deploymentKey={KEY}&appVersion=1&clientUniqueId=" + "d" * 201, "longer than 200"),
    ]:
        with pytest.raises(Invalid) as e:
            parse_check(query)
        assert e.value.status == 400 and message in str(e.value), query
    assert parse_check(f"deploymentKey={KEY}&appVersion=2.0-beta.1&clientUniqueId=d").app_version == "2.0-beta.1"


@pytest.mark.unit
def test_reports_are_validated() -> None:
    deploy = parse_report("deploy", json.dumps({"deployment_key": KEY, "app_version": "1.0", "label": "v2",
                                                 "status": "DeploymentFailed"}).encode())  # fmt: skip
    assert (deploy.label, deploy.status, deploy.app_version) == ("v2", "DeploymentFailed", "1.0")
    binary = parse_report("deploy", json.dumps({"deploymentKey": KEY, "appVersion": "1.0"}).encode())
    assert (binary.label, binary.status) == ("", "DeploymentSucceeded")
    assert parse_report("download", json.dumps({"deploymentKey": KEY, "label": "v2"}).encode()).status == "Downloaded"
    for kind, body, message in [
        ("deploy", b"{nope", "not JSON"),
        ("deploy", b"[]", "not a JSON object"),
        ("deploy", {"appVersion": "1.0"}, "deploymentKey is required"),
        ("deploy", {"deploymentKey": KEY}, "appVersion is required"),
        ("deploy", {"deploymentKey": KEY, "appVersion": "1.0", "label": "v2"}, "status is required"),
        ("deploy", {"deploymentKey": KEY, "appVersion": "1.0", "label": "v2", "status": "Fine"}, "status must be"),
        ("deploy", {"deploymentKey": 7, "appVersion": "1.0"}, "must be a string"),
        ("download", {"deploymentKey": KEY}, "label is required"),
    ]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        with pytest.raises(Invalid) as e:
            parse_report(kind, raw)
        assert e.value.status == 400 and message in str(e.value), body


@pytest.mark.unit
def test_the_key_map_and_keys_unique_across_the_cluster() -> None:
    staging = {"name": "Staging", "platform": "IOS", "key": "staging-key-Q4nVb8Rt"}
    first = gateway("first", [PROD, staging], created="2026-01-01T00:00:00Z")
    taker = gateway("taker", [{**PROD, "name": "Other"}], app="OTHER", created="2026-02-01T00:00:00Z")
    copy_of_first = gateway("again", [PROD], created="2026-03-01T00:00:00Z")  # the same deployment: no conflict
    got = compile_deployments(resources(taker, first, copy_of_first))
    assert got.by_key == {
        KEY: Deployment("SHOP", "prod", "Android", "Production"),
        "staging-key-Q4nVb8Rt": Deployment("SHOP", "prod", "IOS", "Staging"),
    }
    (problem,) = got.errors.values()  # the newer gateway's claim is ignored, and says why
    assert "shop/taker" in problem and "OTHER/prod Android Other is ignored" in problem and "shop/first" in problem

    # One gateway listing a key twice is refused, saying where.
    twice = gateway("twice", [PROD, {**PROD, "name": "Staging"}])
    with pytest.raises(InvalidResource) as e:
        KINDS["MpaasGateway"].parse_spec(twice)
    assert "spec.apps[0].codePush.deployments[1].key: the key of SHOP/prod Android Production already" in str(e.value)
    for bad in ({**PROD, "key": "short"}, {**PROD, "platform": "Symbian"}, {**PROD, "key": "has space in it"}):
        with pytest.raises(InvalidResource):
            KINDS["MpaasGateway"].parse_spec(gateway("bad", [bad]))
    assert compile_config(resources(first)).codepush.by_key[KEY].name == "Production"


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class Live:
    def __init__(self, config: DeliveryConfig):
        self.current = config


async def ask(docs: list[dict[str, Any]], query: str, key: str = KEY) -> dict[str, Any]:
    async def link(package: Package, base: str) -> str:
        return f"{base}/{package.uri.rsplit('/', 1)[-1]}"

    live: Any = Live(compile_config(resources(gateway("g", [PROD]), *docs)))
    codepush = CodePush(live, Seats(MemoryMemberSets()), link, lambda r: True, 16384, lambda req: "")
    return await codepush.answer(parse_check(f"deploymentKey={key}&appVersion=1.2.0&{query}"), "http://d", 0)


@pytest.mark.unit
async def test_which_bundle_a_client_gets() -> None:
    v1, v2 = bundle("v1", "1"), bundle("v2", "2", upgradeMode="Force")
    got = await ask([v1, v2], "clientUniqueId=d1")
    assert got["isAvailable"] and got["label"] == "v2" and got["packageHash"] == sha("v2") and got["isMandatory"]
    assert got["downloadURL"] == "http://d/v2.zip" and got["appVersion"] == got["target_binary_range"] == "1.2.0"
    assert not (await ask([v1, v2], f"clientUniqueId=d1&packageHash={sha('v2')}"))["isAvailable"]  # up to date
    assert (await ask([v1, v2], f"clientUniqueId=d1&packageHash={sha('v1')}"))["label"] == "v2"
    assert (await ask([v1, v2], "clientUniqueId=d1&label=v2"))["isAvailable"] is False  # no hash: the label tells

    # Targeting: percent by clientUniqueId, whitelists, the deployment by filters.channels.
    v3 = bundle("v3", "3", targeting={"percent": 0, "whitelist": {"deviceIds": ["tester"]}})
    assert (await ask([v1, v3], "clientUniqueId=tester"))["label"] == "v3"
    assert (await ask([v1, v3], "clientUniqueId=d1"))["label"] == "v1"
    # A device on a newer live bundle than its targeting gives now is not taken back.
    assert not (await ask([v1, v3], f"clientUniqueId=d1&packageHash={sha('v3')}"))["isAvailable"]
    staging_only = bundle("v4", "4", targeting={"filters": {"channels": ["staging"]}})
    assert (await ask([v1, staging_only], "clientUniqueId=d1"))["label"] == "v1"
    # A device on another deployment's bundle moves to this deployment's, older or not.
    assert (await ask([v1, staging_only], f"clientUniqueId=d1&packageHash={sha('v4')}"))["label"] == "v1"

    # The binary version in the task's filters.appVersion range; above the client's: a store update.
    later = bundle("v5", "5", targeting={"filters": {"appVersion": {"min": "2.0"}}})
    assert (await ask([v1, later], "clientUniqueId=d1"))["label"] == "v1"
    store = await ask([later], "clientUniqueId=d1")
    assert store["updateAppVersion"] is True and store["appVersion"] == store["target_binary_range"] == ">=2.0"

    # Rollback: to the previous bundle; with none, to the binary's own.
    gone = copy.deepcopy(v2)
    gone["spec"]["rollback"] = True
    back = await ask([v1, gone], f"clientUniqueId=d1&packageHash={sha('v2')}")
    assert back["label"] == "v1" and back["isAvailable"]
    binary = await ask([gone], f"clientUniqueId=d1&packageHash={sha('v2')}")
    assert binary["shouldRunBinaryVersion"] is True and binary["isDisabled"] is True and not binary["isAvailable"]
    assert "isDisabled" not in await ask([gone], "clientUniqueId=d1")  # a client not on it is told nothing

    with pytest.raises(Invalid) as e:
        await ask([v1], "clientUniqueId=d1&deploymentKey=x")
    assert e.value.status == 400  # given twice
    with pytest.raises(Invalid) as e:
        await ask([v1], "clientUniqueId=d1", key="unknown-key")
    assert e.value.status == 404


@pytest.mark.unit
async def test_the_routes_answer_their_status_codes_over_asgi() -> None:
    import httpx

    from mpaas.delivery import COMPONENT

    served = COMPONENT.build(COMPONENT.settings(config_source="kube"))
    v1 = bundle("v1", "1")
    v1["status"] = {"conditions": [{"type": "PackageVerified", "status": "True"}]}
    served.live.current = compile_config(resources(gateway("g", [PROD]), v1))
    transport = httpx.ASGITransport(app=served.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://delivery.example") as client:
        query = {"deploymentKey": KEY, "appVersion": "1.0.0", "clientUniqueId": "d1"}
        r = await client.get("/updateCheck", params=query)
        assert r.status_code == 200 and r.json()["updateInfo"]["downloadURL"] == "https://cdn.example/v1.zip"
        r = await client.get("/v0.1/public/codepush/update_check", params=query)
        assert r.json()["update_info"]["download_url"] == "https://cdn.example/v1.zip"
        assert (await client.get("/updateCheck", params=query | {"deploymentKey": "unknown-key"})).status_code == 404
        bad = await client.get("/updateCheck", params=query | {"appVersion": "x"})
        assert bad.status_code == 400 and "semver" in bad.text
        assert (await client.post("/updateCheck")).headers["allow"] == "GET"
        for path in ("/reportStatus/deploy", "/v0.1/public/codepush/report_status/download"):
            body = {"deploymentKey": KEY, "appVersion": "1.0.0", "label": "v1", "status": "DeploymentSucceeded"}
            ok = await client.post(path, json=body)
            assert ok.status_code == 200 and ok.text == "OK"
            assert (await client.post(path, json=body | {"deploymentKey": "unknown-key"})).status_code == 404
            assert (await client.post(path, content=b"[1]")).status_code == 400
            assert (await client.post(path, content=b" " * 20000)).status_code == 413
            assert (await client.get(path)).status_code == 405
