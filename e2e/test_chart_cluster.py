"""The operator chart installed with Helm into the test cluster."""

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, eventually, kubectl, kubectl_path, need_env

pytestmark = pytest.mark.cluster
CHART = ROOT / "charts" / "mpaas-operator"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    from testenv_paths import helm as helm_path

    need_env("KUBECONFIG")
    return subprocess.run([helm_path(), *args], capture_output=True, text=True, timeout=180)


def install(release: str, namespace: str, *values: str) -> subprocess.CompletedProcess[str]:
    """helm install of the chart (pods are kwok's); the session already installed the CRDs."""
    sets = [arg for v in ("image.tag=e2e", "crds.enabled=false", *values) for arg in ("--set", v)]
    return helm(
        "install", release, str(CHART), "-n", namespace, "--create-namespace", "--wait", "--timeout", "120s", *sets
    )


def test_chart_lints_and_renders() -> None:
    r = helm("lint", str(CHART), "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    r = helm("template", "t", str(CHART), "--kube-version", "1.34.1", "--set", "replicaCount=9")
    assert r.returncode != 0 and "replicaCount" in r.stderr  # values.schema.json guards values
    r = helm("template", "t", str(CHART), "--kube-version", "1.34.1", "--set", "redis.url=http://r")
    assert r.returncode != 0 and "redis" in r.stderr
    r = helm("template", "t", str(CHART), "--kube-version", "1.34.1", "--set", "redis.url=redis://r:6379/0")
    operator = next(d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MPAAS_OPERATOR_REDIS_URL"] == "redis://r:6379/0"  # the gateways' default shared state
    r = helm("template", "t", str(CHART), "--kube-version", "1.34.1")
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {
        "mpaasgateways.mpaas.io",
        "deliverytasks.mpaas.io",
        "pushchannels.mpaas.io",
        "synctopics.mpaas.io",
    }
    # The peering CRDs sit in the chart's crds/ folder: Helm installs them before the peering object.
    peering = [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    assert [p["metadata"]["name"] for p in peering] == ["t-mpaas-operator"]
    r = helm("template", "t", str(CHART), "--kube-version", "1.34.1", "--include-crds")
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= {
        d["metadata"]["name"] for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "CustomResourceDefinition"
    }
    # Watching chosen namespaces: rights and peering objects there, nothing namespaced cluster-wide.
    r = helm("template", "t", str(CHART), "--kube-version", "1.34.1", "--set", "watchNamespaces={team-a,team-b}")
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "KopfPeering") == ["team-a", "team-b"]
    assert sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "Role") == ["team-a", "team-b"]
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert all("secrets" not in rule["resources"] for rule in cluster_role["rules"])
    env = {
        e["name"]: e.get("value")
        for e in next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MPAAS_OPERATOR_NAMESPACES"] == "team-a,team-b"
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds.values())
    # The rendered CRDs are what the API server would accept as an update of the installed ones.
    r = subprocess.run(
        [kubectl_path(), "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-"],
        input=yaml.safe_dump_all(crds.values()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_helm_install_runs_the_operator_with_least_privilege(crds: None) -> None:
    ns = f"mpaas-{uuid.uuid4().hex[:6]}"
    release = f"r{uuid.uuid4().hex[:6]}"
    r = install(release, ns)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        dep = json.loads(kubectl("get", "-n", ns, "deployment", f"{release}-mpaas-operator", "-o", "json").stdout)
        assert dep["status"]["readyReplicas"] == 2
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "ghcr.io/mpaas-io/mpaas:e2e" and container["args"] == ["operator"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        sa = f"system:serviceaccount:{ns}:{release}-mpaas-operator"

        def can(verb: str, resource: str, namespace: str = "default") -> bool:
            out = kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", sa, check=False).stdout.strip()
            return out == "yes"

        assert can("patch", "mpaasgateways.mpaas.io") and can("patch", "mpaasgateways.mpaas.io/status")
        assert can("create", "deployments.apps") and can("delete", "horizontalpodautoscalers.autoscaling")
        assert can("watch", "secrets") and can("patch", "clusterkopfpeerings.kopf.dev")
        assert not can("create", "clusterkopfpeerings.kopf.dev")  # the release owns the peering object
        assert kubectl("get", "clusterkopfpeering", f"{release}-mpaas-operator", check=False).returncode == 0
        assert not can("create", "secrets") and not can("delete", "mpaasgateways.mpaas.io")
        assert not can("create", "pods") and not can("create", "clusterroles.rbac.authorization.k8s.io")
        # Pods: watched, never written; pods/status held only to grant it to the workloads.
        assert can("watch", "pods") and not can("patch", "pods")
        status = ["auth", "can-i", "patch", "pods", "--subresource=status", "-n", "default", "--as", sa]
        assert kubectl(*status, check=False).stdout.strip() == "yes"
        pod = dep["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8082"
        assert {"name": "metrics", "containerPort": 8082, "protocol": "TCP"} in container["ports"]
        crd = json.loads(kubectl("get", "crd", "mpaasgateways.mpaas.io", "-o", "json").stdout)
        assert crd["spec"]["versions"][0]["subresources"]["scale"]
    finally:
        helm("uninstall", release, "--namespace", ns, "--wait")
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
    # Nothing of the release stays behind.
    assert kubectl("get", "clusterkopfpeering", f"{release}-mpaas-operator", check=False).returncode != 0
    assert kubectl("get", "clusterrole", f"{release}-mpaas-operator", check=False).returncode != 0


def test_watching_chosen_namespaces_grants_nothing_elsewhere(crds: None) -> None:
    ns, team = f"mpaas-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
    release = f"r{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", team)
    r = install(release, ns, f"watchNamespaces={{{team}}}")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        sa = f"system:serviceaccount:{ns}:{release}-mpaas-operator"

        def can(verb: str, resource: str, namespace: str) -> bool:
            out = kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", sa, check=False).stdout.strip()
            return out == "yes"

        assert can("list", "secrets", team) and can("patch", "mpaasgateways.mpaas.io", team)
        assert can("create", "deployments.apps", team)
        for elsewhere in ("kube-system", "default", ns):
            assert not can("list", "secrets", elsewhere) and not can("get", "secrets", elsewhere)
            assert not can("create", "deployments.apps", elsewhere)
        assert kubectl("get", "kopfpeering", "-n", team, f"{release}-mpaas-operator", check=False).returncode == 0
    finally:
        helm("uninstall", release, "--namespace", ns, "--wait")
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert kubectl("get", "kopfpeering", "-n", team, f"{release}-mpaas-operator", check=False).returncode != 0
    kubectl("delete", "namespace", team, "--wait=false", check=False)


async def test_workloads_write_only_the_mpaas_conditions_of_their_own_pod(
    namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    """The chart's admission policy: a gateway's service account, which may patch pods/status in its namespace,
    writes its applied generation on the Pod its token was issued for, and nothing else."""
    from mpaas.api.gateway import GatewaySpec
    from mpaas.applied import AppliedReporter
    from mpaas.kube import PODS, ApiError, KubeClient
    from mpaas_operator.builders import gateway as gateway_builder

    release = f"r{uuid.uuid4().hex[:6]}"
    r = helm(
        "template", release, str(CHART), "--kube-version", "1.34.1", "--show-only", "templates/pod-status-policy.yaml"
    )
    assert r.returncode == 0, r.stderr
    policy = r.stdout
    clients: list[KubeClient] = []
    try:
        spec = GatewaySpec.model_validate({"upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}]})
        for child in gateway_builder.build("x", namespace, spec, image="i", pull_policy="Never").apply:
            if child["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
                kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(child))
        for pod in ("p1", "p2"):
            manifest = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {
                    "serviceAccountName": "mgw-x",
                    "automountServiceAccountToken": False,
                    "nodeName": "no-such-node",  # never runs: only its status matters here
                    "containers": [{"name": "gateway", "image": "registry.example/mpaas:e2e"}],
                },
            }
            kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

        def as_token(*bound: str) -> KubeClient:
            token = kubectl("create", "token", "-n", namespace, "mgw-x", *bound).stdout.strip()
            cfg = yaml.safe_load(Path(kubeconfig).read_text())
            cfg["users"][0]["user"] = {"token": token}
            path = tmp_path / f"token-{len(clients)}.kubeconfig"
            path.write_text(yaml.safe_dump(cfg))
            clients.append(KubeClient(str(path)))
            return clients[-1]

        p1 = as_token("--bound-object-kind", "Pod", "--bound-object-name", "p1")  # what runs in p1 holds

        def reporter(client: KubeClient, pod: str) -> AppliedReporter:
            return AppliedReporter(client, pod=(namespace, pod), kind="MpaasGateway", namespace=namespace, name="x")

        async def denied(write: Any, why: str = "only the mpaas.io/ conditions of its Pod") -> bool:
            try:
                await write
            except ApiError as e:
                assert e.status == 403 and why in str(e), e
                return True
            return False

        async def allowed(write: Any) -> bool:
            try:
                await write
                return True
            except ApiError as e:  # an earlier test's release: its policy leaves the admission cache in a moment
                if e.status == 403 and "ValidatingAdmissionPolicy" in str(e):
                    return False
                raise

        # Without the policy, the Role alone lets it write any pod's status.
        await eventually(
            lambda: allowed(reporter(p1, "p2").report(1)), timeout=30, what="no pod-status policy of another release"
        )
        kubectl("apply", "-f", "-", input=policy)
        # The policy takes effect within a moment of its creation: another pod's status is refused.
        await eventually(
            lambda: denied(reporter(p1, "p2").report(2), "its own Pod only"), timeout=30, what="the policy in effect"
        )
        await reporter(p1, "p1").report(1)  # its own pod: allowed
        pod = json.loads(kubectl("get", "pod", "-n", namespace, "p1", "-o", "json").stdout)
        assert [c["message"] for c in pod["status"]["conditions"] if c["type"].startswith("mpaas.io/")] == [
            f"MpaasGateway {namespace}/x generation 1"
        ]
        # Anything else of its own pod's status is refused: another condition, its IP.
        other = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        assert await denied(p1.strategic_patch(PODS, namespace, "p1", other, subresource="status"))
        ip = {"status": {"podIP": "10.9.9.9"}}
        assert await denied(p1.strategic_patch(PODS, namespace, "p1", ip, subresource="status"))
        # A token not issued for a pod names no pod of its own.
        assert await denied(reporter(as_token(), "p1").report(2), "its own Pod only")
    finally:
        for client in clients:
            await client.close()
        kubectl("delete", "-f", "-", input=policy, check=False)
