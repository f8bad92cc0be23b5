"""CodePush through its real acquisition SDK (`code-push`'s AcquisitionManager, what react-native-code-push calls)
in Node, against a delivery process with its resources in a folder and its packages in a local folder store."""

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import eventually
from testenv_paths import code_push_sdk

PRODUCTION, STAGING = "prod-key-7Hc2WqLmZx", "staging-key-Q4nVb8Rt"

GATEWAY = {
    "apiVersion": "mpaas.io/v1alpha1",
    "kind": "MpaasGateway",
    "metadata": {"name": "apps", "namespace": "shop"},
    "spec": {
        "apps": [
            {
                "appId": "SHOP",
                "workspaceId": "prod",
                "codePush": {
                    "deployments": [
                        {"name": "Production", "platform": "Android", "key": PRODUCTION},
                        {"name": "Staging", "platform": "Android", "key": STAGING},
                    ]
                },
            }
        ],
        "upstreams": [{"name": "u", "endpoints": [{"url": "http://127.0.0.1:1"}]}],
    },
}

# The SDK with an HTTP requester on Node's http module (react-native-code-push's does the same with fetch).
CLIENT_JS = r"""
const http = require('http');
const crypto = require('crypto');
const { AcquisitionManager, AcquisitionStatus } = require('code-push/script/acquisition-sdk');
const VERBS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'TRACE', 'OPTIONS', 'CONNECT', 'PATCH'];

function fetch(method, url, body, done) {
  const headers = { 'Accept': 'application/json', 'X-CodePush-SDK-Version': '4.2.3' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = Buffer.byteLength(body);
  }
  const req = http.request(url, { method, headers }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => done(null, { statusCode: res.statusCode, body: Buffer.concat(chunks) }));
  });
  req.on('error', (e) => done(e, null));
  if (body !== undefined) req.write(body);
  req.end();
}

const requester = {
  request(verb, url, body, callback) {
    if (typeof body === 'function') { callback = body; body = undefined; }
    fetch(VERBS[verb], url, body, (e, r) => callback(e, r && { statusCode: r.statusCode, body: r.body.toString() }));
  },
};

const op = JSON.parse(process.argv[2]);
const sdk = new AcquisitionManager(requester, {
  serverUrl: op.server, appVersion: op.appVersion, clientUniqueId: op.device, deploymentKey: op.key,
});
const out = (value) => console.log(JSON.stringify(value === undefined ? null : value));
const fail = (e) => { console.log(JSON.stringify({ error: String(e && e.message || e) })); };

if (op.do === 'check') {
  const current = { appVersion: op.appVersion, packageHash: op.hash, label: op.label };
  sdk.queryUpdateWithCurrentPackage(current, (e, remote) => (e ? fail(e) : out(remote)));
} else if (op.do === 'download') {
  fetch('GET', op.url, undefined, (e, r) =>
    e ? fail(e) : out({ status: r.statusCode, sha256: crypto.createHash('sha256').update(r.body).digest('hex') }));
} else if (op.do === 'reportDownload') {
  sdk.reportStatusDownload(op.package, (e) => (e ? fail(e) : out('ok')));
} else if (op.do === 'reportDeploy') {
  sdk.reportStatusDeploy(op.package, op.status && AcquisitionStatus[op.status], op.previous, op.previousKey,
    (e) => (e ? fail(e) : out('ok')));
}
"""


def _task(name: str, version: str, data: bytes, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mpaas.io/v1alpha1",
        "kind": "DeliveryTask",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {
            "appId": "SHOP",
            "workspaceId": "prod",
            "platform": "Android",
            "resourceType": "Hotfix",
            "package": {
                "uri": f"s3://local/bundles/{name}.zip",
                "version": version,
                "sha256": hashlib.sha256(data).hexdigest(),
                "sizeBytes": len(data),
            },
            **spec,
        },
    }


def _sdk_dir() -> str:
    path = code_push_sdk()
    if not Path(path, "code-push").is_dir():
        pytest.fail(f"{path} has no code-push: run hack/testenv/fetch-peer-sdks.sh (or hack/test)", pytrace=False)
    return path


@pytest.mark.component
def test_the_codepush_sdk_checks_downloads_reports_and_rolls_back(
    start_delivery: Callable[..., str], tmp_path: Path
) -> None:
    node_path = _sdk_dir()
    script = tmp_path / "client.js"
    script.write_text(CLIENT_JS)
    objects = tmp_path / "objects"
    (objects / "bundles").mkdir(parents=True)
    one, two, staged = os.urandom(20_000), os.urandom(50_000), os.urandom(1000)
    for name, data in (("bundle-1", one), ("bundle-2", two), ("staged-3", staged)):
        (objects / "bundles" / f"{name}.zip").write_bytes(data)
    binaries = {"appVersion": {"min": "1.0", "max": "1.9"}}

    def tasks(rolled_back: set[str]) -> list[dict[str, Any]]:
        production = {"filters": {"channels": ["production"], **binaries}}
        return [
            _task("bundle-1", "1", one, targeting=production, rollback="bundle-1" in rolled_back),
            _task(
                "bundle-2",
                "2",
                two,
                targeting=production,
                upgradeMode="Force",
                description="Faster checkout",
                rollback="bundle-2" in rolled_back,
            ),
            _task("staged-3", "3", staged, targeting={"filters": {"channels": ["Staging"], **binaries}}),
        ]

    config = tmp_path / "config"
    config.mkdir()
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, *tasks(set())]))
    url = start_delivery(config, f"file://{objects}")

    def sdk(do: str, key: str = PRODUCTION, app_version: str = "1.2.0", **op: Any) -> Any:
        args = {"do": do, "server": url, "key": key, "appVersion": app_version, "device": "device-1", **op}
        done = subprocess.run(
            ["node", str(script), json.dumps(args)],
            env={**os.environ, "NODE_PATH": node_path},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def raw(**query: str) -> dict[str, Any]:
        query = {"deployment_key": PRODUCTION, "app_version": "1.2.0", "client_unique_id": "device-1"} | query
        r = httpx.get(url + "/v0.1/public/codepush/update_check", params=query)
        assert r.status_code == 200, r.text
        return dict(r.json()["update_info"])

    # The packages are verified in the background after start.
    asyncio.run(eventually(lambda: raw()["is_available"], timeout=20, what="the bundles verified"))

    # A binary's own bundle (no hash yet): the newest bundle of its deployment.
    remote = sdk("check")
    assert remote["packageHash"] == hashlib.sha256(two).hexdigest() and remote["label"] == "bundle-2"
    assert remote["isMandatory"] is True and remote["description"] == "Faster checkout"
    assert remote["appVersion"] == "1.2.0" and remote["packageSize"] == len(two)
    assert remote["deploymentKey"] == PRODUCTION
    assert remote["downloadUrl"].startswith(url + "/v1/delivery/packages/bundles/bundle-2.zip?")
    assert sdk("download", url=remote["downloadUrl"]) == {"status": 200, "sha256": remote["packageHash"]}
    assert sdk("reportDownload", package=remote) == "ok"
    assert sdk("reportDeploy", package=remote, status="DeploymentSucceeded", previous="1.2.0") == "ok"
    assert sdk("reportDeploy", package=None) == "ok"  # the binary's bundle runs: no label, no status

    # Up to date by its hash; an older bundle's hash gets the newest.
    assert sdk("check", hash=remote["packageHash"], label="bundle-2") is None
    assert sdk("check", hash=hashlib.sha256(one).hexdigest(), label="bundle-1")["label"] == "bundle-2"
    # The deployment picks the bundles (filters.channels); the binary version their range (filters.appVersion).
    assert sdk("check", key=STAGING)["packageHash"] == hashlib.sha256(staged).hexdigest()
    assert sdk("check", app_version="2.0.0") is None
    assert sdk("check", app_version="0.9.0") == {"updateAppVersion": True, "appVersion": ">=1.0 <=1.9"}
    assert "404" in sdk("check", key="no-such-key-123")["error"]

    metrics = httpx.get(url + "/metrics").text
    assert 'mpaas_delivery_reports_total{app="SHOP",status="Downloaded",type="download",version="2"} 1.0' in metrics
    assert (
        'mpaas_delivery_reports_total{app="SHOP",status="DeploymentSucceeded",type="deploy",version="2"} 1.0' in metrics
    )
    assert 'mpaas_delivery_reports_total{app="SHOP",status="DeploymentSucceeded",type="deploy",version="binary"}' in (
        metrics
    )

    # bundle-2 rolled back: its devices go back to bundle-1.
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, *tasks({"bundle-2"})]))
    on_two = {"package_hash": hashlib.sha256(two).hexdigest(), "label": "bundle-2"}
    asyncio.run(eventually(lambda: raw(**on_two)["label"] == "bundle-1", timeout=10, what="the rollback applied"))
    assert sdk("check", hash=on_two["package_hash"], label="bundle-2")["label"] == "bundle-1"
    # Both rolled back: back to the binary's own bundle.
    (config / "all.yaml").write_text(yaml.safe_dump_all([GATEWAY, *tasks({"bundle-1", "bundle-2"})]))
    asyncio.run(eventually(lambda: raw(**on_two)["should_run_binary_version"], timeout=10, what="both rolled back"))
    info = raw(**on_two)
    assert info["is_available"] is False and info["is_disabled"] is True
    assert sdk("check", hash=on_two["package_hash"], label="bundle-2") is None  # the SDK: no update to fetch

    # The routes of the older SDKs answer camelCase.
    r = httpx.get(
        url + "/updateCheck",
        params={"deploymentKey": STAGING, "appVersion": "1.5", "clientUniqueId": "device-1"},
    )
    assert r.status_code == 200
    legacy = r.json()["updateInfo"]
    assert legacy["isAvailable"] is True and legacy["downloadURL"] and legacy["appVersion"] == "1.5"
    assert legacy["target_binary_range"] == "1.5"
    for path in ("/reportStatus/deploy", "/reportStatus/download"):
        body = {"deploymentKey": STAGING, "appVersion": "1.5", "label": "staged-3", "status": "DeploymentFailed"}
        assert httpx.post(url + path, json=body).status_code == 200
