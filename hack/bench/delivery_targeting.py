"""The update-check decision with 1 000 live DeliveryTasks and a 100 000-entry whitelist, on one core.

    .venv/bin/python hack/bench/delivery_targeting.py [--tasks 1000] [--apps 100] [--whitelist 100000]
        [--checks 200000]

What it measures: `Catalog.candidates` plus `choose` (the seat of a capped window in the in-process sets)
for clients drawn at random, the same decision an update check makes, without HTTP or a store round trip.
The tasks spread over `--apps` apps (so a shelf holds tasks/apps releases, newest first); each has a percent
stage, city, network and app-version filters, and every fifth a gray rule; one release of the busiest app
carries the whitelist (a set of 100 000 device ids, as a whitelist loaded by reference would compile to).
Prints checks per second, p50/p99 per check, and the ratio against mPaaS MDS's published 3 000 checks/s on
4 cores (750 per core). The check over HTTP is measured with the delivery service, not here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import time

from mpaas.api import DELIVERY_TASK
from mpaas.config import Resource
from mpaas.delivery.targeting import Catalog, Client, Seats, choose, compile_catalog
from mpaas.stores.sets import MemoryMemberSets

PEER_PER_CORE = 3000 / 4
CITIES = ["Hangzhou", "Shanghai", "Beijing", "Shenzhen", "Chengdu", "Wuhan"]


def build(tasks: int, apps: int, whitelist: int) -> Catalog:
    rng = random.Random(7)
    resources = {}
    for i in range(tasks):
        app = f"APP{i % apps:03d}"
        targeting: dict[str, object] = {
            "percent": rng.choice([1, 5, 10, 20, 50, 100]),
            "filters": {
                "cities": rng.sample(CITIES, 3),
                "networks": ["Wifi", "4G"],
                "appVersion": {"min": "1.0", "max": f"{3 + i % 5}.9"},
            },
        }
        if i % 5 == 0:
            targeting["rule"] = "DEVICE_ID MOD 1000 IN (0..700) && !(BRAND IN (Acme))"
        body = {
            "metadata": {
                "name": f"t{i}",
                "namespace": "bench",
                "uid": f"u{i}",
                "creationTimestamp": "2026-11-01T00:00:00Z",
            },
            "spec": {
                "appId": app,
                "workspaceId": "prod",
                "platform": "Android",
                "resourceType": "AppUpgrade",
                "package": {
                    "uri": f"s3://p/{i}",
                    "version": f"{4 + i // apps}.0.{i}",
                    "sha256": "a" * 64,
                    "sizeBytes": 1,
                },
                "targeting": targeting,
            },
            "status": {"conditions": [{"type": "PackageVerified", "status": "True"}]},
        }
        spec = DELIVERY_TASK.parse_spec(body)
        resources[("bench", f"t{i}")] = Resource("DeliveryTask", "bench", f"t{i}", 1, "1", spec, body)
    catalog = compile_catalog({"DeliveryTask": resources})
    shelf = ("APP000", "prod", "Android", "AppUpgrade")
    listed = catalog.shelves[shelf][0]
    ids = frozenset(f"dev-{n}" for n in range(0, whitelist * 10, 10))
    catalog.shelves[shelf] = (dataclasses.replace(listed, devices=ids), *catalog.shelves[shelf][1:])
    return catalog


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    catalog = build(args.tasks, args.apps, args.whitelist)
    print(f"compiled {len(catalog)} releases in {time.perf_counter() - started:.2f} s")
    rng = random.Random(11)
    clients = [
        Client(
            f"APP{rng.randrange(args.apps):03d}",
            "prod",
            "Android",
            f"dev-{rng.randrange(args.whitelist * 20)}",
            app_version=f"{rng.randint(1, 4)}.{rng.randint(0, 9)}",
            city=rng.choice(CITIES),
            network=rng.choice(["Wifi", "4G", "5G"]),
            brand=rng.choice(["Acme", "Zeta", "Nova"]),
        )
        for _ in range(10_000)
    ]
    seats = Seats(MemoryMemberSets())
    now = time.time()
    times = []
    offered = 0
    clock = time.perf_counter
    begin = clock()
    for i in range(args.checks):
        c = clients[i % len(clients)]
        t0 = clock()
        if await choose(catalog, seats, c, "AppUpgrade", now) is not None:
            offered += 1
        times.append(clock() - t0)
    wall = clock() - begin
    rate = args.checks / wall
    q = statistics.quantiles(times, n=100)
    print(
        f"{args.checks} checks in {wall:.2f} s: {rate:,.0f} checks/s on one core; {offered / args.checks:.0%} offered"
    )
    print(f"per check: p50 {q[49] * 1e6:.1f} us, p99 {q[98] * 1e6:.1f} us")
    ratio = rate / PEER_PER_CORE
    print(f"target >= 5 000 checks/s, p99 <= 5 ms; ratio to mPaaS MDS per core ({PEER_PER_CORE:.0f}/s): {ratio:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--apps", type=int, default=100)
    p.add_argument("--whitelist", type=int, default=100_000)
    p.add_argument("--checks", type=int, default=200_000)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
