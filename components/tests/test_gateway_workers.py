"""Several gateway workers on one port: both serve, metrics add up across them, a dead worker comes back."""

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from conftest import Process, apply_yaml, eventually, free_port, need_env, wait_ready

pytestmark = pytest.mark.component


def children(proc: Process) -> list[int]:
    pid = proc.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on 127.0.0.1:`port` (from /proc, no tools needed)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # local address, state LISTEN
            inodes.add(fields[9])
    try:
        fds = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except (FileNotFoundError, PermissionError):  # gone, or a zombie
        return False
    return any(f"socket:[{inode}]" in fds for inode in inodes)


def readyz(url: str) -> tuple[int, str]:
    r = httpx.get(url + "/readyz")
    return r.status_code, r.json()["reason"]


def served_by_pid(metrics_dir: Path) -> dict[int, float]:
    """Requests counted per worker pid, from the shared metrics files."""
    out: dict[int, float] = {}
    for f in metrics_dir.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
            if json.loads(key)[1] == "mpaas_gateway_requests_total":
                out[pid] = out.get(pid, 0) + value
    return out


def total_requests(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(
        float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("mpaas_gateway_requests_total{")
    )


async def test_two_workers(namespace: str, upstreams: dict[str, str], spawn: object, tmp_path: Path) -> None:
    apply_yaml(
        namespace,
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "MpaasGateway",
            "metadata": {"name": "gw", "namespace": namespace},
            "spec": {
                "apps": [{"appId": "W", "workspaceId": "w"}],
                "upstreams": [{"name": "alpha", "endpoints": [{"url": upstreams["alpha"]}]}],
                "apis": [{"operationType": "w.echo", "upstream": "alpha", "path": "/echo"}],
            },
        },
    )
    port, metrics_dir = free_port(), tmp_path / "metrics"
    metrics_dir.mkdir()
    proc = spawn(  # type: ignore[operator]
        "gateway",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_NAMESPACE": namespace,
            "MPAAS_GATEWAY_NAME": "gw",
            "MPAAS_ADMIN_PORT": str(free_port()),
            "MPAAS_WORKERS": "2",
            "MPAAS_REDIS_URL": need_env("MPAAS_TEST_REDIS_URL"),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        name="gateway",
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    await eventually(lambda: len(children(proc)) == 2, what="two workers")
    first = children(proc)
    # A worker binds the port only once it has its config; until both have, one would serve all the calls.
    await eventually(lambda: all(listening(pid, port) for pid in first), what="both workers listening")
    assert all(readyz(url)[0] == 200 for _ in range(10))

    def call() -> None:  # a new connection each time: SO_REUSEPORT spreads connections, not requests
        r = httpx.post(
            url + "/mgw.htm", content=b"{}", headers={"Operation-Type": "w.echo", "AppId": "W", "WorkspaceId": "w"}
        )
        assert r.headers["result-status"] == "1000", r.headers

    for _ in range(40):
        call()
    # Each worker adds its request counts to the shared files within a second (mpaas.tally).
    per_pid = await eventually(
        lambda: (c := served_by_pid(metrics_dir)) and sum(c.values()) == 40 and c, timeout=5, what="counts flushed"
    )
    assert set(per_pid) == set(first) and all(n > 0 for n in per_pid.values()), per_pid
    assert total_requests(url) == 40  # whichever worker answers /metrics reports both

    os.kill(first[0], signal.SIGKILL)
    # Until the kernel has closed the dead worker's socket, connections hashed to it would be reset.
    await eventually(lambda: not listening(first[0], port), what="the killed worker's socket closed")
    for _ in range(10):
        call()  # the survivor serves meanwhile
    await eventually(lambda: len(children(proc)) == 2 and children(proc) != first, what="a replacement worker")
    children_seen = children(proc)
    await eventually(lambda: all(listening(pid, port) for pid in children_seen), what="the replacement listening")
    for _ in range(20):
        call()  # a replacement that bound the port before its config arrived would answer 5001 here
    await eventually(lambda: total_requests(url) == 70, what="counts of the dead worker kept")

    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in children_seen)


def test_more_than_one_worker_needs_redis(spawn: object) -> None:
    proc = spawn("gateway", env={"MPAAS_WORKERS": "2", "MPAAS_REDIS_URL": "memory://"}, name="gw")  # type: ignore[operator]
    assert proc.proc.wait(20) != 0
    assert "MPAAS_WORKERS > 1 needs MPAAS_REDIS_URL" in proc.output()


async def test_a_worker_binds_the_shared_port_only_with_a_config(spawn: object, tmp_path: Path) -> None:
    """Its siblings keep the pod Ready, so a worker without a config must not take connections (it would answer
    5001); it waits for one, and binds after a bounded wait so /healthz still answers."""
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
                "current-context": "x",
            }
        )
    )
    port = free_port()
    proc = spawn(  # type: ignore[operator]
        "gateway",
        env={
            "MPAAS_PORT": str(port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_ADMIN_PORT": "0",
            "MPAAS_REUSE_PORT": "true",
            "MPAAS_FIRST_CONFIG_WAIT_SECONDS": "3",
            "KUBECONFIG": str(kubeconfig),
            "MPAAS_KUBECONFIG": str(kubeconfig),
        },
        name="gateway",
    )
    await eventually(lambda: listening(proc.proc.pid, port), timeout=20, what="the worker listening")
    # The warning is logged before the bind: seeing the port open without it means the worker did not wait.
    assert "no configuration after 3 s; serving anyway" in proc.output()
    assert readyz(f"http://127.0.0.1:{port}") == (503, "waiting for the first configuration")
