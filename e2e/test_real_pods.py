"""Real pods of the project's image on the real node of the test cluster (hack/testenv/up.sh node).

Everything here runs as Kubernetes runs it: the image the Dockerfile builds, the chart's operator,
the operator's gateway Deployments, probes, securityContext, preStop and drain, Services through
kube-proxy. The kwok tier stays for what needs many nodes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    ROOT,
    apply_yaml,
    condition,
    create_node_namespace,
    delete_node_namespace,
    eventually,
    free_port,
    kget,
    kubectl,
    need_env,
)

pytestmark = pytest.mark.pods
CHART = ROOT / "charts" / "mpaas-operator"
APP = {"AppId": "DEMO_APP", "WorkspaceId": "default"}
SMALL = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    from testenv_paths import helm as helm_path

    need_env("KUBECONFIG")
    return subprocess.run([helm_path(), *args], capture_output=True, text=True, timeout=240)


def image() -> tuple[str, str]:
    repository, tag = need_env("MPAAS_TEST_IMAGE").rsplit(":", 1)
    return repository, tag


def pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    return list((kget(namespace, "pods", "-l", selector) or {}).get("items") or [])


def running_ready(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running" and condition(pod).get("status") == "True"


def exec_py(namespace: str, pod: str, code: str) -> str:
    r = kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", code, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


# uid and gid 10001, read-only root (EROFS), seccomp filter mode (RuntimeDefault), no capabilities,
# no_new_privs: what the chart's and the operator's securityContext ask for, as the kernel applies it.
ENFORCED = {"uid": 10001, "gid": 10001, "ro": True, "seccomp": "2", "capeff": "0" * 16, "nnp": "1"}


def security_facts(namespace: str, pod: str) -> dict[str, Any]:
    return dict(
        json.loads(
            exec_py(
                namespace,
                pod,
                "import json, os\n"
                "status = dict(l.split(':\\t', 1) for l in open('/proc/1/status').read().splitlines())\n"
                "try:\n"
                "    open('/opt/x', 'w'); ro = False\n"
                "except OSError as e:\n"
                "    ro = e.errno == 30\n"
                "open('/tmp/x', 'w').write('emptyDir')\n"
                "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'ro': ro, 'seccomp': status['Seccomp'],"
                " 'capeff': status['CapEff'], 'nnp': status['NoNewPrivs']}))",
            )
        )
    )


def describe_failure(namespace: str) -> str:
    out = kubectl("get", "pods,events", "-n", namespace, "-o", "wide", check=False)
    return out.stdout[-4000:]


@pytest.fixture(scope="module")
def operator_release(real_node: str) -> Iterator[tuple[str, str]]:
    """The operator chart installed with Helm: two real operator pods watching every namespace
    (its namespace, the release). One per module: each gateway test has a namespace of its own."""
    node_namespace = create_node_namespace(real_node)
    release = f"r{uuid.uuid4().hex[:6]}"
    repository, tag = image()
    r = helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        node_namespace,
        "--wait",
        "--timeout",
        "120s",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",  # imported into the node's runtime: no registry to pull from
        "--set",
        "crds.enabled=false",  # the session installed them
        "--set",
        "resources.requests.cpu=10m",
        "--set",
        "resources.requests.memory=64Mi",
        "--set",
        "operator.logFormat=text",
    )
    assert r.returncode == 0, r.stdout + r.stderr + describe_failure(node_namespace)
    yield node_namespace, release
    # The operator pods go first, while their RBAC still lets them leave the peering (after `helm uninstall`
    # alone they spend about 13 s failing to).
    kubectl("scale", "-n", node_namespace, "deployment", f"{release}-mpaas-operator", "--replicas=0", check=False)
    kubectl(
        "wait", "-n", node_namespace, "--for=delete", "pod", "-l", f"app.kubernetes.io/instance={release}", check=False
    )
    helm("uninstall", release, "--namespace", node_namespace, "--wait", "--timeout", "60s")
    delete_node_namespace(node_namespace)


@pytest.fixture
def upstream_on_node(tmp_path: Path) -> Iterator[str]:
    """hack/upstream.py on the node's own address, which pods reach (127.0.0.1 is theirs)."""
    port = free_port()
    ip = need_env("MPAAS_TEST_NODE_IP")
    log = (tmp_path / "upstream.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "hack" / "upstream.py"), "alpha", str(port), ip], stdout=log, stderr=log
    )
    url = f"http://{ip}:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/_count", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def gateway_resource(upstream: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "MpaasGateway",
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 2,
            "resources": SMALL,
            "apps": [{"appId": "DEMO_APP", "workspaceId": "default"}],
            "upstreams": [{"name": "alpha", "endpoints": [{"url": upstream}], "timeoutMilliseconds": 3000}],
            "apis": [{"operationType": "com.shop.echo", "upstream": "alpha", "path": "/echo"}],
            **spec,
        },
    }


async def gateway_ready(namespace: str, replicas: int = 2) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        gw = kget(namespace, "mpaasgateway", "shop")
        status = (gw or {}).get("status") or {}
        ok = condition(gw).get("status") == "True" and status.get("readyReplicas") == replicas
        return gw if ok else None

    try:
        return dict(await eventually(ready, timeout=120, interval=0.5, what="gateway Ready"))
    except AssertionError as e:
        raise AssertionError(f"{e}\n{describe_failure(namespace)}") from None


def call(client: httpx.Client, url: str) -> httpx.Response:
    return client.post(
        url + "/mgw.htm",
        content=b'{"item": 1}',
        headers={**APP, "Operation-Type": "com.shop.echo", "Content-Type": "application/json"},
    )


async def service_url(namespace: str) -> str:
    """The gateway's Service URL, once kube-proxy routes it (its rules follow the endpoints a moment later)."""
    svc = kget(namespace, "service", "mgw-shop")
    assert svc is not None
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"

    def routed() -> bool:
        try:
            with httpx.Client(timeout=2) as client:
                return call(client, url).headers.get("Result-Status") == "1000"
        except httpx.HTTPError:
            return False

    await eventually(routed, timeout=30, interval=0.2, what=f"{url} routed by kube-proxy")
    return url


# --- the operator chart ---------------------------------------------------------


async def test_chart_runs_the_operator_as_real_pods(operator_release: tuple[str, str], real_node: str) -> None:
    namespace, release = operator_release
    selector = f"app.kubernetes.io/instance={release}"
    ops = pods(namespace, selector)
    assert len(ops) == 2 and all(running_ready(p) for p in ops), describe_failure(namespace)
    assert {p["spec"]["nodeName"] for p in ops} == {real_node}
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in ops)
    assert {p["status"]["containerStatuses"][0]["image"] for p in ops} == {need_env("MPAAS_TEST_IMAGE")}

    # The chart's securityContext, as the kernel enforces it in the container.
    assert security_facts(namespace, ops[0]["metadata"]["name"]) == ENFORCED

    # Leader election through kopf peering: both replicas register in the release's peering object (their ids
    # name their pods); the one of highest priority works, the other waits. The active one goes: the standby
    # resumes and the platform stays managed.
    peering = f"{release}-mpaas-operator"

    def peers() -> dict[str, int]:
        obj = json.loads(kubectl("get", "clusterkopfpeering", peering, "-o", "json").stdout)
        by_pod = {}
        for ident, info in (obj.get("status") or {}).items():
            for p in ops:
                if isinstance(info, dict) and p["metadata"]["name"] in ident:
                    by_pod[p["metadata"]["name"]] = int(info.get("priority", 0))
        return by_pod

    registered = await eventually(lambda: len(peers()) == 2 and peers(), timeout=30, what="both replicas as peers")
    active, standby = sorted(registered, key=lambda name: registered[name], reverse=True)
    kubectl("delete", "pod", "-n", namespace, active, "--wait=false")
    await eventually(
        lambda: "Resuming operations" in kubectl("logs", "-n", namespace, standby).stdout,
        timeout=30,
        what=f"the standby {standby} to resume after {active} went",
    )
    topic = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "SyncTopic",
        "metadata": {"name": "after-failover"},
        "spec": {"appId": "FAILOVER_APP", "bizType": "cart"},
    }
    assert apply_yaml(namespace, topic).returncode == 0
    await eventually(
        lambda: condition(kget(namespace, "synctopic", "after-failover")).get("reason"),
        timeout=30,
        what="the SyncTopic handled after the failover",
    )


# --- gateways the operator runs --------------------------------------------------


async def test_gateway_pods_serve_mobile_requests_through_their_service(
    operator_release: tuple[str, str], node_namespace: str, upstream_on_node: str, real_node: str
) -> None:
    namespace = node_namespace
    assert apply_yaml(namespace, gateway_resource(upstream_on_node)).returncode == 0
    gw = await gateway_ready(namespace)
    gws = pods(namespace, gw["status"]["selector"])
    assert len(gws) == 2 and {p["spec"]["nodeName"] for p in gws} == {real_node}
    spec = gws[0]["spec"]
    container = spec["containers"][0]
    assert container["image"] == need_env("MPAAS_TEST_IMAGE") and container["imagePullPolicy"] == "Never"
    # Config read from the API server with the ServiceAccount the operator made (a projected token).
    sa = spec["serviceAccountName"]
    assert kget(namespace, "serviceaccount", sa)["metadata"]["ownerReferences"][0]["kind"] == "MpaasGateway"  # type: ignore[index]
    assert any("serviceAccountToken" in str(v.get("projected", {})) for v in spec["volumes"])
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert security_facts(namespace, gws[0]["metadata"]["name"]) == ENFORCED

    url = await service_url(namespace)
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            r = call(client, url)
            assert r.status_code == 200 and r.headers["Result-Status"] == "1000", r.text
            assert r.json()["upstream"] == "alpha" and r.json()["body"] == '{"item": 1}'
    # A live edit reaches the running pods through their watch, without a restart.
    edited = gateway_resource(upstream_on_node)
    edited["spec"]["apis"].append({"operationType": "com.shop.other", "upstream": "alpha", "path": "/other"})
    assert apply_yaml(namespace, edited).returncode == 0

    def routed() -> bool:
        r = httpx.post(url + "/mgw.htm", headers={**APP, "Operation-Type": "com.shop.other"}, timeout=5)
        return r.headers.get("Result-Status") == "1000" and r.json()["path"] == "/other"

    await eventually(routed, timeout=30, interval=0.3, what="the new API served")
    now = pods(namespace, gw["status"]["selector"])
    assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in now)


async def test_rolling_restart_under_traffic_fails_no_request(
    operator_release: tuple[str, str], node_namespace: str, upstream_on_node: str
) -> None:
    namespace = node_namespace
    assert apply_yaml(namespace, gateway_resource(upstream_on_node)).returncode == 0
    gw = await gateway_ready(namespace)
    before = {p["metadata"]["name"] for p in pods(namespace, gw["status"]["selector"])}
    url = await service_url(namespace)

    results: dict[str, int] = {"ok": 0}
    failures: list[str] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def traffic(keep_alive: bool) -> None:
        # Keep-alive clients, as phones and load balancers hold connections; and new connections.
        kind = "keep-alive" if keep_alive else "new connection"
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(timeout=10, limits=limits) as client:
            while not stop.is_set():
                try:
                    r = call(client, url)
                    if r.status_code == 200 and r.headers.get("Result-Status") == "1000":
                        results["ok"] += 1
                    else:
                        failures.append(f"{kind}: {r.status_code} {r.headers.get('Result-Status')} {r.text[:200]}")
                except httpx.HTTPError as e:
                    failures.append(f"{kind} at {time.monotonic() - t0:.1f} s: {type(e).__name__}: {e}")
                time.sleep(0.01)

    threads = [threading.Thread(target=traffic, args=(k,)) for k in (True, True, False)]
    for t in threads:
        t.start()
    try:
        await asyncio.sleep(2)
        started = time.monotonic()
        kubectl("rollout", "restart", "-n", namespace, "deployment/mgw-shop")
        print(f"rollout restart at {started - t0:.1f} s")
        r = await asyncio.to_thread(
            kubectl, "rollout", "status", "-n", namespace, "deployment/mgw-shop", "--timeout=120s", check=False
        )
        assert r.returncode == 0, r.stdout + r.stderr + describe_failure(namespace)

        def old_gone() -> bool:
            return not before & {p["metadata"]["name"] for p in pods(namespace, gw["status"]["selector"])}

        await eventually(old_gone, timeout=60, interval=0.5, what="the old pods gone")
        rollout_seconds = time.monotonic() - started
        await asyncio.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    total = results["ok"] + len(failures)
    print(f"rolling restart: {len(failures)}/{total} requests failed, rollout {rollout_seconds:.1f} s")
    assert total > 100
    assert not failures, f"{len(failures)}/{total} failed: {failures[:10]}"
    # Each old pod waited out its preStop (5 s) before it was signalled: the rollout cannot be faster.
    assert rollout_seconds > 5


@pytest.fixture
def redis_on_node(tmp_path: Path) -> Iterator[str]:
    """A Redis on the node's address for gateway workers to share state through."""
    ip = need_env("MPAAS_TEST_NODE_IP")
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", ip, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    yield f"redis://{ip}:{port}/0"
    redis.terminate()
    redis.wait(10)


async def test_a_crash_looping_gateway_shows_up_as_restarts(
    operator_release: tuple[str, str], node_namespace: str, upstream_on_node: str, redis_on_node: str
) -> None:
    """Workers that keep dying stop the pod (3 exits in 60 s), so the kubelet counts the restarts."""
    namespace = node_namespace
    spec = {"replicas": 1, "workersPerPod": 2, "sharedState": {"url": redis_on_node}}
    assert apply_yaml(namespace, gateway_resource(upstream_on_node, **spec)).returncode == 0
    gw = await gateway_ready(namespace, replicas=1)
    pod = pods(namespace, gw["status"]["selector"])[0]
    name = pod["metadata"]["name"]
    kill_workers = (
        "import os, signal\n"
        "for p in os.listdir('/proc'):\n"
        "    if not p.isdigit() or int(p) in (1, os.getpid()):\n"
        "        continue\n"
        "    if b'mpaas.cli' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
        "        os.kill(int(p), signal.SIGKILL)\n"
    )

    def restarted() -> dict[str, Any] | None:
        p = kget(namespace, "pod", name)
        status = ((p or {}).get("status") or {}).get("containerStatuses") or [{}]
        return status[0] if status[0].get("restartCount", 0) >= 1 else None

    deadline = time.monotonic() + 60
    while not restarted() and time.monotonic() < deadline:
        kubectl("exec", "-n", namespace, name, "--", "python3", "-c", kill_workers, check=False)
        await asyncio.sleep(1.5)
    status = restarted()
    assert status, describe_failure(namespace)
    assert status["lastState"]["terminated"]["exitCode"] == 1  # the supervisor's error, not a clean stop
    # The same pod comes back and serves again.
    await gateway_ready(namespace, replicas=1)
    logs = kubectl("logs", "-n", namespace, name, "--previous").stdout
    assert "stopping the pod" in logs, logs[-2000:]


# --- what Kubernetes does to the image's processes -------------------------------


def pod_of_image(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": need_env("MPAAS_TEST_IMAGE"),
                    "imagePullPolicy": "Never",
                    "command": command,
                    **container,
                }
            ],
        },
    }


async def test_oom_and_probe_failures_behave_as_kubernetes_users_expect(node_namespace: str) -> None:
    ns = node_namespace
    hog = pod_of_image(
        "hog",
        ["python3", "-c", "import time; b = bytearray(256 * 2**20); time.sleep(60)"],
        resources={"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "48Mi"}},
    )
    hog["spec"]["restartPolicy"] = "Never"
    # Serves, but /healthz is missing (liveness fails: restarts) and so is /readyz (never Ready).
    sick = pod_of_image(
        "sick",
        ["python3", "-m", "http.server", "8080", "--directory", "/tmp"],
        resources={"requests": {"cpu": "10m", "memory": "32Mi"}},
        ports=[{"name": "http", "containerPort": 8080}],
        livenessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 2},
        readinessProbe={"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
    )
    sick["metadata"]["labels"] = {"app": "sick"}
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "sick"},
        "spec": {"selector": {"app": "sick"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    assert apply_yaml(ns, hog, sick, svc).returncode == 0

    def oom_killed() -> dict[str, Any] | None:
        st = ((kget(ns, "pod", "hog") or {}).get("status") or {}).get("containerStatuses") or [{}]
        return st[0].get("state", {}).get("terminated")

    terminated = await eventually(oom_killed, timeout=60, interval=0.5, what="hog terminated")
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137

    def restarts() -> int:
        st = ((kget(ns, "pod", "sick") or {}).get("status") or {}).get("containerStatuses") or [{}]
        return int(st[0].get("restartCount", 0))

    await eventually(lambda: restarts() >= 1, timeout=90, interval=0.5, what="liveness restarts")
    sick_now = kget(ns, "pod", "sick")
    assert condition(sick_now).get("status") == "False"  # readiness never passed
    reasons = {e.get("reason") for e in (kget(ns, "events") or {}).get("items", [])}
    assert {"Unhealthy", "Killing"} <= reasons, reasons
    # Not Ready: the Service has no ready endpoint for it.
    slices = (kget(ns, "endpointslices", "-l", "kubernetes.io/service-name=sick") or {}).get("items") or []
    ready = [e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
    assert ready == []
