"""Packaging lives in pyproject.toml; this adds the compiled hot-path and C modules when MPAAS_COMPILE=1.

The modules and why: components/mpaas/compiled.py. The build records the
SHA-256 of each source it compiled, so an edited source is never shadowed by
an old compiled module.
"""

import importlib.util
import json
import os
from pathlib import Path

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("MPAAS_COMPILE") == "1":
    from mypyc.build import mypycify

    spec = importlib.util.spec_from_file_location("compiled", "components/mpaas/compiled.py")
    assert spec is not None and spec.loader is not None
    compiled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compiled)
    package_dir = Path("components/mpaas")
    paths = [str(compiled.source_path(m, package_dir)) for m in compiled.MODULES]
    # Where the build has no dependencies installed (pip's isolated build, the image), their types are
    # unknown: an ignore comment that matters with them installed looks unused without them.
    options = ["--ignore-missing-imports", "--no-warn-unused-ignores"]
    ext_modules = mypycify([*options, *paths], group_name=compiled.GROUP, opt_level="3")
    ext_modules += [
        Extension(module, [str(package_dir / source)], extra_compile_args=["-O3"])
        for module, source in compiled.EXTENSIONS.items()
    ]
    (package_dir / compiled.RECORD).write_text(json.dumps(compiled.source_hashes(package_dir), indent=1) + "\n")

setup(ext_modules=ext_modules)
