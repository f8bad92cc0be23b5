"""The compiled hot-path modules: what ships is what runs, and an edited source is never shadowed."""

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpaas import compiled

pytestmark = pytest.mark.unit

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_hot_modules_load_compiled_when_built() -> None:
    loaded = compiled.loaded_compiled()
    if os.environ.get("MPAAS_EXPECT_COMPILED") == "1":  # hack/test builds them (hack/bootstrap --test)
        assert all(loaded.values()), f"hot modules not compiled: {loaded}"
        assert not compiled.needs_build()
    else:
        assert len(set(loaded.values())) == 1, f"compiled and interpreted hot modules mixed: {loaded}"


def _package(tmp_path: Path, *, built: bool, record: dict[str, str] | None) -> Path:
    pkg = tmp_path / "mpaas"
    sources = [compiled.source_path(m, pkg) for m in compiled.MODULES]
    for src in [*sources, *(pkg / c for c in compiled.EXTENSIONS.values())]:
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"// {src.name}\n")
        if built:
            src.with_suffix(SUFFIX).write_bytes(b"")
    if record is not None:
        (pkg / compiled.RECORD).write_text(json.dumps(record))
    return pkg


def test_stale_sources_are_found(tmp_path: Path) -> None:
    assert compiled.stale(_package(tmp_path / "none", built=False, record=None)) == []
    assert compiled.needs_build(_package(tmp_path / "none2", built=False, record=None))

    pkg = _package(tmp_path / "fresh", built=True, record={})
    (pkg / compiled.RECORD).write_text(json.dumps(compiled.source_hashes(pkg)))
    assert compiled.stale(pkg) == [] and not compiled.needs_build(pkg)

    compiled.source_path("mpaas.gateway.app", pkg).write_text("# edited\n")
    assert compiled.stale(pkg) == ["mpaas.gateway.app"] and compiled.needs_build(pkg)

    assert compiled.stale(_package(tmp_path / "unrecorded", built=True, record=None)) == list(compiled.MODULES)


def test_a_stale_or_missing_c_module_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (name, source), *_ = compiled.EXTENSIONS.items()
    assert compiled.extension(name, _package(tmp_path / "none", built=False, record=None)) is None

    pkg = _package(tmp_path / "edited", built=True, record={})
    (pkg / compiled.RECORD).write_text(json.dumps(compiled.source_hashes(pkg)))
    assert not compiled.needs_build(pkg)
    (pkg / source).write_text("// edited\n")
    assert compiled.needs_build(pkg) and compiled.stale(pkg) == []  # the Python hot modules stay compiled
    assert compiled.extension(name, pkg) is None
    assert f"{name} changed since it was compiled" in caplog.text


def test_a_c_module_that_does_not_load_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (name, _), *_ = compiled.EXTENSIONS.items()
    pkg = _package(tmp_path, built=True, record={})
    (pkg / compiled.RECORD).write_text(json.dumps(compiled.source_hashes(pkg)))

    def broken(module: str) -> None:
        raise ImportError(f"{module}: undefined symbol")

    monkeypatch.setattr(compiled.importlib, "import_module", broken)
    assert compiled.extension(name, pkg) is None
    assert "does not load" in caplog.text


def test_an_edit_loads_every_hot_module_from_source(tmp_path: Path) -> None:
    """A fresh interpreter with one hot module's record changed runs all of them from their .py files."""
    record = Path(compiled.__file__).with_name(compiled.RECORD)
    if not record.exists():  # nothing compiled here: the guard has nothing to do (the test above covers it)
        assert not any(compiled.loaded_compiled().values())
        return
    saved = record.read_text()
    try:
        changed = json.loads(saved)
        changed["mpaas.http1"] = "0" * 64
        record.write_text(json.dumps(changed))
        out = subprocess.run(
            [sys.executable, "-c", "import json, mpaas.compiled as c; print(json.dumps(c.loaded_compiled()))"],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        record.write_text(saved)
    loaded = json.loads(out.stdout)
    assert not any(loaded[m] for m in compiled.MODULES), out.stdout
    assert all(loaded[m] for m in compiled.EXTENSIONS), out.stdout  # its own source is unchanged
    warning = next(ln for ln in out.stderr.splitlines() if "changed since the hot modules were compiled" in ln)
    assert "mpaas.http1" in warning.split(" changed ")[0], warning
