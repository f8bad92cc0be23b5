"""Diff packages: the two formats built and applied back, the limits on what is diffed, and which diff a client
is offered."""

from __future__ import annotations

import hashlib
import json
import os
import random
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from mpaas.api import KINDS
from mpaas.delivery import diffs
from mpaas.delivery.diffs import DiffError
from mpaas.delivery.targeting import compile_release

pytestmark = pytest.mark.unit


def edited(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(50):
        at = rng.randrange(len(out) - 16)
        out[at : at + 8] = rng.randbytes(rng.randint(1, 16))
    return bytes(out[: len(out) // 2] + rng.randbytes(4096) + out[len(out) // 2 :])


def test_a_binary_diff_applied_to_the_earlier_package_gives_the_new_one() -> None:
    old = os.urandom(1 << 20)
    new = edited(old, 1)
    patch = diffs.build_binary(old, new)
    assert len(patch) < len(new) // 20  # a few scattered edits cost a few KiB, not the package
    assert diffs.apply_binary(old, patch) == new
    assert diffs.apply_binary(new, diffs.build_binary(new, new)) == new


def zipped(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_a_files_diff_holds_what_changed_and_lists_what_was_deleted(tmp_path: Path) -> None:
    same, changed = os.urandom(200_000), b"<html>old</html>"
    old = zipped(tmp_path / "old.zip", {"index.html": changed, "app.js": same, "gone.css": b"a{}", "img/a.png": same})
    new_files = {"index.html": b"<html>new</html>", "app.js": same, "img/a.png": same, "img/b.png": b"new image"}
    new = zipped(tmp_path / "new.zip", new_files)
    out = tmp_path / "diff.zip"
    diffs.build_files(old, new, out, from_sha256="a" * 64, to_sha256="b" * 64)
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted(["index.html", "img/b.png", diffs.MANIFEST])
        manifest = json.loads(z.read(diffs.MANIFEST))
    assert manifest["deleted"] == ["gone.css"] and manifest["from"] == "a" * 64 and manifest["to"] == "b" * 64
    assert manifest["files"] == {n: hashlib.sha256(d).hexdigest() for n, d in sorted(new_files.items())}
    assert out.stat().st_size < 10_000  # the 200 kB files that did not change are not in it
    assert diffs.apply_files(old, out) == new_files


def test_a_file_with_the_same_size_and_crc_but_other_bytes_is_in_the_diff(tmp_path: Path) -> None:
    a, b = _crc_collision()
    old = zipped(tmp_path / "old.zip", {"x": a})
    new = zipped(tmp_path / "new.zip", {"x": b})
    out = tmp_path / "diff.zip"
    diffs.build_files(old, new, out, from_sha256="a" * 64, to_sha256="b" * 64)
    assert diffs.apply_files(old, out) == {"x": b}


def _crc_collision() -> tuple[bytes, bytes]:
    """Two different 6-byte strings with one CRC-32, by the birthday bound (~77 000 tries on 32 bits)."""

    seen: dict[int, bytes] = {}
    rng = random.Random(7)
    while True:
        s = rng.randbytes(6)
        c = zlib.crc32(s) & 0xFFFF_FFFF
        if c in seen and seen[c] != s:
            return seen[c], s
        seen[c] = s
        if len(seen) > 300_000:  # birthday bound on 32 bits: ~77k expected
            seen.clear()


@pytest.mark.parametrize("name", ["../evil.js", "/etc/passwd", "a\\b.js", "dir/../../x", diffs.MANIFEST])
def test_a_package_with_a_file_no_client_may_unpack_is_not_diffed(tmp_path: Path, name: str) -> None:
    old = zipped(tmp_path / "old.zip", {"a.js": b"1"})
    new = zipped(tmp_path / "new.zip", {"a.js": b"2", name: b"x"})
    with pytest.raises(DiffError, match="no client may unpack"):
        diffs.build_files(old, new, tmp_path / "diff.zip", from_sha256="a" * 64, to_sha256="b" * 64)


def test_a_package_that_is_not_a_zip_is_refused_with_a_reason(tmp_path: Path) -> None:
    old = zipped(tmp_path / "old.zip", {"a.js": b"1"})
    new = tmp_path / "new.zip"
    new.write_bytes(b"not a zip at all")
    with pytest.raises(DiffError, match="not a readable zip"):
        diffs.build_files(old, new, tmp_path / "diff.zip", from_sha256="a" * 64, to_sha256="b" * 64)


def test_each_resource_type_has_its_format() -> None:
    assert diffs.format_for("H5Offline") == diffs.FILES
    assert {diffs.format_for(t) for t in ("AppUpgrade", "Hotfix", "MiniProgram", "Resource")} == {diffs.HDIFFPATCH}
    assert diffs.key_of("b" * 64, "a" * 64, diffs.FILES) == f"delivery/diffs/{'b' * 64}/{'a' * 64}.zip"


def release_with(diff_entries: list[dict[str, Any]], size: int = 1000) -> Any:
    body = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": "v3", "namespace": "shop"},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": "Hotfix",
            "package": {"uri": "s3://local/v3.bin", "version": "3.0.0", "sha256": "c" * 64, "sizeBytes": size},
        },
        "status": {"diffPackages": diff_entries},
    }
    spec = KINDS["DeliveryTask"].parse_spec(body)
    return compile_release("shop", "v3", spec, body)  # type: ignore[arg-type]


def entry(version: str, sha: str, size: int = 100) -> dict[str, Any]:
    return {
        "fromVersion": version,
        "fromSha256": sha * 64,
        "fromTask": f"shop/{version}",
        "format": "hdiffpatch",
        "uri": f"s3://local/delivery/diffs/{'c' * 64}/{sha * 64}.hdiff",
        "sha256": hashlib.sha256(sha.encode()).hexdigest(),
        "sizeBytes": size,
    }


BINARY = (diffs.HDIFFPATCH,)


def test_the_diff_offered_is_the_one_from_what_the_client_runs() -> None:
    expo = entry("2.1.0", "f") | {
        "format": diffs.EXPO_BSDIFF,
        "uri": f"s3://local/delivery/diffs/{'c' * 64}/{'f' * 64}.android.bsdiff",
    }
    r = release_with([entry("2.0.0", "a"), entry("2.1", "b"), entry("2.1.0", "d"), expo, {"fromVersion": "broken"}])
    assert len(r.diffs) == 4  # the entry that does not parse is left out
    assert r.diff_for("f" * 64, "", BINARY) is None  # Expo's patch is for Expo clients
    assert r.diff_for("f" * 64, "", (diffs.EXPO_BSDIFF,)) is not None
    found = r.diff_for("b" * 64, "", BINARY)
    assert found is not None and found.from_sha256 == "b" * 64 and found.package.uri.endswith("b" * 64 + ".hdiff")
    by_version = r.diff_for("", "2.0", BINARY)
    assert by_version is not None and by_version.from_sha256 == "a" * 64  # "2.0" is 2.0.0
    assert r.diff_for("", "2.1.0", BINARY) is None  # two packages were 2.1.0: which one the client runs is unknown
    assert r.diff_for("e" * 64, "2.0.0", BINARY) is None  # a sha256 the client names is what counts
    assert r.diff_for("", "", BINARY) is None and r.diff_for("", "1.0", BINARY) is None


def test_a_diff_no_smaller_than_the_package_is_not_offered() -> None:
    r = release_with([entry("2.0.0", "a", size=1000)], size=1000)
    assert r.diff_for("a" * 64, "", BINARY) is None


def test_an_entry_that_does_not_point_at_its_own_diff_is_left_out() -> None:
    """status is writable by more than the operator: an entry must not make a link to any other object."""
    good = entry("2.0.0", "a")
    forged = [
        good | {"uri": "s3://local/packages/secret-unreleased.apk"},  # another object of the bucket
        good | {"uri": f"s3://local/delivery/diffs/{'c' * 64}/{'b' * 64}.hdiff"},  # another diff's key
        good | {"uri": "https://evil.example/x.hdiff"},
        good | {"format": "exe"},
        good | {"format": diffs.EXPO_BSDIFF},  # an Expo patch's key names its platform
    ]
    assert release_with(forged).diffs == ()
    assert len(release_with([good]).diffs) == 1


async def test_a_version_names_a_diff_only_when_one_live_package_has_that_version(tmp_path: Path) -> None:
    """Two 2.0.0 APKs (two channels): a client that names only its version might run the other one."""
    from mpaas.config import Resource
    from mpaas.delivery.targeting import Client, compile_catalog

    def task(name: str, version: str, sha: str, status: dict[str, Any] | None = None) -> Any:
        body = {
            "apiVersion": "mpaas.io/v1alpha1",
            "kind": "DeliveryTask",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "appId": "SHOP",
                "workspaceId": "prod",
                "platform": "Android",
                "resourceType": "Hotfix",
                "package": {"uri": f"s3://local/{name}", "version": version, "sha256": sha * 64, "sizeBytes": 1000},
            },
            "status": status or {},
        }
        return Resource("DeliveryTask", "shop", name, 1, "1", KINDS["DeliveryTask"].parse_spec(body), body)

    new = task("v3", "3.0.0", "c", {"diffPackages": [entry("2.0.0", "a"), entry("2.5.0", "b")]})
    one = task("v2-store", "2.0.0", "a")
    other = task("v2-oem", "2.0.0", "e")  # the same version, other bytes
    catalog = compile_catalog({"DeliveryTask": {("shop", r.name): r for r in (new, one, other)}})
    client = Client("SHOP", "prod", "Android", "d")
    (release,) = [r for r in catalog.releases(client, "Hotfix") if r.name == "v3"]
    assert release.diff_for("", "2.0.0", BINARY) is None  # which 2.0.0? the client must say its sha256
    assert release.diff_for("a" * 64, "2.0.0", BINARY) is not None
    by_version = release.diff_for("", "2.5.0", BINARY)  # 2.5.0's task was deleted: no other package is 2.5.0
    assert by_version is not None and by_version.from_sha256 == "b" * 64


@pytest.mark.parametrize(
    ("entry_name", "mode"),
    [
        ("link", 0o120777),  # a symlink: a client unpacking over its tree would follow it
        ("a//b.js", 0o100644),
        ("./a/b.js", 0o100644),
        ("c:evil", 0o100644),
        ("A/B.js", 0o100644),  # with a/b.js: one file on case-insensitive storage
        ("a", 0o100644),  # a file, and the folder of a/b.js
    ],
)
def test_entries_a_client_cannot_apply_safely_are_refused(tmp_path: Path, entry_name: str, mode: int) -> None:
    old = zipped(tmp_path / "old.zip", {"a/b.js": b"1"})
    new = tmp_path / "new.zip"
    with zipfile.ZipFile(new, "w") as z:
        z.writestr("a/b.js", b"2")
        info = zipfile.ZipInfo(entry_name)
        info.external_attr = mode << 16
        z.writestr(info, b"x")
    with pytest.raises(DiffError):
        diffs.build_files(old, new, tmp_path / "diff.zip", from_sha256="a" * 64, to_sha256="b" * 64)


def test_a_file_with_odd_mode_bits_is_written_as_a_plain_file(tmp_path: Path) -> None:
    old = zipped(tmp_path / "old.zip", {"a/b.js": b"1"})
    new = tmp_path / "new.zip"
    with zipfile.ZipFile(new, "w") as z:
        info = zipfile.ZipInfo("a/b.js")
        info.external_attr = 0o104755 << 16  # setuid
        z.writestr(info, b"2")
    out = tmp_path / "diff.zip"
    diffs.build_files(old, new, out, from_sha256="a" * 64, to_sha256="b" * 64)
    with zipfile.ZipFile(out) as z:
        assert z.getinfo("a/b.js").external_attr >> 16 == 0o100644
