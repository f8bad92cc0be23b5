"""A component tells on its own Pod which generation of its resource it has applied (mpaas.applied)."""

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import apply_yaml, eventually, kubectl
from mpaas.applied import CONDITION_TYPE, AppliedReporter, applied_generation
from mpaas.config import LiveConfig
from mpaas.gateway.stages.route import EMPTY, KIND, RouteTable, compiler
from mpaas.kube import PODS, ApiError, KubeClient

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = yaml.safe_load((ROOT / "examples" / "demo" / "gateway.yaml").read_text())


def gateway(namespace: str, generation: int = 1, rv: str = "1", **spec: Any) -> dict[str, Any]:
    gw = copy.deepcopy(GATEWAY)
    gw["metadata"].update(namespace=namespace, generation=generation, resourceVersion=rv)
    gw["spec"].update(spec)
    return gw


class FakeClient:
    """Records status patches; fails the first `failures` of them."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    async def strategic_patch(
        self, rt: Any, namespace: str, name: str, patch: dict[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        assert rt == PODS and subresource == "status"
        if self.failures:
            self.failures -= 1
            raise ApiError(403, {"message": "forbidden"}, "PATCH", f"/pods/{name}/status")
        self.patches.append((namespace, name, patch))
        return {}

    def messages(self) -> list[str]:
        return [p["status"]["conditions"][0]["message"] for _, _, p in self.patches]


@pytest.mark.unit
async def test_the_compiled_generation_is_reported_and_an_invalid_one_is_not() -> None:
    client = FakeClient()
    live: LiveConfig[RouteTable] = LiveConfig("gateway", [KIND], compiler("shop", "demo-gateway"), EMPTY)
    live._kube = client  # type: ignore[assignment]  # as start_kube sets it; no watch needed here
    live.report_applied(KIND, "demo-gateway", pod=("shop", "mgw-demo-gateway-abc"))
    assert live.reporter is not None and live.reporter.namespace == "shop"  # the Pod's namespace by default
    try:
        live.on_snapshot(KIND, {("shop", "demo-gateway"): gateway("shop", 1, "1")})
        await eventually(lambda: client.messages() == ["MpaasGateway shop/demo-gateway generation 1"], timeout=5)
        ns, name, patch = client.patches[0]
        assert (ns, name) == ("shop", "mgw-demo-gateway-abc")
        cond = patch["status"]["conditions"][0]
        assert cond["type"] == CONDITION_TYPE and cond["status"] == "True" and cond["reason"] == "Applied"

        # Generation 2 breaks a rule the schema cannot express: the gateway keeps generation 1, and says so.
        bad = gateway("shop", 2, "2", apis=[{"operationType": "x", "upstream": "missing"}])
        live.on_snapshot(KIND, {("shop", "demo-gateway"): bad})
        await asyncio.sleep(0.1)
        assert len(client.patches) == 1
        live.on_snapshot(KIND, {("shop", "demo-gateway"): gateway("shop", 3, "3")})
        await eventually(lambda: len(client.patches) == 2, timeout=5)
        assert client.messages()[-1] == "MpaasGateway shop/demo-gateway generation 3"
        # The same generation again (a Secret changed, say): nothing to write.
        live.recompile()
        await asyncio.sleep(0.1)
        assert len(client.patches) == 2
    finally:
        await live.stop()


@pytest.mark.unit
async def test_a_failing_report_is_logged_once_retried_and_never_blocks(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient(failures=3)
    reporter = AppliedReporter(
        client,  # type: ignore[arg-type]
        pod=("shop", "p"),
        kind=KIND,
        namespace="shop",
        name="g",
        first_backoff=0.01,
        max_backoff=0.05,
    )
    task = asyncio.create_task(reporter.run())
    try:
        with caplog.at_level(logging.INFO, logger="mpaas.applied"):
            reporter.applied(4)  # returns at once: the write happens on the reporter's task
            reporter.applied(5)  # a newer one before the first write: only the newest is written
            await eventually(lambda: reporter.reported == 5, timeout=5)
        assert client.messages() == ["MpaasGateway shop/g generation 5"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "retrying" in warnings[0].getMessage()
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()


@pytest.mark.unit
async def test_nothing_is_reported_from_a_folder_or_outside_a_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(GATEWAY))
    live: LiveConfig[RouteTable] = LiveConfig("gateway", [KIND], compiler(None, None), EMPTY)
    live.report_applied(KIND, "demo-gateway", pod=("default", "p"))
    live.start_directory(str(tmp_path), interval=0.05)  # mpaas dev: no cluster
    await asyncio.wait_for(live.ready.wait(), 5)
    assert live.reporter is None
    await live.stop()

    monkeypatch.delenv("POD_NAME", raising=False)
    outside: LiveConfig[RouteTable] = LiveConfig("gateway", [KIND], compiler(None, None), EMPTY)
    outside._kube = FakeClient()  # type: ignore[assignment]
    outside.report_applied(KIND, "demo-gateway")  # no downward-API variables: not a pod
    assert outside.reporter is None


def _condition(pod: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in ((pod or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


@pytest.mark.api
async def test_the_gateway_reports_on_its_own_pod_with_the_rights_the_operator_grants(
    namespace: str, kubeconfig: str, kube: KubeClient, tmp_path: Path
) -> None:
    """A gateway config, compiled live as the gateway's ServiceAccount, is reported on a Pod object through
    pods/status; the kubelet's conditions stay; the same account cannot change the Pod's labels."""
    from mpaas.api.gateway import GatewaySpec
    from mpaas_operator.builders import gateway as gateway_builder

    gw = gateway(namespace)
    for field in ("generation", "resourceVersion"):
        del gw["metadata"][field]
    assert apply_yaml(namespace, gw).returncode == 0
    children = gateway_builder.build(
        "demo-gateway", namespace, GatewaySpec.model_validate(gw["spec"]), image="i", pull_policy="Never"
    )
    for child in children.apply:  # the RBAC the operator applies
        if child["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            assert apply_yaml(namespace, child).returncode == 0
    pod_name = "mgw-demo-gateway-7d9f-x2x4q"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": {"app": "gw"}},
        "spec": {
            "serviceAccountName": "mgw-demo-gateway",
            "automountServiceAccountToken": False,
            "containers": [{"name": "gateway", "image": "registry.example/mpaas:test"}],
        },
    }
    await kube.create(PODS, pod)
    # A condition someone else owns (the kubelet's, on a real node): a report must leave it alone.
    kubelets = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "test"}
    await kube.strategic_patch(PODS, namespace, pod_name, {"status": {"conditions": [kubelets]}}, subresource="status")

    bound = ("--bound-object-kind", "Pod", "--bound-object-name", pod_name)  # as the pod's own token is
    token = kubectl("create", "token", "-n", namespace, "mgw-demo-gateway", *bound).stdout.strip()
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cfg["users"][0]["user"] = {"token": token}
    as_gateway = tmp_path / "gateway.kubeconfig"
    as_gateway.write_text(yaml.safe_dump(cfg))
    client = KubeClient(str(as_gateway))
    live: LiveConfig[RouteTable] = LiveConfig("gateway", [KIND], compiler(namespace, "demo-gateway"), EMPTY)
    live.start_kube(client, namespace=namespace, selectors={KIND: {"fieldSelector": "metadata.name=demo-gateway"}})
    live.report_applied(KIND, "demo-gateway", pod=(namespace, pod_name))  # after start: starts at once
    try:

        async def reported() -> int | None:
            return applied_generation(await kube.get(PODS, namespace, pod_name) or {}, KIND, namespace, "demo-gateway")

        assert await eventually(reported, timeout=15) == 1
        first = _condition(await kube.get(PODS, namespace, pod_name), CONDITION_TYPE)
        assert first is not None and first["message"] == f"MpaasGateway {namespace}/demo-gateway generation 1"

        gw["spec"]["apis"].append({"operationType": "com.demo.added", "upstream": "demo-backend", "path": "/a"})
        assert apply_yaml(namespace, gw).returncode == 0
        assert await eventually(lambda: _gen_is(reported, 2), timeout=15)
        now = await kube.get(PODS, namespace, pod_name)
        assert _condition(now, "PodScheduled") is not None  # merged by type, not replaced
        assert (now or {})["metadata"]["labels"] == {"app": "gw"}
        assert live.reporter is not None and live.reporter.failures == 0

        # A second worker process of the same pod writes its own condition; neither replaces the other.
        second = AppliedReporter(
            client, pod=(namespace, pod_name), kind=KIND, namespace=namespace, name="demo-gateway", worker=1
        )
        await second.report(2)
        now = await kube.get(PODS, namespace, pod_name)
        assert (_condition(now, CONDITION_TYPE) or {}).get("message", "").endswith("generation 2")
        assert (_condition(now, f"{CONDITION_TYPE}.1") or {}).get("message", "").endswith("generation 2")

        with pytest.raises(ApiError) as denied:  # pods/status only: the Pod itself (labels, spec) is out of reach
            await client.merge_patch(PODS, namespace, pod_name, {"metadata": {"labels": {"app": "other"}}})
        assert denied.value.status == 403
    finally:
        await live.stop()
        await client.close()


async def _gen_is(reported: Any, generation: int) -> bool:
    return bool(await reported() == generation)
