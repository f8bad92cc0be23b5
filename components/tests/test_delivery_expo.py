"""Expo Updates v1 against a delivery process: an `expo export` dist published with `mpaas delivery publish`,
manifests read with a multipart parser that is not the server's (the standard library's email parser), assets
downloaded and checked against the manifest's hashes, directives, code signing, and refusals."""

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import eventually
from mpaas import cli
from mpaas.delivery.expo import ExpoError, negotiate, parse_sfv

GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "shop"},
    "spec": {
        "apps": [{"appId": "SHOP", "workspaceId": "prod"}],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}
BUNDLE = b"var __BUNDLE_START_TIME__=1;/* hermes would be bytecode */"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(200)


def dist(folder: Path, bundle: bytes = BUNDLE) -> Path:
    """A dist folder as `expo export` writes it."""
    (folder / "_expo" / "static" / "js" / "android").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "_expo" / "static" / "js" / "android" / "index-1a2b.hbc").write_bytes(bundle)
    png = hashlib.md5(IMAGE, usedforsecurity=False).hexdigest()
    (folder / "assets" / png).write_bytes(IMAGE)
    metadata = {
        "version": 0,
        "bundler": "metro",
        "fileMetadata": {
            "android": {
                "bundle": "_expo/static/js/android/index-1a2b.hbc",
                "assets": [{"path": f"assets/{png}", "ext": "png"}],
            }
        },
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def parts(response: httpx.Response) -> dict[str, Message]:
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    raw = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.content
    msg = message_from_bytes(raw)
    assert msg.is_multipart()
    out = {}
    for part in msg.get_payload():  # type: ignore[union-attr]
        disposition = part["Content-Disposition"]
        assert disposition.startswith("inline; name=")
        out[disposition.split('"')[1]] = part
    return out


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


@pytest.mark.component
def test_an_expo_app_gets_its_update_assets_and_directives(
    start_delivery: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects, config = tmp_path / "objects", tmp_path / "config"
    config.mkdir()
    code = cli.main(
        ["delivery", "publish", str(dist(tmp_path / "dist")), "--app", "SHOP", "--workspace", "prod",
         "--platform", "Android", "--type", "Hotfix", "--version", "7", "--namespace", "shop",
         "--objects-url", f"file://{objects}"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    task = yaml.safe_load(out)
    task["spec"]["payload"] = {"runtimeVersion": "1.0.0", "extra": {"expoClient": {"name": "shop"}}}
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, task]))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "expo.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    url = start_delivery(config, f"file://{objects}", env={"MPAAS_EXPO_SIGNING_KEY_FILE": str(pem)})
    base = {
        "expo-protocol-version": "1",
        "expo-platform": "android",
        "expo-runtime-version": "1.0.0",
        "accept": "application/expo+json;q=0.9, application/json;q=0.8, multipart/mixed",
    }
    with httpx.Client(base_url=url, timeout=10) as client:

        def ask(**headers: str) -> httpx.Response:
            return client.get("/v1/delivery/expo/SHOP/prod", headers=base | headers)

        async def offered() -> bool:
            return "manifest" in parts(ask())

        asyncio.run(eventually(offered, timeout=20, what="the package verified"))
        r = ask()
        assert r.headers["expo-protocol-version"] == "1" and r.headers["expo-sfv-version"] == "0"
        assert r.headers["cache-control"] == "private, max-age=0"
        cohort = parse_sfv(r.headers["expo-server-defined-headers"])["mpaas-device"]
        manifest = json.loads(parts(r)["manifest"].get_payload())
        assert manifest["runtimeVersion"] == "1.0.0" and manifest["extra"] == {"expoClient": {"name": "shop"}}
        launch = manifest["launchAsset"]
        assert launch["hash"] == b64url_sha256(BUNDLE) and launch["contentType"] == "application/javascript"
        assert client.get(launch["url"]).content == BUNDLE
        (image,) = manifest["assets"]
        assert image["hash"] == b64url_sha256(IMAGE) and image["fileExtension"] == ".png"
        got = client.get(image["url"])
        assert got.content == IMAGE and got.headers["content-type"] == "image/png"
        assert "immutable" in got.headers["cache-control"]
        # The same device, told so by its server-defined header, already running it: nothing new.
        again = parts(ask(**{"mpaas-device": str(cohort), "expo-current-update-id": manifest["id"]}))
        assert json.loads(again["directive"].get_payload()) == {"type": "noUpdateAvailable"}
        assert ask(**{"expo-runtime-version": "2.0.0"}).status_code == 200  # another runtime: no update either
        assert "directive" in parts(ask(**{"expo-runtime-version": "2.0.0"}))
        # Protocol 0 says "nothing" with 204; JSON alone cannot carry a directive: 406.
        assert ask(**{"expo-protocol-version": "0", "expo-current-update-id": manifest["id"]}).status_code == 204
        assert ask(**{"accept": "application/expo+json", "expo-current-update-id": manifest["id"]}).status_code == 406
        plain = ask(accept="application/expo+json")
        assert plain.headers["content-type"] == "application/expo+json" and plain.json()["id"] == manifest["id"]
        # Code signing: the signature over the part's body, with the key the app's certificate holds.
        signed = parts(ask(**{"expo-expect-signature": 'sig, keyid="main", alg="rsa-v1_5-sha256"'}))["manifest"]
        signature = parse_sfv(signed["expo-signature"])
        assert signature["keyid"] == "main"
        body = signed.get_payload().encode()
        key.public_key().verify(base64.b64decode(str(signature["sig"])), body, padding.PKCS1v15(), hashes.SHA256())
        # Refusals.
        assert ask(**{"expo-platform": "web"}).status_code == 400
        assert ask(accept="text/html").status_code == 406
        assert client.get("/v1/delivery/expo/NOPE/prod", headers=base).status_code == 404
        assert client.get("/v1/delivery/expo/assets/" + "0" * 64 + "/" + "1" * 64).status_code == 404
        # Rolled back: the device running it is told to go back to the embedded update.
        task["spec"]["rollback"] = True
        (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, task]))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = parts(ask(**{"expo-current-update-id": manifest["id"]}))
            if "directive" in answer and json.loads(answer["directive"].get_payload())["type"] == "rollBackToEmbedded":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no rollBackToEmbedded after the rollback")


@pytest.mark.unit
def test_accept_and_structured_headers() -> None:
    assert negotiate("application/expo+json;q=0.9, application/json;q=0.8, multipart/mixed") == "multipart/mixed"
    assert negotiate("application/expo+json") == "application/expo+json"
    assert negotiate("*/*") == "multipart/mixed"
    assert negotiate("text/html, multipart/mixed;q=0") is None
    assert negotiate("multipart/mixed;q=\uff10.5, application/json") == "application/json"  # odd digits: q 0
    assert parse_sfv('sig, keyid="root", alg="rsa-v1_5-sha256"') == {
        "sig": True,
        "keyid": "root",
        "alg": "rsa-v1_5-sha256",
    }
    assert parse_sfv('a=1, b=2.5, c="x\\"y"') == {"a": 1, "b": 2.5, "c": 'x"y'}
    for bad in ("A=1", 'k="unterminated', "k=1e9", "k=" + "9" * 20, ",", "x" * 2000):
        with pytest.raises(ExpoError):
            parse_sfv(bad)


def bspatch(old: bytes, patch: bytes) -> bytes:
    """A BSDIFF40 patch applied as Colin Percival's bspatch 4.x applies it, written here from the format alone
    (not the server's library): what Expo's clients run (BSPatch)."""
    import bz2

    def offtin(b: bytes) -> int:
        n = int.from_bytes(b[:7] + bytes([b[7] & 0x7F]), "little")
        return -n if b[7] & 0x80 else n

    assert patch[:8] == b"BSDIFF40"
    ctrl_len, diff_len, size = offtin(patch[8:16]), offtin(patch[16:24]), offtin(patch[24:32])
    ctrl = bz2.decompress(patch[32 : 32 + ctrl_len])
    diff = bz2.decompress(patch[32 + ctrl_len : 32 + ctrl_len + diff_len])
    extra = bz2.decompress(patch[32 + ctrl_len + diff_len :])
    new = bytearray()
    old_pos = c = d = e = 0
    while len(new) < size:
        x, y, z = (offtin(ctrl[c + 8 * i : c + 8 * i + 8]) for i in range(3))
        c += 24
        for i in range(x):
            at = old_pos + i
            new.append((diff[d + i] + (old[at] if 0 <= at < len(old) else 0)) & 0xFF)
        d += x
        old_pos += x
        new += extra[e : e + y]
        e += y
        old_pos += z
    return bytes(new)


@pytest.mark.component
def test_an_expo_client_that_runs_the_earlier_update_gets_a_bsdiff_patch_of_the_bundle(
    start_delivery: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from mpaas.api.delivery import Package
    from mpaas.delivery import diffs
    from mpaas.delivery.expo import update_id
    from mpaas.stores import LocalObjectStore

    objects, config = tmp_path / "objects", tmp_path / "config"
    config.mkdir()
    old_bundle = os.urandom(300_000)
    new_bundle = old_bundle[:100_000] + b"function fixed(){return 1}" + old_bundle[100_050:]
    tasks = []
    for version, bundle in (("7", old_bundle), ("8", new_bundle)):
        code = cli.main(
            ["delivery", "publish", str(dist(tmp_path / f"dist-{version}", bundle)), "--app", "SHOP",
             "--workspace", "prod", "--platform", "Android", "--type", "Hotfix", "--version", version,
             "--namespace", "shop", "--objects-url", f"file://{objects}"]
        )  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0, err
        task = yaml.safe_load(out)
        task["metadata"]["name"] = f"v{version}"
        task["spec"]["payload"] = {"runtimeVersion": "1.0.0"}
        tasks.append(task)
    old, new = (Package.model_validate(t["spec"]["package"]) for t in tasks)
    # The operator's builder: two Expo dists give a bsdiff of their Android bundles.
    built = asyncio.run(
        diffs.build_to_store(
            LocalObjectStore(str(objects)),
            old,
            new,
            diffs.HDIFFPATCH,
            max_bytes=1 << 30,
            platform="Android",
            resource_type="Hotfix",
        )
    )
    assert built.format == diffs.EXPO_BSDIFF and built.uri.endswith(".android.bsdiff")  # one platform's bundle
    tasks[1]["status"] = {"diffPackages": [built.entry(old, "shop/v7")]}
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, *tasks]))
    url = start_delivery(config, f"file://{objects}")
    running = update_id(old.sha256, "android")
    base = {"expo-protocol-version": "1", "expo-platform": "android", "expo-runtime-version": "1.0.0",
            "accept": "multipart/mixed", "expo-current-update-id": running}  # fmt: skip
    with httpx.Client(base_url=url, timeout=10) as client:

        def offered() -> bool:
            got = parts(client.get("/v1/delivery/expo/SHOP/prod", headers=base))
            return "manifest" in got and json.loads(got["manifest"].get_payload())["id"] != running

        asyncio.run(eventually(offered, timeout=20, what="the packages verified"))
        manifest = json.loads(parts(client.get("/v1/delivery/expo/SHOP/prod", headers=base))["manifest"].get_payload())
        launch = manifest["launchAsset"]
        # As Expo's FileDownloader asks for the launch asset of the update it downloads.
        asking = {"A-IM": "bsdiff", "Expo-Current-Update-ID": running, "Expo-Requested-Update-ID": manifest["id"]}
        r = client.get(launch["url"], headers=asking)
        assert r.status_code == 226 and r.headers["im"] == "bsdiff" and r.headers["expo-base-update-id"] == running
        assert r.headers["cache-control"] == "private, no-store" and len(r.content) < len(new_bundle) // 10
        patched = bspatch(old_bundle, r.content)
        assert patched == new_bundle and b64url_sha256(patched) == launch["hash"]
        # Anything else gets the whole bundle: no A-IM, q=0, another base, another target, a HEAD.
        for headers in (
            {},
            asking | {"A-IM": "bsdiff;q=0"},
            asking | {"Expo-Current-Update-ID": update_id("0" * 64, "android")},
            asking | {"Expo-Requested-Update-ID": running},
        ):
            whole = client.get(launch["url"], headers=headers)
            assert whole.status_code == 200 and whole.content == new_bundle, headers
            assert "im" not in whole.headers and "A-IM" in whole.headers["vary"]
        assert client.head(launch["url"], headers=asking).status_code == 200
        metrics = client.get("/metrics").text
        assert 'mpaas_delivery_expo_answers_total{answer="patch"} 1.0' in metrics
        assert 'mpaas_delivery_offers_total{app="SHOP",stage="0",type="Hotfix",version="8"}' in metrics
