"""`python -m mpaas.api.render [--check] [DIR]`: write or check crds/*.yaml."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import yaml

from . import KINDS
from .crdgen import crd

HEADER = "# Generated from components/mpaas/api by hack/gen-crds. Do not edit.\n"


def render_all() -> dict[str, str]:
    return {
        f"{k.crd_name}.yaml": HEADER + yaml.safe_dump(crd(k), sort_keys=False, width=120)
        for k in KINDS.values()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="fail when the files differ from the models")
    p.add_argument("dir", nargs="?", default="crds")
    args = p.parse_args(argv)
    out = Path(args.dir)
    drift = False
    for name, text in render_all().items():
        path = out / name
        old = path.read_text() if path.exists() else ""
        if old == text:
            continue
        if args.check:
            drift = True
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(path), "models"))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    expected = set(render_all())
    for stale in sorted(p.name for p in out.glob("*.yaml") if p.name not in expected):
        drift = True
        print(f"{out / stale}: not generated from any model (remove it)")
    if drift:
        print("crds/ drifted from the models: run hack/gen-crds and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
