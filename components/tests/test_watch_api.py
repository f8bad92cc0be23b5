"""The API-server source against a real kube-apiserver: list+watch, resume, 410 re-list, outages."""

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import apply_yaml, eventually, kubectl
from mpaas.api import MPAAS_GATEWAY
from mpaas.config import LiveConfig
from mpaas.config.sources import KubeWatchSource
from mpaas.gateway.stages.route import EMPTY, KIND, RouteTable, compiler
from mpaas.kube import KubeClient
from tcpproxy import TcpProxy

pytestmark = pytest.mark.api
GATEWAY = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples/demo/gateway.yaml").read_text())


def gateway(namespace: str, *extra_ops: str) -> dict[str, Any]:
    gw = copy.deepcopy(GATEWAY)
    gw["metadata"]["namespace"] = namespace
    for op in extra_ops:
        gw["spec"]["apis"].append({"operationType": op, "upstream": "demo-backend"})
    return gw


async def test_list_then_watch_then_delete(namespace: str, kube: KubeClient) -> None:
    seen: list[int] = []
    src = KubeWatchSource(kube, MPAAS_GATEWAY.resource, KIND, namespace=namespace)
    task = asyncio.create_task(src.run(lambda kind, snap: seen.append(len(snap))))
    try:
        await asyncio.wait_for(src.synced.wait(), 10)
        assert seen == [0]
        apply_yaml(namespace, gateway(namespace))
        await eventually(lambda: seen[-1] == 1, timeout=5)
        kubectl("delete", "-n", namespace, "mpaasgateway", "demo-gateway")
        await eventually(lambda: seen[-1] == 0, timeout=5)
    finally:
        task.cancel()


async def test_gone_resource_version_triggers_a_relist(namespace: str, kube: KubeClient) -> None:
    apply_yaml(namespace, gateway(namespace))
    src = KubeWatchSource(kube, MPAAS_GATEWAY.resource, KIND, namespace=namespace, watch_timeout_seconds=1)
    snaps: list[dict] = []
    task = asyncio.create_task(src.run(lambda kind, snap: snaps.append(snap)))
    try:
        await asyncio.wait_for(src.synced.wait(), 10)
        assert src.relists == 1
        src.resource_version = "1"  # long compacted away: the server answers 410 Gone
        await eventually(lambda: src.relists >= 2, timeout=15, what="a re-list after 410")
        assert len(snaps[-1]) == 1
    finally:
        task.cancel()


async def test_last_good_config_survives_an_api_outage_and_catches_up(
    namespace: str, kubeconfig: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut the connection to the API server: the config stays; edits made meanwhile arrive after."""
    from mpaas.config import sources

    monkeypatch.setattr(sources.random, "uniform", lambda low, high: high)  # backoff without jitter: 0.2, 0.4, ...
    real = KubeClient(kubeconfig)
    host, port = real.host.removeprefix("https://").rsplit(":", 1)
    await real.close()
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    proxied = tmp_path / "kubeconfig"
    proxied.write_text(yaml.safe_dump(cfg))

    apply_yaml(namespace, gateway(namespace))
    client = KubeClient(str(proxied))
    live: LiveConfig[RouteTable] = LiveConfig("test", [KIND], compiler(namespace, "demo-gateway"), EMPTY)
    live.start_kube(client, namespace=namespace)
    try:
        await asyncio.wait_for(live.ready.wait(), 10)
        assert "com.demo.echo" in live.current.apis
        await proxy.cut()
        apply_yaml(namespace, gateway(namespace, "com.added.during.outage"))
        await asyncio.sleep(1.5)
        assert "com.demo.echo" in live.current.apis  # still serving the last good config
        assert "com.added.during.outage" not in live.current.apis
        await asyncio.sleep(5.5)  # the watch backs off 3.2 s, then 6.4 s from about 6.2 s into the outage
        await proxy.restore()
        back = time.monotonic()
        await eventually(
            lambda: "com.added.during.outage" in live.current.apis, timeout=20, what="the edit made during the outage"
        )
        # The watch resumes on the server's return, not at the end of its backoff.
        resumed = time.monotonic() - back
        print(f"edit made during the outage applied {resumed:.2f} s after the API server's return")
        assert resumed < 1.0, resumed
    finally:
        await live.stop()
        await client.close()
        await proxy.cut()


async def test_secrets_are_watched_by_name_with_only_the_access_the_operator_grants(
    namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    """The gateway runs as the ServiceAccount the operator builds: it may read its own MpaasGateway and the
    Secrets its apps name, nothing else; it watches each of those by name and follows edits of the names."""
    import base64

    from mpaas.api.gateway import GatewaySpec
    from mpaas.gateway.stages.route import SECRET, secrets_named
    from mpaas.kube import SECRETS, ApiError
    from mpaas_operator.builders import gateway as gateway_builder

    def secret(name: str, key: bytes) -> dict[str, Any]:
        data = {"hmacKey": base64.b64encode(key).decode()}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}

    def with_keys(secret_name: str) -> dict[str, Any]:
        gw = gateway(namespace)
        gw["spec"]["apps"] = [
            {
                "appId": "APP",
                "workspaceId": "prod",
                "credentialsSecretRef": {"name": secret_name},
                "signature": {"algorithm": "HmacSha256"},
            }
        ]
        return gw

    def grant(gw: dict[str, Any]) -> None:  # what the operator applies for this spec
        children = gateway_builder.build(
            "demo-gateway", namespace, GatewaySpec.model_validate(gw["spec"]), image="i", pull_policy="Never"
        )
        for child in children.apply:
            if child["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
                assert apply_yaml(namespace, child).returncode == 0

    for name in ("a-keys", "b-keys", "unrelated"):
        apply_yaml(namespace, secret(name, name.encode() * 4))
    gw = with_keys("a-keys")
    apply_yaml(namespace, gw)
    grant(gw)
    token = kubectl("create", "token", "-n", namespace, "mgw-demo-gateway").stdout.strip()
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cfg["users"][0]["user"] = {"token": token}
    as_gateway = tmp_path / "gateway.kubeconfig"
    as_gateway.write_text(yaml.safe_dump(cfg))

    client = KubeClient(str(as_gateway))
    live: LiveConfig[RouteTable] = LiveConfig(
        "test", [KIND, SECRET], compiler(namespace, "demo-gateway"), EMPTY, named={SECRET: secrets_named}
    )
    live.start_kube(client, namespace=namespace, selectors={KIND: {"fieldSelector": "metadata.name=demo-gateway"}})
    try:
        await asyncio.wait_for(live.ready.wait(), 10)
        assert set(live.resources[SECRET]) == {(namespace, "a-keys")}
        assert live.current.apps[("APP", "prod")].signature.key_problem is None
        with pytest.raises(ApiError) as denied:  # every other Secret stays out of reach
            await client.list(SECRETS, namespace)
        assert denied.value.status == 403
        with pytest.raises(ApiError):
            await client.get(SECRETS, namespace, "unrelated")

        gw = with_keys("b-keys")  # the app moves to another Secret: the grant and the watch follow
        grant(gw)
        apply_yaml(namespace, gw)
        await eventually(lambda: set(live.resources[SECRET]) == {(namespace, "b-keys")}, timeout=10)
        assert live.current.apps[("APP", "prod")].signature.key_problem is None
        assert len(live._named_watches[SECRET]) == 1  # the watch of a-keys was stopped
    finally:
        await live.stop()
        await client.close()
