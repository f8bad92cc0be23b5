"""The chart gives the operator the platform's object store for DeliveryTask package checks, and push's Kafka."""

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


def test_objects_url_and_keys_from_a_secret() -> None:
    r = template("objects.url=s3://packages?endpoint=https://s3.example:9000", "objects.existingSecret=s3-keys")
    assert r.returncode == 0, r.stderr
    env = operator_env(r.stdout)
    assert env["MPAAS_OBJECTS_URL"]["value"] == "s3://packages?endpoint=https://s3.example:9000"
    assert env["MPAAS_OBJECTS_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3-keys", "key": "accessKey"}}
    assert env["MPAAS_OBJECTS_SECRET_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3-keys", "key": "secretKey"}}


def test_no_object_store_by_default_and_bad_urls_refused() -> None:
    r = template()
    assert r.returncode == 0, r.stderr
    assert not any(name.startswith("MPAAS_OBJECTS_") for name in operator_env(r.stdout))
    r = template("objects.url=http://s3.example")
    assert r.returncode != 0 and "objects" in r.stderr  # values.schema.json: s3:// or file://


def test_push_kafka_for_the_vendor_channels_senders() -> None:
    r = template("kafka.url=kafka://kafka.infra:9092", "redis.url=redis://redis.infra:6379/0")
    assert r.returncode == 0, r.stderr
    env = operator_env(r.stdout)
    assert env["MPAAS_OPERATOR_KAFKA_URL"]["value"] == "kafka://kafka.infra:9092"
    assert env["MPAAS_OPERATOR_REDIS_URL"]["value"] == "redis://redis.infra:6379/0"
    assert "MPAAS_OPERATOR_KAFKA_URL" not in operator_env(template().stdout)
    r = template("kafka.url=http://kafka.infra:9092")
    assert r.returncode != 0 and "kafka" in r.stderr  # values.schema.json: kafka://host:port


def test_the_push_api_with_its_stores_and_read_only_rights() -> None:
    r = template("push.enabled=true")
    assert r.returncode != 0 and "push.enabled needs redis.url and kafka.url" in r.stderr
    r = template("push.enabled=true", "redis.url=redis://redis:6379/0", "kafka.url=kafka://kafka:9092")
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    push = {d["kind"]: d for d in docs if d["metadata"]["name"] == "t-mpaas-operator-push"}
    dep = push["Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["args"] == ["push"] and env["MPAAS_KAFKA_URL"] == "kafka://kafka:9092"
    assert env["MPAAS_SENDERS"] == "false" and "MPAAS_NAMESPACE" not in env
    # Its own selector: the operator's Deployment never counts its pods.
    operator = next(d for d in docs if d["kind"] == "Deployment" and d is not dep)
    op_selector = operator["spec"]["selector"]["matchLabels"].items()
    assert not op_selector <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert push["Service"]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    verbs = {(tuple(r["resources"]), tuple(r["verbs"])) for r in push["ClusterRole"]["rules"]}
    assert verbs == {
        (("mpaasgateways", "pushchannels"), ("get", "list", "watch")),
        (("secrets",), ("get", "list", "watch")),
    }
    r = template(
        "push.enabled=true", "redis.url=redis://r:6379/0", "kafka.url=kafka://k:9092", "watchNamespaces={shop,blog}"
    )
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d and d["metadata"]["name"] == "t-mpaas-operator-push"]
    assert sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "Role") == ["blog", "shop"]
    assert not [d for d in docs if d["kind"] == "ClusterRole"]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MPAAS_NAMESPACE"] == "shop"
