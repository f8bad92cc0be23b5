"""Memory the in-memory hot store spends on nonces, and proof that expired ones are given back.

    .venv/bin/python hack/bench/hotstore_memory.py [--nonces 1000000] [--ttl 600]

Stores N nonces the way the gateway does (`set_if_absent("nonce:<app>:<workspace>:<nonce>", ttl=...)`,
32 hex characters each, as the reference client sends), prints the Python memory they hold (tracemalloc)
and per nonce; then moves the store's clock past the TTL, stores N more, and prints the keys held and
memory again: the first N are gone, swept by the writes (mpaas.stores.hotstore.MemoryHotStore).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc

from mpaas.stores import MemoryHotStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fill(store: MemoryHotStore, n: int, ttl: float, clock: Clock) -> None:
    for _ in range(n):
        nonce = os.urandom(16).hex()
        if not await store.set_if_absent(f"nonce:DEMO_APP:prod:{nonce}", b"1", ttl_seconds=ttl):
            raise RuntimeError("a fresh nonce was refused")
        clock.now += ttl / n / 2  # the writes are spread over half the TTL


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nonces", type=int, default=1_000_000)
    ap.add_argument("--ttl", type=float, default=600.0, help="seconds (the gateway: twice the timestamp window)")
    args = ap.parse_args()
    clock = Clock()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = MemoryHotStore(clock=clock)
    started = time.perf_counter()
    await fill(store, args.nonces, args.ttl, clock)
    took = time.perf_counter() - started
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    print(
        f"{args.nonces} nonces: {mib(held)} ({held / args.nonces:.0f} bytes per nonce), "
        f"{took / args.nonces * 1e6:.2f} µs per write"
    )
    clock.now += args.ttl + 1  # every nonce so far has expired
    await fill(store, args.nonces, args.ttl, clock)
    gc.collect()
    again = tracemalloc.get_traced_memory()[0] - base
    print(f"after the TTL and {args.nonces} more: {len(store)} keys held, {mib(again)} (the expired ones removed)")
    return 0 if len(store) <= args.nonces + args.nonces // 100 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
