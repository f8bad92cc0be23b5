"""`python -m mpaas.api.render [--check]`: write or check crds/*.yaml and the chart's copies."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import yaml

from . import KINDS
from .crdgen import crd

HEADER = "# Generated from components/mpaas/api by hack/gen-crds. Do not edit.\n"
# The chart carries a copy: Helm can only read files inside the chart.
CHART_COPY = "charts/mpaas-operator/files/crds"
# The peering CRDs go in the chart's crds/ folder, which Helm installs before the templates: the chart
# creates a peering object, and Helm cannot map a custom resource whose CRD it creates in the same pass.
CHART_PEERING = "charts/mpaas-operator/crds"

# kopf's peering resources (from kopf's peering.yaml): replicas of the operator
# find each other through them, so only one acts at a time.
KOPF_PEERING = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                        }
                    },
                }
            ],
        },
    }
    for kind, plural, scope in (
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        ("KopfPeering", "kopfpeerings", "Namespaced"),
    )
]


def render_kinds() -> dict[str, str]:
    return {f"{k.crd_name}.yaml": HEADER + yaml.safe_dump(crd(k), sort_keys=False, width=120) for k in KINDS.values()}


def render_peering() -> dict[str, str]:
    return {"kopf-peering.yaml": HEADER + yaml.safe_dump_all(KOPF_PEERING, sort_keys=False, width=120)}


def render_all() -> dict[str, str]:
    return {**render_kinds(), **render_peering()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="fail when the files differ from the models")
    args = p.parse_args(argv)
    drift = sync_dir(Path("crds"), render_all(), check=args.check)
    drift |= sync_dir(Path(CHART_COPY), render_kinds(), check=args.check)
    drift |= sync_dir(Path(CHART_PEERING), render_peering(), check=args.check)
    if drift:
        print("generated CRDs drifted from the models: run hack/gen-crds and commit the result", file=sys.stderr)
        return 1
    return 0


def sync_dir(out: Path, files: dict[str, str], *, check: bool) -> bool:
    drift = False
    for name, text in files.items():
        path = out / name
        old = path.read_text() if path.exists() else ""
        if old == text:
            continue
        if check:
            drift = True
            sys.stdout.writelines(
                difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(path), "models")
            )
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for stale in sorted(p.name for p in out.glob("*.yaml") if p.name not in files):
        drift = True
        print(f"{out / stale}: not generated from any model (remove it)")
    return drift


if __name__ == "__main__":
    sys.exit(main())
