"""The generation each gateway pod has applied, from the pods to the MpaasGateway's status, and the operator's
metrics. kwok's pods are fake: for each one a gateway config is compiled live here, against the real API server,
and reported on that Pod object, as the gateway process in it would."""

import copy
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import Process, apply_yaml, condition, eventually, example, free_port, kubectl
from conftest import kget as get
from mpaas.config import LiveConfig
from mpaas.gateway.stages.route import EMPTY, KIND, SECRET, RouteTable, compiler, secrets_named
from mpaas.kube import KubeClient

pytestmark = pytest.mark.cluster
NAME = "demo-gateway"


def gateway_process(client: KubeClient, namespace: str, pod: str) -> LiveConfig[RouteTable]:
    """What the gateway in `pod` runs: its config compiled live from the API server, reported on its Pod."""
    live: LiveConfig[RouteTable] = LiveConfig(
        "gateway", [KIND, SECRET], compiler(namespace, NAME), EMPTY, named={SECRET: secrets_named}
    )
    live.report_applied(KIND, NAME, pod=(namespace, pod))  # before start: the reporter starts with the watches
    live.start_kube(client, namespace=namespace, selectors={KIND: {"fieldSelector": f"metadata.name={NAME}"}})
    return live


def status(namespace: str) -> dict[str, Any]:
    return (get(namespace, "mpaasgateway", NAME) or {}).get("status") or {}


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if m and m[1] == name and ",".join(sorted(m[2].split(","))) == want:
            return float(m[3])
    return 0.0


async def test_status_says_which_generation_the_pods_have_applied(
    peering: str, namespace: str, kubeconfig: str, spawn: Callable[..., Process]
) -> None:
    metrics_port = free_port()
    operator = spawn(
        "operator",
        env={
            "MPAAS_OPERATOR_PEERING": peering,
            "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
            "MPAAS_OPERATOR_METRICS_PORT": str(metrics_port),
            "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
        },
        name="operator",
    )
    gw = example("MpaasGateway")
    assert gw["spec"]["replicas"] == 2
    assert apply_yaml(namespace, gw).returncode == 0
    await eventually(
        lambda: condition(get(namespace, "mpaasgateway", NAME)).get("status") == "True",
        timeout=60,
        what="Ready=True\n" + operator.output()[-3000:],
    )
    # kwok's pods run nothing: no pod has reported, so nothing is claimed.
    st = status(namespace)
    assert "appliedGeneration" not in st and st["podsOnCurrentGeneration"] == 0
    pods = [p["metadata"]["name"] for p in get(namespace, "pods", "-l", st["selector"])["items"]]  # type: ignore[index]
    assert len(pods) == 2

    client = KubeClient(kubeconfig)
    lives = {pod: gateway_process(client, namespace, pod) for pod in pods}
    try:
        st = await eventually(
            lambda: status(namespace).get("appliedGeneration") == 1 and status(namespace),
            timeout=30,
            what="appliedGeneration 1\n" + operator.output()[-3000:],
        )
        assert st["podsOnCurrentGeneration"] == 2
        assert condition({"status": st}, "Reconciling")["status"] == "False"
        row = kubectl("get", "-n", namespace, "mpaasgateway", NAME).stdout.splitlines()
        assert row[0].split()[:4] == ["NAME", "DESIRED", "READY", "APPLIED"] and row[1].split()[1:4] == ["2", "2", "2"]

        # One pod stops following (its gateway is stuck); the spec changes: the other applies it, the status says
        # that one pod lags, without flipping Ready (both serve); GitOps tools wait on Reconciling.
        stuck = lives.pop(pods[1])
        await stuck.stop()
        gw["spec"]["apis"].append({"operationType": "com.demo.added", "upstream": "demo-backend", "path": "/added"})
        assert apply_yaml(namespace, gw).returncode == 0
        obj = await eventually(
            lambda: (
                (o := get(namespace, "mpaasgateway", NAME))
                and o["status"].get("podsOnCurrentGeneration") == 1
                and o["status"].get("observedGeneration") == 2
                and o
            ),
            timeout=30,
            what="one pod on generation 2\n" + operator.output()[-3000:],
        )
        assert obj["status"]["appliedGeneration"] == 1
        reconciling, ready = condition(obj, "Reconciling"), condition(obj)
        assert reconciling["status"] == "True" and reconciling["reason"] == "ConfigPending"
        assert ready["status"] == "True" and ready["reason"] == "Available"
        assert "1/2 ready pod still runs an older spec (generation 1, current 2)" in ready["message"]

        # It comes back (a restarted gateway compiles the current spec): every pod on generation 2.
        lives[pods[1]] = gateway_process(client, namespace, pods[1])
        st = await eventually(
            lambda: status(namespace).get("appliedGeneration") == 2 and status(namespace),
            timeout=30,
            what="appliedGeneration 2\n" + operator.output()[-3000:],
        )
        assert st["podsOnCurrentGeneration"] == 2
        assert condition({"status": st}, "Reconciling")["status"] == "False"
        assert "older spec" not in condition({"status": st})["message"]

        # A spec both refuse (a gray rule that does not parse, which the schema cannot tell): the pods keep
        # generation 2, and the status says so.
        bad = copy.deepcopy(gw)
        bad["spec"]["upstreams"].append({"name": "canary", "endpoints": [{"url": "http://127.0.0.1:1"}]})
        bad["spec"]["apis"][0]["canary"] = {"upstream": "canary", "rule": "DEVICE_ID MOD 100 IN (0..9"}
        assert apply_yaml(namespace, bad).returncode == 0
        obj = await eventually(
            lambda: (
                (o := get(namespace, "mpaasgateway", NAME))
                and condition(o).get("reason") == "InvalidSpec"
                and o["status"].get("podsOnCurrentGeneration") == 0
                and o
            ),
            timeout=30,
            what="InvalidSpec, no pod on generation 3\n" + operator.output()[-3000:],
        )
        assert obj["metadata"]["generation"] == 3 and obj["status"]["appliedGeneration"] == 2
    finally:
        for live in lives.values():
            await live.stop()
        await client.close()

    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert metric(text, "mpaas_operator_reconciles_total", kind="MpaasGateway", outcome="ok") >= 2  # create, edit
    assert metric(text, "mpaas_operator_reconcile_duration_seconds_count", kind="MpaasGateway") >= 2
    assert metric(text, "mpaas_operator_events_total", type="Normal", reason="Created") >= 5  # its children
    assert metric(text, "mpaas_operator_events_total", type="Normal", reason="Available") >= 1
