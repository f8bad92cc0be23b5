"""Gateway throughput and latency against the upstream alone and nginx, on loopback.

    .venv/bin/python hack/bench/gateway.py [--seconds 8] [--connections 32] [--rounds 3]

Starts, all on 127.0.0.1 and stopped at the end: the backend (a minimal ASGI
service under uvicorn), nginx `proxy_pass` to it, and one gateway process
reading its MpaasGateway and app keys from a folder. Load comes from wrk
(maximum throughput, and paced at a fixed rate for latency at half load), a
separate process. Signed scenarios replay one pre-signed request without a
nonce, so every request pays the full verification.

Needs wrk and nginx (Debian packages; installed when missing).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
from mpaas import compiled  # noqa: E402
from mpaas.crypto import envelope  # noqa: E402
from mpaas.crypto.signing import canonical, generate_keypair, signer  # noqa: E402

BODY = b'{"userId":"10086","fields":["nickname","level"]}'
OP = "bench.profile"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    missing = [p for p in ("wrk", "nginx") if not shutil.which(p) and not Path(f"/usr/sbin/{p}").exists()]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-q", *("nginx-light" if m == "nginx" else m for m in missing)],
            check=True,
        )


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float | None = None  # CPU time of the measured server process per request
    sys_us: float | None = None  # the kernel's part of it (socket calls)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time of a process and its live children (the gateway's workers) so far.

    Less sensitive to the machine's other load than rps.
    """
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    user = system = 0
    for p in (pid, *map(int, children)):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        raise ValueError(f"unexpected wrk latency {value!r}")
    n, unit = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60_000}[unit]


def wrk(
    name: str,
    url: str,
    headers: dict[str, str],
    seconds: int,
    connections: int,
    tmp: Path,
    body: bytes = BODY,
    pid: int | None = None,
) -> Result:
    script = tmp / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.lua"
    lua_body = "".join(f"\\{b:03d}" for b in body)  # decimal escapes: any byte, Lua-safe
    lines = ['wrk.method = "POST"', f'wrk.body = "{lua_body}"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    before = cpu_seconds(pid) if pid else (0.0, 0.0)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = cpu_seconds(pid) if pid else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if after is None or not n:
        return Result(name, rps, p50, p99, errors, n)
    user, system = after[0] - before[0], after[1] - before[1]
    return Result(name, rps, p50, p99, errors, n, (user + system) / n * 1e6, system / n * 1e6)


PACED_LUA = """
-- One schedule for all connections (one wrk thread, one Lua state): a send every period, whatever
-- the answers do, as long as a connection is free.
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } timespec; int clock_gettime(int, timespec *); ]]
local ts = ffi.new("timespec")
local function now_ms() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6 end
local period, next_at = PERIOD_MS, nil
function delay()
  local t = now_ms()
  if next_at == nil then next_at = t + math.random() * period end
  local wait = next_at - t
  next_at = next_at + period
  if wait < 0 then return 0 end
  return math.floor(wait + 0.5)
end
"""


def paced(
    name: str, url: str, headers: dict[str, str], rate: float, seconds: int, tmp: Path, connections: int = 16
) -> tuple[float, float]:
    """(achieved rps, p99 ms) with wrk sending at a fixed total `rate` (µs-resolution latencies)."""
    script = tmp / f"paced-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.lua"
    lua_body = "".join(f"\\{b:03d}" for b in BODY)
    lines = ['wrk.method = "POST"', f'wrk.body = "{lua_body}"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + PACED_LUA.replace("PERIOD_MS", f"{1000 / rate:.4f}"))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]


def added_buckets(gw_port: int) -> dict[float, float]:
    """The gateway's own `mpaas_gateway_added_seconds` histogram for the bench API: upper bound -> count."""
    text = httpx.get(f"http://127.0.0.1:{gw_port}/metrics", timeout=10).text
    out = {}
    for m in re.finditer(
        rf'^mpaas_gateway_added_seconds_bucket{{le="([^"]+)",operation_type="{re.escape(OP)}"}} (\S+)$', text, re.M
    ):
        out[float(m.group(1))] = float(m.group(2))
    return out


def bucket_p99(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound (ms) of the bucket holding the 99th percentile of what was observed in between."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1]
    return next(le for le, n in counts if n >= 0.99 * total) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes (more than one starts Redis)")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated words: run only the scenarios whose names contain one (direct and plain always run)",
    )
    ap.add_argument("--no-latency", action="store_true", help="skip the paced half-load latency runs")
    args = ap.parse_args()
    ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    up_port, nginx_port, gw_port = free_port(), free_port(), free_port()
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(ROOT / "hack" / "bench"),
                    "upstream_fast:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(up_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--http",
                    "httptools",
                    "--loop",
                    "uvloop",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        (tmp / "nginx.conf").write_text(f"""
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream backend {{ server 127.0.0.1:{up_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(
            subprocess.Popen(
                [nginx, "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )

        keys = {alg: generate_keypair(alg) for alg in ("HmacSha256", "EcdsaP256", "Sm2")}
        cfg = tmp / "config"
        cfg.mkdir()
        docs: list[dict] = []
        apps = [{"appId": "PLAIN", "workspaceId": "bench"}]
        for alg, (_, public) in keys.items():
            field = "hmacKey" if alg == "HmacSha256" else "publicKey"
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"keys-{alg.lower()}", "namespace": "default"},
                    "data": {field: base64.b64encode(public).decode()},
                }
            )
            apps.append(
                {
                    "appId": alg.upper(),
                    "workspaceId": "bench",
                    "credentialsSecretRef": {"name": f"keys-{alg.lower()}"},
                    "signature": {"algorithm": alg, "timestampWindowSeconds": 86400},
                }
            )
        gw_keys = {wrap: envelope.generate_gateway_key(wrap) for wrap in ("EciesP256", "Sm2")}
        for wrap, cipher in (("EciesP256", "AesGcm"), ("Sm2", "Sm4Gcm")):
            secret_name = f"enc-{wrap.lower()}"
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret_name, "namespace": "default"},
                    "data": {envelope.SECRET_KEYS[wrap]: base64.b64encode(gw_keys[wrap][0]).decode()},
                }
            )
            apps.append(
                {
                    "appId": f"ENC{wrap.upper()}",
                    "workspaceId": "bench",
                    "credentialsSecretRef": {"name": secret_name},
                    "encryption": {"mode": "Required", "keyWraps": [wrap], "cipher": cipher},
                }
            )
        docs.append(
            {
                "apiVersion": "mpaas.io/v1alpha1",
                "kind": "MpaasGateway",
                "metadata": {"name": "bench", "namespace": "default"},
                "spec": {
                    "apps": apps,
                    "upstreams": [{"name": "backend", "endpoints": [{"url": f"http://127.0.0.1:{up_port}"}]}],
                    "apis": [{"operationType": OP, "upstream": "backend", "path": "/profile"}],
                },
            }
        )
        (cfg / "bench.yaml").write_text(yaml.safe_dump_all(docs))
        env = {
            **os.environ,
            "MPAAS_CONFIG_SOURCE": "dir",
            "MPAAS_CONFIG_DIR": str(cfg),
            "MPAAS_PORT": str(gw_port),
            "MPAAS_HOST": "127.0.0.1",
            "MPAAS_LOG_LEVEL": "WARNING",
            "MPAAS_DIGEST_LOG": "false",
            "MPAAS_ADMIN_PORT": str(free_port()),
            "MPAAS_WORKERS": str(args.workers),
        }
        if args.workers > 1:  # workers share nonces and rate limits through Redis
            redis_port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            env["MPAAS_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        gateway = subprocess.Popen(
            [str(Path(sys.executable).parent / "mpaas"), "gateway"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(gateway)
        for port in (up_port, nginx_port):
            wait_http(f"http://127.0.0.1:{port}/")
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        time.sleep(1 + args.workers)  # every worker ready

        base = {"Content-Type": "application/json", "Operation-Type": OP, "WorkspaceId": "bench"}
        ts = str(int(time.time() * 1000))

        def signed(alg: str) -> dict[str, str]:
            msg = canonical("POST", "/mgw.htm", "", OP, alg.upper(), "bench", ts, "", BODY)
            sig = base64.b64encode(signer(alg, keys[alg][0])(msg)).decode()
            return {**base, "AppId": alg.upper(), "Ts": ts, "Sign": sig}

        def sealed(wrap: str, cipher: str) -> tuple[dict[str, str], bytes]:
            app_id = f"ENC{wrap.upper()}"
            key = os.urandom(envelope.KEY_BYTES)
            body = envelope.seal(cipher, key, BODY, envelope.aad(app_id, OP))
            wrapped = base64.b64encode(envelope.wrap(wrap, gw_keys[wrap][1], key)).decode()
            return {**base, "AppId": app_id, "Mgw-Key-Type": wrap, "Mgw-Key": wrapped}, body

        gw = f"http://127.0.0.1:{gw_port}/mgw.htm"
        ecc_headers, ecc_body = sealed("EciesP256", "AesGcm")
        sm2_headers, sm2_body = sealed("Sm2", "Sm4Gcm")
        scenarios = [
            ("upstream direct", f"http://127.0.0.1:{up_port}/profile", base),
            ("nginx proxy_pass", f"http://127.0.0.1:{nginx_port}/profile", base),
            ("gateway plain", gw, {**base, "AppId": "PLAIN"}),
            ("gateway HMAC-SHA256", gw, signed("HmacSha256")),
            ("gateway ECDSA P-256", gw, signed("EcdsaP256")),
            ("gateway SM2", gw, signed("Sm2")),
            ("gateway ECC-encrypted", gw, ecc_headers, ecc_body),
            ("gateway SM2-encrypted", gw, sm2_headers, sm2_body),
        ]
        if args.only:
            words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
            always = ("upstream direct", "gateway plain")
            scenarios = [s for s in scenarios if s[0] in always or any(w in s[0].lower() for w in words)]
        for name, url, headers, *body in scenarios[1:]:  # every gateway scenario must really succeed
            if not name.startswith("gateway"):
                continue
            r = httpx.post(url, content=body[0] if body else BODY, headers=headers)
            assert r.headers.get("result-status") == "1000", (name, r.headers)
        # Rounds in rotation, the median round per scenario: the machine's other load drifts over minutes,
        # and a ratio of two runs taken far apart would measure that drift.
        pids = {"upstream direct": procs[0].pid, "nginx proxy_pass": None}
        rounds: dict[str, list[Result]] = {name: [] for name, *_ in scenarios}
        for _ in range(args.rounds):
            for name, url, headers, *body in scenarios:
                pid = pids.get(name, gateway.pid)
                rounds[name].append(
                    wrk(name, url, headers, args.seconds, args.connections, tmp, body[0] if body else BODY, pid)
                )
        results = {name: sorted(rs, key=lambda r: r.rps)[len(rs) // 2] for name, rs in rounds.items()}

        plain = results["gateway plain"].rps
        half = plain / 2
        direct_p99s, gw_p99s, achieved, own_p99s = [], [], [], []
        for _ in range(0 if args.no_latency else args.rounds):
            direct_p99s.append(paced("direct", scenarios[0][1], base, half, args.seconds, tmp)[1])
            before = added_buckets(gw_port)
            rate, p99 = paced("gateway", gw, {**base, "AppId": "PLAIN"}, half, args.seconds, tmp)
            own_p99s.append(bucket_p99(before, added_buckets(gw_port)))
            gw_p99s.append(p99)
            achieved.append(rate)

        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        )
        loaded = compiled.loaded_compiled()
        hot = (
            "compiled (mypyc; C signature verification)"
            if all(loaded.values())
            else "NOT ALL COMPILED (hack/bootstrap --test): " + ", ".join(m for m, ok in loaded.items() if not ok)
        )
        print(
            f"machine: {os.cpu_count()} cores, {cpu}; wrk -t1 -c{args.connections} -d{args.seconds}s, "
            f"median of {args.rounds} rounds; gateway hot modules {hot}"
        )
        print(f"{'scenario':<24}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'server CPU us/req (sys)':>26}")
        for r in results.values():
            cpu_us = f"{r.cpu_us:.0f} ({r.sys_us:.0f})" if r.cpu_us is not None else "-"
            print(f"{r.name:<24}{r.rps:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>8}{cpu_us:>26}")
        checks = [
            ("plain / upstream direct", "gateway plain", "upstream direct", 0.5),
            ("ECDSA-signed / plain", "gateway ECDSA P-256", "gateway plain", 0.5),
            ("SM2-signed / plain", "gateway SM2", "gateway plain", 0.3),
            ("HMAC-signed / plain", "gateway HMAC-SHA256", "gateway plain", None),
            ("ECC-encrypted / plain", "gateway ECC-encrypted", "gateway plain", None),
            ("SM2-encrypted / plain", "gateway SM2-encrypted", "gateway plain", None),
            ("plain / nginx proxy_pass", "gateway plain", "nginx proxy_pass", None),
        ]
        for label, numerator, denominator, target in checks:
            if numerator not in results or denominator not in results:
                continue
            ratio = results[numerator].rps / results[denominator].rps
            verdict = "" if target is None else f"  target >= {target}: {'PASS' if ratio >= target else 'FAIL'}"
            print(f"{label:<28}{ratio:>6.2f}{verdict}")
        if args.no_latency:
            return 0
        p99_direct, p99_gw = sorted(direct_p99s)[args.rounds // 2], sorted(gw_p99s)[args.rounds // 2]
        added = p99_gw - p99_direct
        # The load generator shares the two cores: when the direct path alone shows a p99 far above
        # what wrk saw at full load, the figure measures the machine's scheduling, not the gateway.
        noisy = added < 0 or p99_direct > 4 * results["upstream direct"].p99_ms
        verdict = "UNRELIABLE (machine noise)" if noisy else ("PASS" if added <= 2 else "FAIL")
        rate = sorted(achieved)[args.rounds // 2]
        print(f"p99 at half of plain max ({half:.0f} rps asked, {rate:.0f} sent; paced wrk, median of {args.rounds}):")
        print(
            f"  direct {p99_direct:.2f} ms, gateway {p99_gw:.2f} ms -> added {added:.2f} ms  target <= 2 ms: {verdict}"
        )
        # The gateway's own count (mpaas_gateway_added_seconds): head parsed to answer ready, less the upstream.
        own = sorted(own_p99s)[args.rounds // 2]
        print(
            f"  in-process share (mpaas_gateway_added_seconds, without socket and queueing time): "
            f"p99 <= {own:g} ms{'' if own <= 2 else ' (over 2 ms)'}"
        )
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
