"""The chart gives the operator the delivery component's Redis, where DeliveryTask counts are read from."""

import subprocess
from typing import Any

import pytest
import yaml

from conftest import ROOT, need_env

pytestmark = pytest.mark.cluster
CHART = ROOT / "charts" / "mpaas-operator"


def template(*values: str) -> subprocess.CompletedProcess[str]:
    from testenv_paths import helm

    need_env("KUBECONFIG")
    sets = [arg for v in values for arg in ("--set", v)]
    return subprocess.run(
        [helm(), "template", "t", str(CHART), "--kube-version", "1.34.1", *sets],
        capture_output=True,
        text=True,
        timeout=120,
    )


def operator_env(stdout: str) -> dict[str, Any]:
    deployment = next(d for d in yaml.safe_load_all(stdout) if d and d["kind"] == "Deployment")
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_delivery_redis_from_a_url_or_a_secret() -> None:
    r = template("delivery.redis.url=redis://redis.mpaas:6379/0")
    assert r.returncode == 0, r.stderr
    env = operator_env(r.stdout)
    assert env["MPAAS_REDIS_URL"]["value"] == "redis://redis.mpaas:6379/0"
    assert env["MPAAS_REDIS_PREFIX"]["value"] == "delivery:"
    r = template("delivery.redis.existingSecret=redis-url", "delivery.redis.url=redis://ignored:6379")
    env = operator_env(r.stdout)
    assert env["MPAAS_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "redis-url", "key": "url"}}


def test_no_delivery_redis_by_default_and_bad_values_refused() -> None:
    r = template()
    assert r.returncode == 0, r.stderr
    assert "MPAAS_REDIS_URL" not in operator_env(r.stdout)
    r = template("delivery.redis.url=http://redis")
    assert r.returncode != 0 and "delivery" in r.stderr
    r = template("delivery.redis.prefix=a{b}")
    assert r.returncode != 0 and "prefix" in r.stderr
