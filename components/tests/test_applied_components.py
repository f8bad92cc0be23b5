"""A component process in a pod tells on its Pod which generation of its resource it serves."""

from collections.abc import Callable
from typing import Any

import pytest

from conftest import apply_yaml, eventually, kget
from mpaas.applied import CONDITION_TYPE

pytestmark = pytest.mark.component


def resource(namespace: str, upstream: str) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "MpaasGateway",
        "metadata": {"name": "gw", "namespace": namespace},
        "spec": {
            "apps": [{"appId": "DEMO_APP", "workspaceId": "default"}],
            "upstreams": [{"name": "alpha", "endpoints": [{"url": upstream}]}],
            "apis": [{"operationType": "com.test.echo", "upstream": "alpha", "path": "/echo"}],
        },
    }


def pod(namespace: str) -> dict[str, Any]:
    # Never scheduled (no node here): the gateway process below plays its container.
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mgw-gw-0", "namespace": namespace},
        "spec": {"containers": [{"name": "gateway", "image": "mpaas:test"}]},
    }


async def test_the_gateway_reports_each_generation_it_applies_on_its_pod(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    assert apply_yaml(namespace, pod(namespace)).returncode == 0
    gw = resource(namespace, upstreams["alpha"])
    start_gateway(namespace, gw, env={"POD_NAME": "mgw-gw-0", "POD_NAMESPACE": namespace})

    def applied() -> str | None:
        conditions = ((kget(namespace, "pod", "mgw-gw-0") or {}).get("status") or {}).get("conditions") or []
        found = [c for c in conditions if c["type"] == CONDITION_TYPE and c["status"] == "True"]
        return found[0]["message"] if found else None

    assert await eventually(applied, timeout=20) == f"MpaasGateway {namespace}/gw generation 1"
    gw["spec"]["apis"][0]["path"] = "/echo2"  # a spec change: generation 2
    assert apply_yaml(namespace, gw).returncode == 0
    await eventually(lambda: applied() == f"MpaasGateway {namespace}/gw generation 2", timeout=20)


async def test_a_link_pod_reports_the_generation_of_its_push_channel(namespace: str, spawn: Callable[..., Any]) -> None:
    from conftest import example, free_port, wait_ready

    pod_ = pod(namespace) | {"metadata": {"name": "link-demo-0", "namespace": namespace}}
    channel = example("PushChannel")
    assert apply_yaml(namespace, pod_, channel).returncode == 0
    port = free_port()
    proc = spawn(
        "link",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_NAMESPACE": namespace,
            "MPAAS_CONFIG_SOURCE": "kube",
            "MPAAS_PUSH_CHANNEL": "demo-link",
            "POD_NAME": "link-demo-0",
            "POD_NAMESPACE": namespace,
        },
        name="link",
    )
    wait_ready(f"http://127.0.0.1:{port}", proc)

    def applied() -> str | None:
        conditions = ((kget(namespace, "pod", "link-demo-0") or {}).get("status") or {}).get("conditions") or []
        found = [c for c in conditions if c["type"] == CONDITION_TYPE and c["status"] == "True"]
        return found[0]["message"] if found else None

    assert await eventually(applied, timeout=20) == f"PushChannel {namespace}/demo-link generation 1"
