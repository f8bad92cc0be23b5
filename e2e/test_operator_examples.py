"""Every resource the README and examples/ show applies, settles, and can be torn down without the operator."""

import re
from typing import Any

import pytest
import yaml

from conftest import ROOT, Process, apply_yaml, argocd_health, condition, eventually, kget, kubectl, start_operator

pytestmark = pytest.mark.cluster
KINDS = "mpaasgateways,deliverytasks,pushchannels,synctopics"
# What "settled" means per kind today: a gateway serves; a task's package was checked, and with no object store
# here it is not offered; a Link channel's pods serve, Ready once its token key exists (the demo's does, the
# README's names none); a vendor channel waits for its credentials Secret (the README's is not shown); sync is
# not built yet, so a SyncTopic says NotImplemented once the operator has done its part (never Ready=True).
SETTLED = {
    "MpaasGateway": {("True", "Available")},
    "DeliveryTask": {("False", "PackageNotVerified")},
    "PushChannel": {("True", "Available"), ("False", "TokenKeyMissing"), ("False", "CredentialsMissing")},
}
SETTLED_DEFAULT = {("False", "NotImplemented")}
# Argo CD's verdict per kind and Ready reason, through the health script the docs ship.
HEALTH = {
    "Available": "Healthy",
    "PackageNotVerified": "Progressing",
    "TokenKeyMissing": "Progressing",
    "CredentialsMissing": "Degraded",  # Stalled: someone must create the Secret
}


def readme_resources() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    docs = [
        d for b in blocks for d in yaml.safe_load_all(b) if d and str(d.get("apiVersion", "")).startswith("mpaas.io/")
    ]
    assert len(docs) >= 4, "the README shows one resource of each kind"
    return docs


def demo_resources() -> int:
    """The mpaas.io resources of examples/demo (it also holds a Secret)."""
    return sum(
        1
        for f in (ROOT / "examples" / "demo").glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d and str(d.get("apiVersion", "")).startswith("mpaas.io/")
    )


def all_resources(namespace: str) -> list[dict[str, Any]]:
    return (kget(namespace, KINDS) or {}).get("items") or []


def settled(obj: dict[str, Any]) -> bool:
    ready = condition(obj)
    want = SETTLED.get(obj["kind"], SETTLED_DEFAULT)
    checked = obj["kind"] != "DeliveryTask" or condition(obj, "PackageVerified").get("reason") == "NoObjectStore"
    return (
        (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        and (ready.get("status"), ready.get("reason")) in want
        and ready.get("observedGeneration") == obj["metadata"]["generation"]
        and checked
    )


async def wait_settled(namespace: str, count: int, operator: Process) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        items = all_resources(namespace)
        return items if len(items) == count and all(settled(o) for o in items) else None

    def report() -> str:
        return (
            "\n".join(f"{o['kind']}/{o['metadata']['name']}: {condition(o)}" for o in all_resources(namespace))
            + "\n"
            + operator.output()[-2000:]
        )

    try:
        return await eventually(check, timeout=90, what="every resource settled")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{report()}") from None


async def test_every_documented_resource_applies_and_settles(operator: Process, namespace: str) -> None:
    # examples/ as a GitOps tool or a user would apply it: the whole folder, into a namespace of their choice.
    r = kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "demo"), check=False)
    assert r.returncode == 0, r.stderr
    docs = readme_resources()
    r = apply_yaml(namespace, *docs)
    assert r.returncode == 0, r.stderr
    items = await wait_settled(namespace, len(docs) + demo_resources(), operator)
    # Nothing waits on the operator to be deleted, and every kind follows the kstatus conventions.
    for obj in items:
        assert not obj["metadata"].get("finalizers"), obj["metadata"]
        stalled = "True" if condition(obj).get("reason") == "CredentialsMissing" else "False"  # it needs a Secret
        assert condition(obj, "Stalled")["status"] == stalled and condition(obj, "Reconciling")["status"] == "False"
        # What Argo CD makes of it, through the health script the docs ship.
        health, _ = argocd_health(obj)
        assert health == HEALTH.get(condition(obj).get("reason", ""), "Suspended"), (obj["kind"], health)


async def test_teardown_needs_no_operator(peering: str, spawn: Any, namespace: str) -> None:
    """Uninstalling the operator first must not leave resources or the namespace stuck in deletion."""
    # A resource an older version marked with its finalizer: the operator removes it.
    legacy = {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "SyncTopic",
        "metadata": {"name": "legacy", "finalizers": ["operator.mpaas.io/finalizer"]},
        "spec": {"appId": "LEGACY_APP", "bizType": "legacy"},
    }
    assert apply_yaml(namespace, legacy).returncode == 0
    operator = start_operator(spawn, peering=peering)
    assert kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "demo"), check=False).returncode == 0
    count = 1 + demo_resources()
    items = await wait_settled(namespace, count, operator)
    await eventually(
        lambda: (
            not (kget(namespace, "synctopic", "legacy") or {"metadata": {"finalizers": [1]}})["metadata"].get(
                "finalizers"
            )
        ),
        timeout=30,
        what="the old finalizer removed",
    )
    assert all(not o["metadata"].get("finalizers") for o in items)

    operator.stop()  # as `helm uninstall` would
    r = kubectl("delete", "-n", namespace, KINDS, "--all", "--timeout=30s", check=False)
    assert r.returncode == 0, r.stderr
    assert all_resources(namespace) == []
    r = kubectl("delete", "namespace", namespace, "--timeout=90s", check=False)
    assert r.returncode == 0, r.stderr
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0
