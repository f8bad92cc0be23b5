"""Update checks over HTTP: one delivery process on one core, 1 000 live DeliveryTasks, wrk on the other core.

    .venv/bin/python hack/bench/delivery_checks.py [--tasks 1000] [--apps 100] [--seconds 8] [--rate 5000]

Starts on 127.0.0.1, and stops at the end: `mpaas delivery` pinned to core 0 (taskset), reading the tasks
from a folder (every fifth with a gray rule, one with a 10 000-entry whitelist, the most a task lists) and
their packages from a local folder store (verified by the process at start). Load: wrk on core 1, each
request a different device of a random app (a Lua `request()`), first as fast as it goes (32 connections),
then paced at `--rate` checks/s for the p99 at that rate. Prints both, and the ratio against mPaaS MDS's
published 3 000 checks/s on 4 cores (750 per core). Needs wrk (the Debian package, installed when missing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PEER_PER_CORE = 3000 / 4
CITIES = ["Hangzhou", "Shanghai", "Beijing", "Shenzhen"]

REQUEST_LUA = """
math.randomseed(7)
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"appId":"APP%03d","workspaceId":"prod","platform":"Android","deviceId":"dev-%d","appVersion":"%d.%d",'
    .. '"city":"%s","network":"Wifi","brand":"Zeta","resources":[{"type":"AppUpgrade"},{"type":"Switch"}]}',
    math.random(0, APPS - 1), n, math.random(1, 4), math.random(0, 9), CITIES[math.random(1, 4)])
  return wrk.format("POST", "/v1/delivery/check", {["Content-Type"] = "application/json"}, body)
end
"""

PACED_LUA = """
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


def write_config(folder: Path, objects: Path, tasks: int, apps: int) -> None:
    pkg = b"package bytes"
    sha = hashlib.sha256(pkg).hexdigest()
    (objects / "p").mkdir(parents=True)
    docs: list[dict[str, object]] = [
        {  # a gateway registers at most 64 apps
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "MpaasGateway",
            "metadata": {"name": f"apps-{g}", "namespace": "bench"},
            "spec": {
                "apps": [{"appId": f"APP{a:03d}", "workspaceId": "prod"} for a in range(g, min(g + 50, apps))],
                "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
            },
        }
        for g in range(0, apps, 50)
    ]
    for i in range(tasks):
        (objects / "p" / f"{i}.bin").write_bytes(pkg)
        targeting: dict[str, object] = {
            "percent": [1, 5, 10, 20, 50, 100][i % 6],
            "filters": {"cities": CITIES[: 1 + i % 4], "networks": ["Wifi", "4G"], "appVersion": {"max": "3.9"}},
        }
        if i % 5 == 0:
            targeting["rule"] = "DEVICE_ID MOD 1000 IN (0..700) && !(BRAND IN (Acme))"
        if i == 0:
            targeting["whitelist"] = {"deviceIds": [f"dev-{n}" for n in range(0, 100_000, 10)]}
        docs.append(
            {
                "apiVersion": "mpaas.io/v1alpha1",
                "kind": "DeliveryTask",
                "metadata": {"name": f"t{i}", "namespace": "bench", "creationTimestamp": "2026-11-01T00:00:00Z"},
                "spec": {
                    "appId": f"APP{i % apps:03d}",
                    "workspaceId": "prod",
                    "platform": "Android",
                    "resourceType": "AppUpgrade",
                    "package": {
                        "uri": f"s3://local/p/{i}.bin",
                        "version": f"4.0.{i}",
                        "sha256": sha,
                        "sizeBytes": len(pkg),
                    },
                    "targeting": targeting,
                },
            }
        )
    (folder / "tasks.yaml").write_text(yaml.safe_dump_all(docs))


def run_wrk(script: Path, seconds: int, connections: int, url: str) -> tuple[float, float, int]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    assert p99 is not None, out
    ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, ms, int(bad.group(1)) if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--apps", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rate", type=int, default=5000)
    args = ap.parse_args()
    if not shutil.which("wrk"):  # as hack/bench/gateway.py does: the Debian package
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="mpaas-bench-delivery-"))
    config, objects = tmp / "config", tmp / "objects"
    config.mkdir()
    write_config(config, objects, args.tasks, args.apps)
    port = 18081
    env = {
        **os.environ,
        "MPAAS_PORT": str(port),
        "MPAAS_HOST": "127.0.0.1",
        "MPAAS_CONFIG_SOURCE": "dir",
        "MPAAS_CONFIG_DIR": str(config),
        "MPAAS_OBJECTS_URL": f"file://{objects}",
        "MPAAS_LOG_LEVEL": "WARNING",
    }
    mpaas = str(Path(sys.executable).parent / "mpaas")
    log = (tmp / "delivery.log").open("wb")
    proc = subprocess.Popen(["taskset", "-c", "0", mpaas, "delivery"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        probe = {"appId": "APP000", "workspaceId": "prod", "platform": "Android", "deviceId": "dev-0"}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # ready, and the whitelisted device offered: the packages verified
            try:
                r = httpx.post(url + "/v1/delivery/check", json=probe | {"appVersion": "1.0"}, timeout=2)
                if r.status_code == 200 and r.json()["items"][0]["update"]:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp / "delivery.log").read_text()
            time.sleep(0.5)
        else:
            raise SystemExit("delivery never offered the whitelisted device its release")
        lua = REQUEST_LUA.replace("APPS", str(args.apps)).replace(
            "CITIES[", "({" + ",".join(json.dumps(c) for c in CITIES) + "})["
        )
        fast = tmp / "fast.lua"
        fast.write_text(lua)
        paced = tmp / "paced.lua"
        paced.write_text(lua + PACED_LUA.replace("PERIOD_MS", f"{1000 / args.rate:.4f}"))
        run_wrk(fast, 2, 32, url)  # warm-up
        rps, p99_max, bad = run_wrk(fast, args.seconds, 32, url)
        paced_rps, paced_p99, paced_bad = run_wrk(paced, args.seconds, 32, url)
        print(f"{args.tasks} tasks over {args.apps} apps; a whitelist of 10 000 devices; server on one core")
        print(f"maximum: {rps:,.0f} checks/s (p99 {p99_max:.2f} ms at saturation), {bad} errors")
        print(f"paced at {args.rate}/s: {paced_rps:,.0f} checks/s, p99 {paced_p99:.2f} ms, {paced_bad} errors")
        print(
            f"target >= 5 000 checks/s at p99 <= 5 ms; ratio to mPaaS MDS per core ({PEER_PER_CORE:.0f}/s): "
            f"{rps / PEER_PER_CORE:.1f}"
        )
        return 0
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
