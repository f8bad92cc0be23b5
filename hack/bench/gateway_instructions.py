"""Instructions the gateway executes per plain request: a figure this noisy machine cannot move.

    .venv/bin/python hack/bench/gateway_instructions.py [--requests 1000] [--signed]

Throughput on a shared 2-core VM moves by ±30 % from one minute to the next
(steal time); the number of user-space instructions per request does not. So
hot-path changes are compared by this figure (docs/benchmarks.md): the gateway
runs under valgrind's callgrind, its counters are zeroed after a warm-up and
dumped after N requests over one keep-alive connection to the same backend as
hack/bench/gateway.py. Kernel work (the socket calls) is not counted. `--signed`
sends HMAC-SHA256-signed requests, each with a fresh nonce (signature stage and
nonce store included).

Needs valgrind (Debian package; installed when missing). Takes about two minutes.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import BODY, OP, ROOT, free_port, wait_http

from mpaas import compiled
from mpaas.crypto.signing import canonical, signer


def ensure_valgrind() -> None:
    if not shutil.which("callgrind_control"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "valgrind"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--signed", action="store_true", help="HMAC-SHA256-signed requests with a fresh nonce each")
    ap.add_argument("--keep", metavar="FILE", help="keep the callgrind dump here (for callgrind_annotate)")
    args = ap.parse_args()
    ensure_valgrind()
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-icount-"))
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "hack" / "bench"), "upstream_fast:app"),
                    *("--host", "127.0.0.1", "--port", str(up_port), "--log-level", "warning", "--no-access-log"),
                    *("--http", "httptools", "--loop", "uvloop"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        cfg = tmp / "config"
        cfg.mkdir()
        hmac_key = os.urandom(32)
        (cfg / "gateway.yaml").write_text(
            yaml.safe_dump_all(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "keys", "namespace": "default"},
                        "data": {"hmacKey": base64.b64encode(hmac_key).decode()},
                    },
                    {
                        "apiVersion": "mpaas.io/v1alpha1",
                        "kind": "MpaasGateway",
                        "metadata": {"name": "bench", "namespace": "default"},
                        "spec": {
                            "apps": [
                                {"appId": "PLAIN", "workspaceId": "bench"},
                                {
                                    "appId": "SIGNED",
                                    "workspaceId": "bench",
                                    "credentialsSecretRef": {"name": "keys"},
                                    "signature": {"algorithm": "HmacSha256", "requireNonce": True},
                                },
                            ],
                            "upstreams": [{"name": "backend", "endpoints": [{"url": f"http://127.0.0.1:{up_port}"}]}],
                            "apis": [{"operationType": OP, "upstream": "backend", "path": "/profile"}],
                        },
                    },
                ]
            )
        )
        out = tmp / "callgrind.out"
        env = {
            **os.environ,
            "MPAAS_CONFIG_SOURCE": "dir",
            "MPAAS_CONFIG_DIR": str(cfg),
            "MPAAS_PORT": str(gw_port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_LOG_LEVEL": "WARNING",
            "MPAAS_DIGEST_LOG": "false",
            "MPAAS_ADMIN_PORT": "0",
        }
        gateway = subprocess.Popen(
            [
                *("valgrind", "--tool=callgrind", "--compress-strings=no", f"--callgrind-out-file={out}"),
                *(str(Path(sys.executable).parent / "mpaas"), "gateway"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(gateway)
        wait_http(f"http://127.0.0.1:{up_port}/")
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", timeout=300)  # valgrind runs ~50x slower
        app_id = "SIGNED" if args.signed else "PLAIN"
        headers = {"Content-Type": "application/json", "Operation-Type": OP, "AppId": app_id, "WorkspaceId": "bench"}
        sign = signer("HmacSha256", hmac_key)

        def signed() -> dict[str, str]:
            ts, nonce = str(int(time.time() * 1000)), os.urandom(12).hex()
            msg = canonical("POST", "/mgw.htm", "", OP, app_id, "bench", ts, nonce, BODY)
            return {**headers, "Ts": ts, "Nonce": nonce, "Sign": base64.b64encode(sign(msg)).decode()}

        with httpx.Client(base_url=f"http://127.0.0.1:{gw_port}", timeout=60) as client:

            def send(n: int) -> None:
                for _ in range(n):
                    r = client.post("/mgw.htm", content=BODY, headers=signed() if args.signed else headers)
                    if r.headers.get("result-status") != "1000":
                        raise RuntimeError(f"the gateway answered {r.status_code} {dict(r.headers)}")

            send(args.warmup)
            subprocess.run(["callgrind_control", "-z", str(gateway.pid)], check=True, capture_output=True)
            started = time.monotonic()
            send(args.requests)
            elapsed = time.monotonic() - started
            subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
        dumps = sorted(tmp.glob("callgrind.out.*"))
        summary = re.search(r"^summary: (\d+)$", dumps[-1].read_text(), re.M) if dumps else None
        if summary is None:
            raise RuntimeError("callgrind wrote no dump")
        per_request = int(summary.group(1)) / args.requests
        if args.keep:
            shutil.copy(dumps[-1], args.keep)
        hot = "compiled" if all(compiled.loaded_compiled().values()) else "interpreted"
        kind = "HMAC-signed" if args.signed else "plain"
        print(f"gateway {kind} ({hot}): {per_request / 1000:.1f} k instructions per request (user space, callgrind)")
        print(f"  {args.requests} requests after {args.warmup} of warm-up, {elapsed:.0f} s under valgrind")
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
