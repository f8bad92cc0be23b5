"""A randomized run against the gateway's production server over real sockets, within a time budget.

The regression corpus (test_gateway_hardening.py) pins known cases; this run mutates them anew each
time: headers repeated, dropped or reordered, numbers replaced by non-ASCII digits and huge ones,
Content-Length and Transfer-Encoding mixed, bytes flipped, the request cut short or sent in pieces.
Whatever arrives, the gateway must answer with an HTTP status of its own server or a documented result
code (never an internal error), must never let a second copy of an identity header reach the upstream,
and must keep serving. The seed is printed on failure: MPAAS_FUZZ_SEED=<seed> replays the run.
"""

import asyncio
import os
import random
import time

import pytest
from test_gateway_hardening import CORPUS, OPEN, Upstream, answer, exchange, gw, rpc  # noqa: F401 (gw: fixture)

from mpaas.gateway import codes
from mpaas.http1 import Server

pytestmark = pytest.mark.unit

BUDGET_SECONDS = float(os.environ.get("MPAAS_FUZZ_SECONDS", "15"))
CLIENTS = 16
# What the server itself may answer: the request was malformed, too slow, too large, or the server is full.
SERVER_STATUSES = {"400", "404", "405", "408", "413", "414", "431", "501", "503", "505"}
DOCUMENTED = {str(c.code) for c in codes.ALL}
INTERNAL = {str(codes.BY_CODE[5000].code)} if 5000 in codes.BY_CODE else {"5000"}
NUMBER_HEADERS = ["Ts", "Did", "Uid", "App-Version", "Os-Version", "Content-Length"]
ODD_NUMBERS = ["\xb2", "\xb9\xb2", "1 2", "-1", "+7", "0x10", "9" * 40, "9" * 5000, "", " ", "1e3", "1.2.3." * 50]
IDENTITY = (b"appid", b"workspaceid", b"operation-type", b"x-user-id")


def mutate(rng: random.Random, seed_request: bytes) -> bytes:
    head, sep, body = seed_request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    request_line, headers = lines[0], lines[1:]
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and headers:  # repeat a header, same or another value
            h = rng.choice(headers)
            headers.insert(rng.randrange(len(headers) + 1), h if rng.random() < 0.5 else h + b"x")
        elif op == 1 and headers:  # drop one
            headers.pop(rng.randrange(len(headers)))
        elif op == 2:  # an odd number where the gateway reads one
            name = rng.choice(NUMBER_HEADERS)
            headers.append(f"{name}: {rng.choice(ODD_NUMBERS)}".encode("latin-1"))
        elif op == 3:  # framing conflicts
            headers.append(
                rng.choice([b"Transfer-Encoding: chunked", b"Content-Length: 0", b"Content-Length: 99", b"TE: x"])
            )
        elif op == 4:  # identity headers in other spellings and repeats
            name = rng.choice(
                [b"AppId", b"appid", b"APPID", b"App_Id", b"WorkspaceId", b"X-User-Id", b"Operation_Type"]
            )
            headers.append(name + b": " + rng.choice([b"PRIVILEGED", b"OPEN", b"w", b"admin.op", b"0"]))
        elif op == 5:  # flip a byte
            blob = bytearray(b"\r\n".join([request_line, *headers]))
            if blob:
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            request_line, *headers = bytes(blob).split(b"\r\n")
        elif op == 6:  # the version
            request_line = request_line.rsplit(b" ", 1)[0] + b" " + rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1"])
        elif op == 7:  # the body
            body = rng.choice([b"", b"{", b"[" * 300, b"{}" * 10, bytes(rng.randrange(256) for _ in range(50))])
        else:  # shuffle
            rng.shuffle(headers)
    data = b"\r\n".join([request_line, *headers]) + sep + body
    if rng.random() < 0.1:
        data = data[: rng.randrange(1, len(data) + 1)]  # cut short
    return data


async def send(port: int, data: bytes, *, pieces: bool) -> bytes | None:
    """Send `data`; what came back before the server closed or went quiet for 2 s (None: nothing, not closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        step = 7 if pieces else len(data) or 1
        for i in range(0, len(data), step):  # in pieces, as a slow mobile network delivers it
            writer.write(data[i : i + step])
            await writer.drain()
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 2)
            if not chunk:
                return got  # closed
            got += chunk
    except TimeoutError:
        return got or None  # kept alive after answering, or silent
    except ConnectionError:
        return got
    finally:
        writer.close()


def verdict(raw: bytes | None) -> str | None:
    """None when the answer is allowed, else what is wrong with it."""
    if raw is None:
        return "no answer within 2 s and the connection left open (the fixture's deadlines are 0.5 s)"
    if not raw:
        return None  # closed without an answer: allowed for a cut-short or garbled request
    if not raw.startswith(b"HTTP/1."):
        return f"not an HTTP answer: {raw[:80]!r}"
    got = answer(raw)
    if got in INTERNAL or got == "500":
        return f"internal error {got}"
    if got not in DOCUMENTED and got not in SERVER_STATUSES and got != "200":
        return f"undocumented answer {got}"
    return None


async def test_random_requests_get_documented_answers(gw: tuple[Server, Upstream]) -> None:  # noqa: F811
    server, upstream = gw
    port = server.port
    seed = int(os.environ.get("MPAAS_FUZZ_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    seeds = [data for _, data, _ in CORPUS if len(data) < 20_000]
    deadline, sent, problems = time.monotonic() + BUDGET_SECONDS, 0, []

    async def client(rng: random.Random) -> None:  # several at once: a quiet keep-alive costs 2 s
        nonlocal sent
        while time.monotonic() < deadline and len(problems) < 5:
            data = mutate(rng, rng.choice(seeds))
            raw = await send(port, data, pieces=rng.random() < 0.1)
            sent += 1
            if (why := verdict(raw)) is not None:
                problems.append(f"{why}\n  request: {data[:300]!r}")
            if sent % 50 == 0:  # still serving
                assert answer(await exchange(port, rpc(*OPEN))) == "1000", f"seed {seed}: the server stopped serving"

    await asyncio.gather(*(client(random.Random(rng.getrandbits(64))) for _ in range(CLIENTS)))
    for head in upstream.heads:  # the upstream never saw two copies of who is calling
        names = [line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")[1:] if b":" in line]
        for name in IDENTITY:
            if names.count(name) > 1:
                problems.append(f"the upstream got {name!r} twice\n  head: {head[:300]!r}")
    print(f"socket fuzz: seed {seed}, {sent} requests in {BUDGET_SECONDS:.0f} s")
    assert not problems, f"seed {seed} (MPAAS_FUZZ_SEED={seed} replays it), {sent} requests:\n" + "\n".join(problems)
    assert sent > 30 * BUDGET_SECONDS, f"only {sent} requests in {BUDGET_SECONDS} s"
    assert answer(await exchange(port, rpc(*OPEN))) == "1000"
