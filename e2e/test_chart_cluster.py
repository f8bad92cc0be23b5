"""The operator chart installed with Helm into the test cluster."""

import json
import subprocess
import uuid

import pytest
import yaml

from conftest import ROOT, kubectl, kubectl_path, need_env

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
