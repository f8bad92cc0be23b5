"""`mpaas delivery publish`: packages as real tools make them go to the object store, content-addressed, and the
DeliveryTask that releases them comes out valid, signed when asked, and verifiable."""

import asyncio
import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mpaas import cli
from mpaas.api import DELIVERY_TASK
from mpaas.delivery import packages
from mpaas.stores import LocalObjectStore

pytestmark = pytest.mark.unit


def apk(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("AndroidManifest.xml", b"\x03\x00\x08\x00binary manifest")
        z.writestr("classes.dex", b"dex\n035\x00" + bytes(1000))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["delivery", "publish", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_apk_is_stored_by_its_sha256_and_its_task_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "objects"
    package = apk(tmp_path / "shop-2.1.0.apk")
    code, out, err = run(
        capsys,
        str(package),
        "--app", "SHOP", "--workspace", "prod", "--platform", "Android", "--type", "AppUpgrade",
        "--version", "2.1.0", "--namespace", "shop", "--upgrade-mode", "Force", "--stages", "5:3600,20:3600,100",
        "--objects-url", f"file://{store}",
    )  # fmt: skip
    assert code == 0, err
    task = yaml.safe_load(out)
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    spec = task["spec"]
    assert task["metadata"] == {"name": "shop-appupgrade-2-1-0", "namespace": "shop"}
    assert spec["package"] == {
        "uri": f"s3://local/packages/SHOP/prod/AppUpgrade/{sha}.apk",
        "version": "2.1.0",
        "sha256": sha,
        "sizeBytes": package.stat().st_size,
    }
    assert spec["stages"] == [
        {"percent": 5, "durationSeconds": 3600},
        {"percent": 20, "durationSeconds": 3600},
        {"percent": 100},
    ]
    spec_model = DELIVERY_TASK.parse_spec(task)
    assert asyncio.run(packages.verify(spec_model.package, LocalObjectStore(store))) is None  # type: ignore[attr-defined]
    # Again: the same key, nothing written twice.
    code, again, _ = run(
        capsys, str(package), "--app", "SHOP", "--workspace", "prod", "--platform", "Android", "--type", "AppUpgrade",
        "--version", "2.1.0", "--objects-url", f"file://{store}",
    )  # fmt: skip
    assert code == 0 and yaml.safe_load(again)["spec"]["package"]["uri"] == spec["package"]["uri"]


def test_a_folder_is_zipped_the_same_way_every_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dist = tmp_path / "dist"  # as `expo export` leaves it
    (dist / "_expo" / "static" / "js" / "android").mkdir(parents=True)
    (dist / "assets").mkdir()
    (dist / "metadata.json").write_text('{"version": 0, "bundler": "metro", "fileMetadata": {}}')
    (dist / "_expo" / "static" / "js" / "android" / "index-abc.hbc").write_bytes(b"hermes bytecode")
    (dist / "assets" / "4f1cb2cac2370cd5050681232e8575a8").write_bytes(b"png")
    shas = []
    for _ in range(2):
        code, out, err = run(
            capsys, str(dist), "--app", "SHOP", "--platform", "Android", "--type", "Hotfix", "--version", "3",
            "--objects-url", f"file://{tmp_path / 'objects'}",
        )  # fmt: skip
        assert code == 0, err
        shas.append(yaml.safe_load(out)["spec"]["package"]["sha256"])
        (dist / "assets" / "4f1cb2cac2370cd5050681232e8575a8").touch()  # a new time, the same content
    assert shas[0] == shas[1]
    key = yaml.safe_load(out)["spec"]["package"]["uri"].removeprefix("s3://local/")
    with zipfile.ZipFile(io.BytesIO((tmp_path / "objects" / key).read_bytes())) as z:
        assert "metadata.json" in z.namelist() and "_expo/static/js/android/index-abc.hbc" in z.namelist()


def test_the_package_is_signed_over_its_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "delivery.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    package = tmp_path / "fix.zip"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("index.android.bundle", "var a = 1;")
    code, out, err = run(
        capsys, str(package), "--app", "SHOP", "--platform", "Android", "--type", "Hotfix", "--version", "4",
        "--signing-key", str(pem), "--objects-url", f"file://{tmp_path / 'objects'}",
    )  # fmt: skip
    assert code == 0, err
    p = yaml.safe_load(out)["spec"]["package"]
    key.public_key().verify(base64.b64decode(p["signature"]), bytes.fromhex(p["sha256"]), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("package", "args", "says"),
    [
        ("notes.txt", ["--type", "AppUpgrade", "--platform", "Android"], "an Android AppUpgrade is an APK"),
        ("notes.txt", ["--type", "AppUpgrade", "--platform", "IOS"], "an iOS AppUpgrade is an IPA"),
        ("notes.txt", ["--type", "H5Offline", "--platform", "Android"], "is a zip of the app's files"),
        ("app.apk", ["--type", "AppUpgrade", "--platform", "Android", "--stages", "5:1h"], "not a whole number"),
        ("app.apk", ["--type", "AppUpgrade", "--platform", "Android", "--version", "two"], "version"),
        ("missing.apk", ["--type", "AppUpgrade", "--platform", "Android"], "no such file"),
    ],
)
def test_what_cannot_be_released_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], package: str, args: list[str], says: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a package")
    apk(tmp_path / "app.apk")
    version = [] if "--version" in args else ["--version", "1.0"]
    code, out, err = run(
        capsys, str(tmp_path / package), "--app", "SHOP", *args, *version,
        "--objects-url", f"file://{tmp_path / 'objects'}",
    )  # fmt: skip
    assert code == 2 and not out and says in err, err
    assert not (tmp_path / "objects").exists() or not any((tmp_path / "objects").rglob("*.apk"))


def test_without_an_object_store_it_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MPAAS_OBJECTS_URL", raising=False)
    code, _, err = run(capsys, str(apk(tmp_path / "a.apk")), "--app", "SHOP", "--platform", "Android",
                       "--type", "AppUpgrade", "--version", "1.0")  # fmt: skip
    assert code == 2 and "MPAAS_OBJECTS_URL" in err


def test_an_offline_package_names_its_offline_app(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.zip"
    with zipfile.ZipFile(site, "w") as z:
        z.writestr("index.html", "<html></html>")
    common = [str(site), "--app", "SHOP", "--platform", "Android", "--type", "H5Offline", "--version", "1.0.2",
              "--objects-url", f"file://{tmp_path / 'objects'}"]  # fmt: skip
    code, out, err = run(capsys, *common)
    assert code == 2 and "offlineAppId is required for H5Offline" in err, err
    code, out, err = run(capsys, *common, "--offline-app-id", "20000123")
    assert code == 0, err
    task = yaml.safe_load(out)
    assert task["spec"]["offlineAppId"] == "20000123" and task["metadata"]["name"] == "shop-h5offline-20000123-1-0-2"
