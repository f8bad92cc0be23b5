"""Fixtures shared by every test tier.

Servers come from `hack/testenv/up.sh`, which writes their addresses to
`.testenv/env.sh`; `hack/test` exports them. A test that needs a server the
environment does not name fails with instructions: no tier is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "hack"))


def example(kind: str, *, keep_namespace: bool = False) -> dict[str, Any]:
    """A fresh copy of the demo app's resource of `kind` (examples/demo), namespace dropped unless asked."""
    for f in sorted((ROOT / "examples" / "demo").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc["kind"] == kind:
                if not keep_namespace:
                    doc["metadata"].pop("namespace", None)
                return dict(doc)
    raise LookupError(kind)


def need_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: start the test environment (hack/testenv/up.sh) and source .testenv/env.sh, "
            "or run hack/test",
            pytrace=False,
        )
    return value


_given_ports: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before in this run (two servers never get the same one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given_ports:
            _given_ports.add(port)
            return port


_held_closed: list[socket.socket] = []


def closed_url() -> str:
    """A loopback URL that refuses connections for the whole test run.

    The port stays bound (never listening), so no server started later — a
    gateway's own port or admin port from free_port() — can take it over."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _held_closed.append(s)
    return f"http://127.0.0.1:{s.getsockname()[1]}"


async def eventually(check: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1, what: str = "") -> Any:
    """Poll `check` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last value: {last!r}")


# --- Kubernetes ----------------------------------------------------------------


def kubectl_path() -> str:
    from testenv_paths import kubectl  # hack/testenv_paths.py

    return kubectl()


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    need_env("KUBECONFIG")
    return subprocess.run([kubectl_path(), *args], input=input, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    return need_env("KUBECONFIG")


@pytest.fixture(scope="session")
def crds(kubeconfig: str) -> None:
    """Install (or update) the CRDs from crds/, once per session."""
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=mpaas-tests", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))


@pytest_asyncio.fixture
async def kube(kubeconfig: str) -> AsyncIterator[Any]:
    from mpaas.kube import KubeClient

    client = KubeClient(kubeconfig)
    yield client
    await client.close()


@pytest.fixture
def namespace(kubeconfig: str, crds: None) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (children go with it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_yaml(namespace: str, *docs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), check=False)


# --- processes -----------------------------------------------------------------


class Process:
    """A platform process started for a test, stopped by its pid."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=self._fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    procs: list[Process] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "proc") -> Process:
        mpaas = shutil.which("mpaas", path=str(Path(sys.executable).parent)) or "mpaas"
        p = Process([mpaas, *args], env or {}, tmp_path / f"{name}-{len(procs)}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


# --- component tier: local upstreams and gateway processes -----------------------


def start_upstreams(names: list[str], tmp_path: Path) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    procs, urls = [], {}
    for name in names:
        port = free_port()
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "hack" / "upstream.py"), name, str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        urls[name] = f"http://127.0.0.1:{port}"
    for url in urls.values():
        for _ in range(100):
            try:
                httpx.get(url + "/_count", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
    return urls, procs


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[dict[str, str]]:
    """alpha and beta answer with their names; broken answers 503 to everything."""
    urls, procs = start_upstreams(["alpha", "beta", "broken"], tmp_path)
    yield urls
    for p in procs:
        p.terminate()
        p.wait(10)


def hits(url: str) -> int:
    return int(httpx.get(url + "/_count", timeout=5).json()["requests"])


def wait_ready(url: str, proc: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.proc.poll() is None, proc.output()
        time.sleep(0.1)
    raise AssertionError("gateway never became ready:\n" + proc.output())


@pytest.fixture
def start_gateway(spawn: Callable[..., Process]) -> Callable[..., str]:
    """Apply a gateway resource, start a gateway process for it, wait until it is ready; returns its URL."""

    def start(
        namespace: str,
        resource: dict[str, Any] | None = None,
        *,
        env: dict[str, str] | None = None,
        extra: list[dict[str, Any]] | None = None,
    ) -> str:
        docs = [*(extra or []), *([resource] if resource else [])]
        if docs:
            r = apply_yaml(namespace, *docs)
            assert r.returncode == 0, r.stderr
        name = (resource or {}).get("metadata", {}).get("name", "gw")
        port = free_port()
        proc = spawn(
            "gateway",
            env={
                "MPAAS_PORT": str(port),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_NAMESPACE": namespace,
                "MPAAS_GATEWAY_NAME": name,
                "MPAAS_CONFIG_SOURCE": "kube",
                "MPAAS_ADMIN_PORT": str(free_port()),
                **(env or {}),
            },
            name="gateway",
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        return url

    return start


@pytest.fixture
def start_delivery(spawn: Callable[..., Process]) -> Callable[..., str]:
    """Start a delivery process reading its resources from a folder (and its packages from `objects_url`),
    wait until it is ready; returns its URL."""

    def start(config: Path, objects_url: str = "", *, env: dict[str, str] | None = None) -> str:
        port = free_port()
        proc = spawn(
            "delivery",
            env={
                "MPAAS_PORT": str(port),
                "MPAAS_HOST": "127.0.0.1",
                "MPAAS_CONFIG_SOURCE": "dir",
                "MPAAS_CONFIG_DIR": str(config),
                **({"MPAAS_OBJECTS_URL": objects_url} if objects_url else {}),
                **(env or {}),
            },
            name="delivery",
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        return url

    return start


# --- cluster tier: the operator and the resources it reports on ------------------


def kget(namespace: str, *what: str) -> dict[str, Any] | None:
    """`kubectl get -o json`, or None when it is not there."""
    r = kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


async def ready_reason(namespace: str, kind: str, name: str, reason: str, *, timeout: float = 30) -> dict[str, Any]:
    """The Ready condition of `kind/name`, once its reason is `reason`."""

    def check() -> dict[str, Any] | None:
        ready = condition(kget(namespace, kind, name))
        return ready if ready.get("reason") == reason else None

    return await eventually(check, timeout=timeout, what=f"{kind}/{name} Ready reason {reason}")  # type: ignore[no-any-return]


def events_of(namespace: str, name: str) -> list[dict[str, Any]]:
    out = kget(namespace, "events", "--field-selector", f"involvedObject.name={name}")
    return (out or {}).get("items") or []


def create_peering(name: str) -> None:
    """The ClusterKopfPeering operator replicas meet in (the chart creates it in a real install)."""
    kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}),
    )


def start_operator(
    spawn: Callable[..., Process],
    name: str = "operator",
    priority: int | None = None,
    peering: str = "mpaas-operator-e2e",
) -> Process:
    env = {
        "MPAAS_OPERATOR_PEERING": peering,
        "MPAAS_OPERATOR_HEALTH_PORT": str(free_port()),
        "MPAAS_OPERATOR_IMAGE": "registry.example/mpaas:e2e",
    }
    if priority is not None:
        env["MPAAS_OPERATOR_PRIORITY"] = str(priority)
    return spawn("operator", env=env, name=name)


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's verdict on a resource: docs/gitops/argocd-health.lua run in Lua, as Argo CD runs it."""
    from lupa import LuaRuntime

    lua = LuaRuntime()
    script = (ROOT / "docs" / "gitops" / "argocd-health.lua").read_text()
    check = lua.eval(f"function(obj)\n{script}\nend")
    hs = check(lua.table_from(obj, recursive=True))
    return str(hs["status"]), str(hs["message"])


@pytest.fixture(scope="session")
def peering(crds: None) -> str:
    create_peering("mpaas-operator-e2e")
    return "mpaas-operator-e2e"


@pytest.fixture
def operator(peering: str, spawn: Callable[..., Process]) -> Process:
    """One operator process for the cluster tier, watching every namespace."""
    return start_operator(spawn, peering=peering)


# --- pods tier: the real node of `hack/testenv/up.sh node` ------------------------


@pytest.fixture(scope="session")
def real_node(kubeconfig: str, crds: None) -> str:
    """The real node's name, once it is Ready; the tier fails (never skips) without one."""
    name = need_env("MPAAS_TEST_NODE")
    r = kubectl("get", "node", name, "-o", "json", check=False)
    node = json.loads(r.stdout) if r.returncode == 0 else None
    ready = condition(node, "Ready").get("status") == "True"
    if not ready:
        pytest.fail(f"real node {name} is not Ready: start it with hack/testenv/up.sh node", pytrace=False)
    return name


def create_node_namespace(node: str) -> str:
    """A fresh namespace whose pods all run on the real node `node` (and on no fake one).

    The real node is tainted, so the kwok tiers never land there; the apiserver's PodTolerationRestriction
    and PodNodeSelector admission plugins give every pod created here the toleration and a nodeSelector,
    the operator's own Deployments included."""
    name = f"p-{uuid.uuid4().hex[:10]}"
    taint = need_env("MPAAS_TEST_NODE_TAINT")
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "annotations": {
                "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
                    [{"key": taint, "operator": "Exists", "effect": "NoSchedule"}]
                ),
                "scheduler.alpha.kubernetes.io/node-selector": f"kubernetes.io/hostname={node}",
            },
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(ns))
    return name


@pytest.fixture
def node_namespace(real_node: str) -> Iterator[str]:
    """A fresh namespace of real pods (create_node_namespace), deleted afterwards."""
    name = create_node_namespace(real_node)
    yield name
    delete_node_namespace(name)


def delete_node_namespace(name: str) -> None:
    """Pods first, waited for (the next test gets the CPU they held), then the namespace: the namespace
    controller alone would wait out the longest grace period (30 s) before it looked again."""
    kubectl("delete", "mpaasgateways", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False)
    kubectl("delete", "deployments,replicasets,pods", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False)
    kubectl("delete", "namespace", name, "--wait=true", "--timeout=60s", check=False)


TIERS = {"unit", "contract", "api", "component", "cluster", "pods"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one tier, so `hack/test` runs each test exactly once."""
    for item in items:
        tiers = {m.name for m in item.iter_markers()} & TIERS
        if len(tiers) != 1:
            raise pytest.UsageError(f"{item.nodeid} must have exactly one tier marker of {sorted(TIERS)}, has {tiers}")
