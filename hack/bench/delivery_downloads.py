"""Package downloads: a 100 MB package, 15 concurrent clients, delivery against nginx `sendfile` on the same file.

    .venv/bin/python hack/bench/delivery_downloads.py [--mb 100] [--clients 15] [--seconds 8] [--rounds 2]

Starts on 127.0.0.1, and stops at the end: `mpaas delivery` (a local folder store, the package offered by a
DeliveryTask, downloaded through the signed link its update check answers) and nginx (one worker, `sendfile
on`, serving the same file), each pinned to core 0 (taskset). Clients: threads on core 1, each a keep-alive
connection that GETs the whole file again and again, reading into one buffer (recv_into). Prints MiB/s of
each and the ratio delivery / nginx (target >= 0.8), round by round. Needs nginx (Debian package nginx-light,
installed when missing).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def download_loop(host: str, port: int, target: str, seconds: float, counted: list[int]) -> None:
    """Whole-file GETs on one keep-alive connection for `seconds`; adds the body bytes read to `counted`."""
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    total = 0
    deadline = time.monotonic() + seconds
    with socket.create_connection((host, port)) as s:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        while time.monotonic() < deadline:
            s.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            raw, rest = head.split(b"\r\n\r\n", 1)
            length = next(int(x.split(b":")[1]) for x in raw.split(b"\r\n") if x.lower().startswith(b"content-length"))
            assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
            left = length - len(rest)
            while left > 0:
                n = s.recv_into(view[: min(len(buf), left)])
                if not n:
                    raise ConnectionError("closed mid-file")
                left -= n
            total += length
    counted.append(total)


def measure(host: str, port: int, target: str, clients: int, seconds: float) -> float:
    counted: list[int] = []
    os.sched_setaffinity(0, {1})  # the clients' core (threads inherit it)
    threads = [
        threading.Thread(target=download_loop, args=(host, port, target, seconds, counted)) for _ in range(clients)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    assert len(counted) == clients, "a client failed"
    return sum(counted) / took / (1 << 20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--clients", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "nginx-light"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-downloads-"))
    objects, config = tmp / "objects", tmp / "config"
    (objects / "p").mkdir(parents=True)
    config.mkdir()
    package = objects / "p" / "package.bin"
    with package.open("wb") as f:
        for _ in range(args.mb):
            f.write(os.urandom(1 << 20))
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    for p in (tmp, objects, objects / "p"):  # nginx's worker runs as another user: it must read the file
        p.chmod(0o755)
    package.chmod(0o644)
    docs = [
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "MpaasGateway",
            "metadata": {"name": "apps", "namespace": "bench"},
            "spec": {
                "apps": [{"appId": "BENCH", "workspaceId": "prod"}],
                "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
            },
        },
        {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "DeliveryTask",
            "metadata": {"name": "big", "namespace": "bench"},
            "spec": {
                "appId": "BENCH",
                "workspaceId": "prod",
                "platform": "Android",
                "resourceType": "AppUpgrade",
                "package": {
                    "uri": "s3://local/p/package.bin",
                    "version": "2.0",
                    "sha256": sha,
                    "sizeBytes": args.mb << 20,
                },
            },
        },
    ]
    (config / "tasks.yaml").write_text(yaml.safe_dump_all(docs))
    d_port, n_port = free_port(), free_port()
    (tmp / "nginx.conf").write_text(f"""
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{n_port}; root {objects}; }}
}}
""")
    env = {
        **os.environ,
        "MPAAS_PORT": str(d_port),
        "MPAAS_HOST": "127.0.0.1",
        "MPAAS_CONFIG_SOURCE": "dir",
        "MPAAS_CONFIG_DIR": str(config),
        "MPAAS_OBJECTS_URL": f"file://{objects}",
        "MPAAS_LOG_LEVEL": "WARNING",
    }
    mpaas = str(Path(sys.executable).parent / "mpaas")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = [
        subprocess.Popen(["taskset", "-c", "0", mpaas, "delivery"], env=env, stdout=subprocess.DEVNULL),
        subprocess.Popen(
            ["taskset", "-c", "0", nginx, "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        check = {"appId": "BENCH", "workspaceId": "prod", "platform": "Android", "deviceId": "d", "appVersion": "1"}
        deadline, link = time.monotonic() + 120, ""
        while time.monotonic() < deadline and not link:  # offered once its package is verified
            try:
                item = httpx.post(f"http://127.0.0.1:{d_port}/v1/delivery/check", json=check, timeout=5).json()[
                    "items"
                ][0]
                link = item["package"]["url"] if item["update"] else ""
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.5)
        if not link:
            raise SystemExit("delivery never offered the package")
        u = urlsplit(link)
        target = f"{u.path}?{u.query}"
        print(f"{args.mb} MB package, {args.clients} clients on core 1, each server on core 0")
        ratios = []
        for r in range(args.rounds):
            ours = measure("127.0.0.1", d_port, target, args.clients, args.seconds)
            theirs = measure("127.0.0.1", n_port, "/p/package.bin", args.clients, args.seconds)
            ratios.append(ours / theirs)
            ratio = ours / theirs
            print(f"round {r + 1}: delivery {ours:,.0f} MiB/s, nginx sendfile {theirs:,.0f} MiB/s, ratio {ratio:.2f}")
        print(f"ratio delivery / nginx: {min(ratios):.2f} to {max(ratios):.2f} (target >= 0.8)")
        return 0
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
