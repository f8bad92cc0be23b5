"""The hot-path modules that are compiled to C, and the guard that keeps an edit from being shadowed.

A plain gateway request spends most of its CPU in the interpreter, spread
thin over the modules below; compiled, the gateway needs about a quarter
less CPU per request (docs/benchmarks.md). They are compiled when the
platform is installed with MPAAS_COMPILE=1 (setup.py): `hack/bootstrap --test`
(so `hack/test` and CI) and the image build do; `hack/dev` runs them interpreted. The source stays the
truth: the build records each module's SHA-256, and when a source no longer
matches (an edit since the last build), all of them load from source, with a
warning, until the next `hack/bootstrap`. They are compiled as one group and
call each other natively, so they are never mixed.

`EXTENSIONS` are modules written in C (no Python source), built alongside;
their callers fall back to a slower path when one is missing or stale.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

MODULES = (
    "mpaas.http1",
    "mpaas.tally",
    "mpaas.gateway.app",
    "mpaas.gateway.outcome",
    "mpaas.gateway.bodycheck",
    "mpaas.gateway.upstream_http",
    # the pipeline's stages (gateway/stages/__init__.py), so each step is a native call
    "mpaas.gateway.stages.route",
    "mpaas.gateway.stages.signature",
    "mpaas.gateway.stages.encryption",
    "mpaas.gateway.stages.rate_limit",
    "mpaas.gateway.stages.session",
    "mpaas.gateway.stages.cache",
    "mpaas.gateway.stages.mock",
    "mpaas.gateway.stages.canary",
    "mpaas.gateway.stages.forward",
)
# C module -> its source, relative to this package
EXTENSIONS = {"mpaas.crypto._ec": "crypto/_ec.c"}  # table-backed ECDSA P-256 and SM2 verification
GROUP = "mpaas._native"  # the shared library: mpaas/_native__mypyc.*.so
RECORD = "_compiled.json"  # written by the build next to this file: module -> SHA-256 of the source compiled

_PACKAGE_DIR = Path(__file__).resolve().parent
log = logging.getLogger("mpaas.compiled")


def source_path(module: str, package_dir: Path = _PACKAGE_DIR) -> Path:
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _source(module: str, package_dir: Path) -> Path:
    return package_dir / EXTENSIONS[module] if module in EXTENSIONS else source_path(module, package_dir)


def source_hashes(package_dir: Path = _PACKAGE_DIR, modules: Sequence[str] = (*MODULES, *EXTENSIONS)) -> dict[str, str]:
    return {m: hashlib.sha256(_source(m, package_dir).read_bytes()).hexdigest() for m in modules}


def _built(package_dir: Path, modules: Sequence[str] = MODULES) -> list[str]:
    """Modules that have a compiled form next to their source."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return [m for m in modules if any(_source(m, package_dir).with_suffix(s).exists() for s in suffixes)]


def _recorded(package_dir: Path) -> dict[str, str]:
    try:
        return dict(json.loads((package_dir / RECORD).read_text()))
    except (OSError, ValueError):
        return {}  # compiled, but from what is unknown


def stale(package_dir: Path = _PACKAGE_DIR) -> list[str]:
    """Modules whose compiled form (if any) was built from another source than the one here."""
    return _stale(package_dir, MODULES)


def _stale(package_dir: Path, modules: Sequence[str]) -> list[str]:
    built = _built(package_dir, modules)
    if not built:
        return []
    recorded, current = _recorded(package_dir), source_hashes(package_dir, built)
    return [m for m in built if recorded.get(m) != current[m]]


def needs_build(package_dir: Path = _PACKAGE_DIR) -> bool:
    """Some hot module or C module has no compiled form, or one built from another source."""
    every = (*MODULES, *EXTENSIONS)
    return len(_built(package_dir, every)) < len(every) or bool(_stale(package_dir, every))


def extension(module: str, package_dir: Path = _PACKAGE_DIR) -> ModuleType | None:
    """The C module when it was built from the source here; None (the caller's fallback runs) otherwise."""
    if not _built(package_dir, [module]):
        return None
    if _stale(package_dir, [module]):
        log.warning("%s changed since it was compiled: not using it until hack/bootstrap rebuilds it", module)
        return None
    try:
        return importlib.import_module(module)
    except ImportError as e:  # built for another interpreter, say
        log.warning("%s is built but does not load (%s): not using it until hack/bootstrap rebuilds it", module, e)
        return None


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the hot modules' .py files ahead of their compiled forms."""

    def __init__(self, package_dir: Path):
        self.package_dir = package_dir

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname, self.package_dir))


def guard() -> None:
    """Called on `import mpaas`, before any hot module is imported."""
    changed = stale()
    if changed and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst(_PACKAGE_DIR))
        log.warning(
            "%s changed since the hot modules were compiled: running them from source (slower) until "
            "hack/bootstrap rebuilds them",
            ", ".join(changed),
        )


def loaded_compiled() -> dict[str, bool]:
    """Hot module or C module -> whether the compiled one is in use (imports them)."""
    out = {}
    for m in MODULES:
        importlib.import_module(m)
        out[m] = not str(getattr(sys.modules[m], "__file__", "")).endswith(".py")
    for m in EXTENSIONS:
        out[m] = extension(m) is not None
    return out
