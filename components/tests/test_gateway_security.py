"""Signatures, replay protection, key rotation, rate limits over Redis, breakers, canaries, retries.

Gateway processes read their MpaasGateway and Secrets from the API server and
share Redis, as replicas in a cluster do.
"""

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import apply_yaml, closed_url, eventually, hits, kubectl, need_env
from mpaas.crypto import envelope
from mpaas.crypto.signing import generate_keypair
from mpaas.simulator import MobileClient
from tcpproxy import TcpProxy

pytestmark = pytest.mark.component
ALGORITHMS = ["HmacSha256", "EcdsaP256", "Rsa2048", "Sm2"]


def secret(name: str, **data: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def gateway(
    namespace: str,
    upstreams: dict[str, str],
    *,
    apps: list[dict[str, Any]] | None = None,
    apis: list[dict[str, Any]] | None = None,
    extra_upstreams: list[dict[str, Any]] | None = None,
) -> dict:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "MpaasGateway",
        "metadata": {"name": "gw", "namespace": namespace},
        "spec": {
            "apps": apps or [{"appId": "APP", "workspaceId": "prod"}],
            "upstreams": [
                {"name": "alpha", "endpoints": [{"url": upstreams["alpha"]}]},
                {"name": "beta", "endpoints": [{"url": upstreams["beta"]}]},
                *(extra_upstreams or []),
            ],
            "apis": apis or [{"operationType": "op.echo", "upstream": "alpha", "path": "/echo"}],
        },
    }


def signed_app(algorithm: str, **signature: Any) -> dict[str, Any]:
    return {
        "appId": "APP",
        "workspaceId": "prod",
        "credentialsSecretRef": {"name": "app-keys"},
        "signature": {"algorithm": algorithm, **signature},
    }


def code(r: httpx.Response) -> str:
    return r.headers["Result-Status"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signed_requests(
    algorithm: str, namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    private, public = generate_keypair(algorithm)
    key_field = "hmacKey" if algorithm == "HmacSha256" else "publicKey"
    url = start_gateway(
        namespace,
        gateway(namespace, upstreams, apps=[signed_app(algorithm, requireNonce=True)]),
        extra=[secret("app-keys", **{key_field: public})],
    )
    client = MobileClient(url, "APP", "prod", sign_algorithm=algorithm, sign_key=private)
    assert client.call("op.echo", {"hello": 1}).result_status == "1000"
    before = hits(upstreams["alpha"])

    payload = b'{"hello": 1}'
    good = client.headers("op.echo", payload)
    post = lambda body, h: httpx.post(url + "/mgw.htm", content=body, headers=h)  # noqa: E731
    assert code(post(b'{"hello": 2}', good)) == "7002"  # body changed after signing
    assert code(post(payload, {k: v for k, v in good.items() if k != "Sign"})) == "7001"
    assert code(post(payload, {**good, "Sign": "not base64!"})) == "7002"
    assert code(post(payload, {k: v for k, v in good.items() if k != "Ts"})) == "7003"
    stale = client.headers("op.echo", payload, extra={"Ts": str(int(time.time() * 1000) - 3_600_000)})
    assert code(post(payload, stale)) == "7004"
    assert code(post(payload, {k: v for k, v in good.items() if k != "Nonce"})) == "7005"
    other_private, _ = generate_keypair(algorithm)
    impostor = MobileClient(url, "APP", "prod", sign_algorithm=algorithm, sign_key=other_private)
    assert impostor.call("op.echo", {"hello": 1}).result_status == "7002"
    assert hits(upstreams["alpha"]) == before  # nothing refused reached the upstream

    assert code(post(payload, good)) == "1000"
    assert code(post(payload, good)) == "7006"  # the same nonce again
    metrics = httpx.get(url + "/metrics").text
    assert 'result="7002"' in metrics and 'result="7006"' in metrics


def test_nonces_are_shared_by_replicas(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    redis = {"MPAAS_REDIS_URL": need_env("MPAAS_TEST_REDIS_URL")}
    private, public = generate_keypair("HmacSha256")
    res = gateway(namespace, upstreams, apps=[signed_app("HmacSha256")])
    first = start_gateway(namespace, res, env=redis, extra=[secret("app-keys", hmacKey=public)])
    second = start_gateway(namespace, env=redis)
    client = MobileClient(first, "APP", "prod", sign_algorithm="HmacSha256", sign_key=private)
    h = client.headers("op.echo", b"{}")
    assert code(httpx.post(first + "/mgw.htm", content=b"{}", headers=h)) == "1000"
    assert code(httpx.post(second + "/mgw.htm", content=b"{}", headers=h)) == "7006"


async def test_key_rotation_keeps_the_old_key_for_the_overlap(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    old, new = b"k" * 32, b"n" * 32
    url = start_gateway(
        namespace,
        gateway(namespace, upstreams, apps=[{**signed_app("HmacSha256"), "keyOverlapSeconds": 4}]),
        extra=[secret("app-keys", hmacKey=old)],
    )
    old_client = MobileClient(url, "APP", "prod", sign_algorithm="HmacSha256", sign_key=old)
    new_client = MobileClient(url, "APP", "prod", sign_algorithm="HmacSha256", sign_key=new)
    assert old_client.call("op.echo").result_status == "1000"
    assert new_client.call("op.echo").result_status == "7002"
    apply_yaml(namespace, secret("app-keys", hmacKey=new))
    rotated = time.monotonic()
    await eventually(lambda: new_client.call("op.echo").result_status == "1000", timeout=5, what="the new key")
    assert old_client.call("op.echo").result_status == "1000"  # still inside the overlap
    await eventually(lambda: old_client.call("op.echo").result_status == "7002", timeout=10, what="old key expiry")
    assert time.monotonic() - rotated >= 3


async def test_deleting_the_secret_revokes_its_keys_at_once(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    """A leaked key withdrawn: deleting the Secret ends the overlap a rotation began, for every key in it."""
    old, new = b"k" * 32, b"n" * 32
    url = start_gateway(
        namespace,
        gateway(namespace, upstreams, apps=[{**signed_app("HmacSha256"), "keyOverlapSeconds": 300}]),
        extra=[secret("app-keys", hmacKey=old)],
    )
    old_client = MobileClient(url, "APP", "prod", sign_algorithm="HmacSha256", sign_key=old)
    new_client = MobileClient(url, "APP", "prod", sign_algorithm="HmacSha256", sign_key=new)
    assert old_client.call("op.echo").result_status == "1000"
    apply_yaml(namespace, secret("app-keys", hmacKey=new))
    await eventually(lambda: new_client.call("op.echo").result_status == "1000", timeout=5, what="the new key")
    assert old_client.call("op.echo").result_status == "1000"  # the rotation's overlap
    kubectl("delete", "secret", "app-keys", "-n", namespace)
    await eventually(lambda: new_client.call("op.echo").result_status == "7007", timeout=5, what="revocation")
    assert old_client.call("op.echo").result_status == "7007"  # the overlap ended with the Secret
    apply_yaml(namespace, secret("app-keys", hmacKey=new))
    await eventually(lambda: new_client.call("op.echo").result_status == "1000", timeout=5, what="the key back")
    assert old_client.call("op.echo").result_status == "7002"


async def test_rate_limit_is_shared_across_replicas(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    redis = {"MPAAS_REDIS_URL": need_env("MPAAS_TEST_REDIS_URL")}
    op = f"op.limited.{uuid.uuid4().hex[:6]}"
    apis = [{"operationType": op, "upstream": "alpha", "rateLimit": {"requestsPerSecond": 2, "burst": 10}}]
    first = start_gateway(namespace, gateway(namespace, upstreams, apis=apis), env=redis)
    second = start_gateway(namespace, env=redis)
    headers = {"Operation-Type": op, "AppId": "APP", "WorkspaceId": "prod"}
    async with httpx.AsyncClient() as http:
        started = time.monotonic()
        results = await asyncio.gather(
            *(http.post((first, second)[i % 2] + "/mgw.htm", headers=headers) for i in range(40))
        )
        elapsed = time.monotonic() - started
    passed = sum(code(r) == "1000" for r in results)
    limited = sum(code(r) == "1002" for r in results)
    assert passed + limited == 40
    # One shared bucket: the burst plus what refilled meanwhile, not twice that.
    assert 10 <= passed <= 10 + 2 * elapsed + 1, (passed, elapsed)


async def test_rate_limits_survive_a_redis_outage(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    redis_url = need_env("MPAAS_TEST_REDIS_URL")
    host_port, db = redis_url.removeprefix("redis://").split("/")
    host, port = host_port.split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    op = f"op.limited.{uuid.uuid4().hex[:6]}"
    apis = [{"operationType": op, "upstream": "alpha", "rateLimit": {"requestsPerSecond": 1, "burst": 3}}]
    url = start_gateway(
        namespace,
        gateway(namespace, upstreams, apis=apis),
        env={"MPAAS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db}"},
    )
    headers = {"Operation-Type": op, "AppId": "APP", "WorkspaceId": "prod"}
    try:
        async with httpx.AsyncClient() as http:

            async def burst(n: int) -> list[str]:
                return [code(await http.post(url + "/mgw.htm", headers=headers)) for _ in range(n)]

            assert "1002" in await burst(5)  # shared bucket in Redis (burst 3)
            await proxy.cut()
            during = await burst(6)
            assert "5000" not in during and "1000" in during and "1002" in during  # local buckets keep limiting
            metrics = (await http.get(url + "/metrics")).text
            assert "mpaas_gateway_hotstore_local_fallback 1.0" in metrics
            await proxy.restore()
            await asyncio.sleep(2)  # the retry delay after which Redis is tried again

            async def recovered() -> bool:
                await burst(1)
                return "mpaas_gateway_hotstore_local_fallback 0.0" in (await http.get(url + "/metrics")).text

            await eventually(recovered, timeout=10, interval=0.5, what="Redis used again")
    finally:
        await proxy.cut()


async def test_breaker_ejects_a_failing_endpoint_and_lets_it_back(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    breaker = {
        "errorThresholdPercent": 50,
        "minimumRequests": 4,
        "windowSeconds": 10,
        "ejectionSeconds": 3,
        "maxEjectionPercent": 50,
    }
    mixed = {
        "name": "mixed",
        "circuitBreaker": breaker,
        "endpoints": [{"url": upstreams["alpha"]}, {"url": upstreams["broken"]}],
    }
    all_broken = {
        "name": "dead",
        "circuitBreaker": breaker,
        "endpoints": [{"url": upstreams["broken"]}],
        "failoverUpstream": None,
    }
    all_broken.pop("failoverUpstream")
    apis = [
        {"operationType": "op.mixed", "upstream": "mixed", "path": "/echo"},
        {"operationType": "op.dead", "upstream": "dead", "path": "/echo"},
    ]
    url = start_gateway(namespace, gateway(namespace, upstreams, apis=apis, extra_upstreams=[mixed, all_broken]))
    headers = {"AppId": "APP", "WorkspaceId": "prod"}

    def call(op: str) -> str:
        return code(httpx.post(url + "/mgw.htm", headers={**headers, "Operation-Type": op}))

    # The endpoints are picked at random: call until the broken one has failed minimumRequests times.
    failures = 0
    for _ in range(200):
        failures += call("op.mixed") == "4003"
        if failures == breaker["minimumRequests"]:
            break
    assert failures == breaker["minimumRequests"]
    broken_hits = hits(upstreams["broken"])
    assert all(call("op.mixed") == "1000" for _ in range(15))  # ejected: out of rotation
    assert hits(upstreams["broken"]) == broken_hits
    await asyncio.sleep(breaker["ejectionSeconds"] + 0.5)  # ejection over: back in rotation, failing again
    after = [call("op.mixed") for _ in range(20)]
    assert hits(upstreams["broken"]) > broken_hits and "4003" in after
    # A cluster whose only endpoint is ejected fails fast without calling it.
    for _ in range(6):
        call("op.dead")
    before = hits(upstreams["broken"])
    assert call("op.dead") == "4004" and hits(upstreams["broken"]) == before


def test_failover_to_a_sibling_upstream(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    closed = closed_url()
    primary = {
        "name": "primary",
        "endpoints": [{"url": closed}],
        "failoverUpstream": "beta",
        "circuitBreaker": {"minimumRequests": 1, "errorThresholdPercent": 1, "ejectionSeconds": 60},
    }
    breaker = {"minimumRequests": 1, "errorThresholdPercent": 1, "ejectionSeconds": 60}
    dead = {"name": "dead", "endpoints": [{"url": upstreams["broken"]}], "circuitBreaker": breaker}
    slow = {"name": "slow", "endpoints": [{"url": upstreams["alpha"]}], "failoverUpstream": "dead"}
    apis = [
        {"operationType": "op.fo", "upstream": "primary", "path": "/echo", "retries": 1},
        {"operationType": "op.dead", "upstream": "dead", "path": "/echo"},
        {
            "operationType": "op.slow",
            "upstream": "slow",
            "path": "/slow",
            "method": "GET",
            "retries": 1,
            "timeoutMilliseconds": 300,
        },
    ]
    url = start_gateway(namespace, gateway(namespace, upstreams, apis=apis, extra_upstreams=[primary, dead, slow]))

    def call(op: str) -> httpx.Response:
        return httpx.post(url + "/mgw.htm", headers={"AppId": "APP", "WorkspaceId": "prod", "Operation-Type": op})

    r = call("op.fo")
    assert code(r) == "1000" and r.json()["upstream"] == "beta"
    # A failover upstream that cannot take the request either does not answer for it: with "dead" ejected,
    # the retry goes to "slow" once more and the client learns the real failure (a timeout), not 4004.
    assert code(call("op.dead")) == "4003"
    before = hits(upstreams["alpha"])
    assert code(call("op.slow")) == "4001"
    assert hits(upstreams["alpha"]) == before + 2


def test_cluster_groups_mix_by_weight_and_hand_over_to_siblings(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    clusters = [
        {
            "name": "down",
            "endpoints": [{"url": closed_url()}],
            "circuitBreaker": {"minimumRequests": 1, "errorThresholdPercent": 1, "ejectionSeconds": 60},
        },
        {"name": "narrow", "endpoints": [{"url": upstreams["alpha"]}], "maxConcurrency": 1},
        {"name": "mix", "clusters": [{"upstream": "alpha", "weight": 1000}, {"upstream": "beta", "weight": 3000}]},
        {"name": "dc", "clusters": [{"upstream": "down", "weight": 1000}, {"upstream": "beta", "weight": 1}]},
        # beta is a standby (weight 0): it takes only what narrow cannot.
        {"name": "spill", "clusters": [{"upstream": "narrow"}, {"upstream": "beta", "weight": 0}]},
    ]
    apis = [
        {"operationType": "op.mix", "upstream": "mix", "path": "/echo"},
        {"operationType": "op.dc", "upstream": "dc", "path": "/echo", "retries": 1},
        {"operationType": "op.spill", "upstream": "spill", "path": "/slow", "timeoutMilliseconds": 5000},
    ]
    url = start_gateway(namespace, gateway(namespace, upstreams, apis=apis, extra_upstreams=clusters))
    headers = {"AppId": "APP", "WorkspaceId": "prod"}

    def served_by(op: str) -> str:
        r = httpx.post(url + "/mgw.htm", headers={**headers, "Operation-Type": op})
        assert code(r) == "1000", r.headers
        return str(r.json()["upstream"])

    # Weights 1:3 between the clusters (binomial, n = 400: the ratio lands in [2.0, 4.7] with p > 0.999).
    mix = [served_by("op.mix") for _ in range(400)]
    assert 2.0 < mix.count("beta") / mix.count("alpha") < 4.7
    # The heavy cluster is down: its sibling takes every call, the first one (retried there) included.
    assert [served_by("op.dc") for _ in range(10)] == ["beta"] * 10

    async def burst() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=10) as http:
            rs = await asyncio.gather(
                *(http.post(url + "/mgw.htm", headers={**headers, "Operation-Type": "op.spill"}) for _ in range(3))
            )
        return sorted((code(r), r.json()["upstream"]) for r in rs)

    # narrow takes one call at a time; the standby takes the overflow instead of an overload answer (1004).
    assert asyncio.run(burst()) == [("1000", "alpha"), ("1000", "beta"), ("1000", "beta")]


def test_retries_move_to_another_endpoint(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    closed = closed_url()
    two = {"name": "two", "endpoints": [{"url": closed, "weight": 1000}, {"url": upstreams["alpha"], "weight": 1}]}
    apis = [
        {"operationType": "op.retry", "upstream": "two", "path": "/echo", "method": "GET", "retries": 2},
        {"operationType": "op.noretry", "upstream": "two", "path": "/echo", "method": "GET"},
    ]
    url = start_gateway(namespace, gateway(namespace, upstreams, apis=apis, extra_upstreams=[two]))
    headers = {"AppId": "APP", "WorkspaceId": "prod"}
    results = [code(httpx.post(url + "/mgw.htm", headers={**headers, "Operation-Type": "op.retry"})) for _ in range(10)]
    assert results == ["1000"] * 10
    without = [
        code(httpx.post(url + "/mgw.htm", headers={**headers, "Operation-Type": "op.noretry"})) for _ in range(10)
    ]
    assert "4002" in without


def test_canary_by_percent_and_by_rule(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    apis = [
        {
            "operationType": "op.pct",
            "upstream": "alpha",
            "path": "/echo",
            "canary": {"upstream": "beta", "percent": 30},
        },
        {
            "operationType": "op.rule",
            "upstream": "alpha",
            "path": "/echo",
            "canary": {"upstream": "beta", "rule": "APP_VERSION >= 2.0 && CITY IN (Hangzhou)"},
        },
    ]
    url = start_gateway(namespace, gateway(namespace, upstreams, apis=apis))
    base = {"AppId": "APP", "WorkspaceId": "prod"}
    with httpx.Client() as http:
        served = [
            http.post(url + "/mgw.htm", headers={**base, "Operation-Type": "op.pct", "Did": f"device-{i}"}).json()[
                "upstream"
            ]
            for i in range(600)
        ]
        share = served.count("beta") / len(served)
        assert 0.24 <= share <= 0.36, share
        sticky = {
            http.post(url + "/mgw.htm", headers={**base, "Operation-Type": "op.pct", "Did": "device-7"}).json()[
                "upstream"
            ]
            for _ in range(5)
        }
        assert len(sticky) == 1  # a device stays on its side

        def via(**h: str) -> str:
            return str(
                http.post(url + "/mgw.htm", headers={**base, "Operation-Type": "op.rule", **h}).json()["upstream"]
            )

        assert via(**{"App-Version": "2.1.0", "City": "hangzhou"}) == "beta"
        assert via(**{"App-Version": "1.9", "City": "Hangzhou"}) == "alpha"
        assert via(**{"App-Version": "2.1.0", "City": "Beijing"}) == "alpha"


def test_trace_context_reaches_the_upstream(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(namespace, gateway(namespace, upstreams))
    trace = uuid.uuid4().hex
    r = httpx.post(
        url + "/mgw.htm",
        headers={
            "AppId": "APP",
            "WorkspaceId": "prod",
            "Operation-Type": "op.echo",
            "traceparent": f"00-{trace}-{'1' * 16}-01",
        },
    )
    assert r.headers["Mgw-TraceId"] == trace
    sent = r.json()["headers"]["traceparent"]
    assert sent.startswith(f"00-{trace}-") and sent != f"00-{trace}-{'1' * 16}-01" and sent.endswith("-01")
    assert r.json()["headers"]["mgw-traceid"] == trace


def test_malformed_json_is_refused(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    url = start_gateway(namespace, gateway(namespace, upstreams))
    before = hits(upstreams["alpha"])
    r = httpx.post(
        url + "/mgw.htm",
        content=b'{"a": ',
        headers={
            "AppId": "APP",
            "WorkspaceId": "prod",
            "Operation-Type": "op.echo",
            "Content-Type": "application/json",
        },
    )
    assert code(r) == "3004" and hits(upstreams["alpha"]) == before
    proto = {
        "AppId": "APP",
        "WorkspaceId": "prod",
        "Operation-Type": "op.echo",
        "Content-Type": "application/x-protobuf",
    }
    assert code(httpx.post(url + "/mgw.htm", content=bytes.fromhex("0896"), headers=proto)) == "3004"
    ok = httpx.post(url + "/mgw.htm", content=bytes.fromhex("089601"), headers=proto)
    assert code(ok) == "1000" and hits(upstreams["alpha"]) == before + 1


@pytest.mark.parametrize(("wrap", "cipher"), [("RsaOaep", "AesGcm"), ("EciesP256", "AesGcm"), ("Sm2", "Sm4Gcm")])
def test_encrypted_bodies(
    wrap: str, cipher: str, namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    gw_private, gw_public = envelope.generate_gateway_key(wrap)
    sign_private, sign_public = generate_keypair("Sm2" if wrap == "Sm2" else "EcdsaP256")
    app = {
        **signed_app("Sm2" if wrap == "Sm2" else "EcdsaP256"),
        "encryption": {"mode": "Required", "keyWraps": [wrap], "cipher": cipher},
    }
    keys = secret("app-keys", publicKey=sign_public, **{envelope.SECRET_KEYS[wrap]: gw_private})
    url = start_gateway(namespace, gateway(namespace, upstreams, apps=[app]), extra=[keys])
    client = MobileClient(
        url,
        "APP",
        "prod",
        sign_algorithm=app["signature"]["algorithm"],
        sign_key=sign_private,
        encrypt=(wrap, gw_public, cipher),
    )
    call = client.call("op.echo", {"card": "6222 0000 1111 2222"})
    assert call.result_status == "1000", call
    assert call.response["body"] == '{"card": "6222 0000 1111 2222"}'  # the upstream saw the plaintext
    assert "mgw-key" not in call.response["headers"]

    payload = b'{"card": "x"}'
    sealed, key_headers, _ = client.seal("op.echo", payload)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    h = client.headers("op.echo", tampered, extra=key_headers)  # correctly signed, but the seal is broken
    assert code(httpx.post(url + "/mgw.htm", content=tampered, headers=h)) == "7010"
    plain = MobileClient(url, "APP", "prod", sign_algorithm=app["signature"]["algorithm"], sign_key=sign_private)
    assert plain.call("op.echo", {"a": 1}).result_status == "7011"


async def test_gateway_key_rotation_keeps_the_old_key_for_the_overlap(
    namespace: str, upstreams: dict[str, str], start_gateway: Callable[..., str]
) -> None:
    old_private, old_public = envelope.generate_gateway_key("EciesP256")
    new_private, new_public = envelope.generate_gateway_key("EciesP256")
    app = {
        "appId": "APP",
        "workspaceId": "prod",
        "credentialsSecretRef": {"name": "app-keys"},
        "keyOverlapSeconds": 4,
        "encryption": {"mode": "Required", "keyWraps": ["EciesP256"]},
    }
    url = start_gateway(
        namespace, gateway(namespace, upstreams, apps=[app]), extra=[secret("app-keys", ecPrivateKey=old_private)]
    )
    old_client = MobileClient(url, "APP", "prod", encrypt=("EciesP256", old_public, "AesGcm"))
    new_client = MobileClient(url, "APP", "prod", encrypt=("EciesP256", new_public, "AesGcm"))
    assert old_client.call("op.echo", {"n": 1}).result_status == "1000"
    assert new_client.call("op.echo", {"n": 1}).result_status == "7010"
    apply_yaml(namespace, secret("app-keys", ecPrivateKey=new_private))
    rotated = time.monotonic()
    await eventually(lambda: new_client.call("op.echo", {"n": 2}).result_status == "1000", timeout=5)
    assert old_client.call("op.echo", {"n": 3}).result_status == "1000"  # inside the overlap
    await eventually(lambda: old_client.call("op.echo", {"n": 4}).result_status == "7010", timeout=10)
    assert time.monotonic() - rotated >= 3
