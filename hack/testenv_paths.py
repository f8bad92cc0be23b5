"""Where the test environment's binaries live (the version-keyed cache of hack/testenv)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

HACK = Path(__file__).resolve().parent


def versions() -> dict[str, str]:
    out = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = shlex.split(v)[0] if v else ""
    return out


def cache() -> Path:
    return Path(os.environ.get("MPAAS_CACHE", Path.home() / ".cache" / "mpaas-testenv"))


def kubectl() -> str:
    path = cache() / f"kubernetes-{versions()['K8S_VERSION']}" / "kubectl"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run hack/testenv/build-k8s.sh")
    return str(path)


def helm() -> str:
    return str(cache() / f"helm-{versions()['HELM_VERSION']}" / "helm")


def tsc() -> str:
    return str(cache() / f"typescript-{versions()['TYPESCRIPT_VERSION']}" / "node_modules" / ".bin" / "tsc")


def peer_sdks() -> str:
    """node_modules holding the peers' SDKs (hack/testenv/fetch-peer-sdks.sh)."""
    v = versions()
    name = f"peer-sdks-posthog-{v['POSTHOG_NODE_VERSION']}-countly-{v['COUNTLY_SDK_NODEJS_VERSION']}"
    return str(cache() / name / "node_modules")


def code_push_sdk() -> str:
    """node_modules holding CodePush's acquisition SDK, the `code-push` package (hack/testenv/fetch-peer-sdks.sh)."""
    return str(cache() / f"peer-sdks-code-push-{versions()['CODE_PUSH_VERSION']}" / "node_modules")


def node_ws() -> str:
    """node_modules holding `ws`, Node 20's WebSocket (hack/testenv/fetch-peer-sdks.sh)."""
    return str(cache() / f"node-ws-{versions()['WS_VERSION']}" / "node_modules")


def proguard_classpath() -> str:
    """ProGuard's jars (hack/testenv/fetch-proguard.sh)."""
    libs = cache() / f"proguard-{versions()['PROGUARD_VERSION']}" / "libs"
    return ":".join(str(p) for p in sorted(libs.glob("*.jar")))


def kotlin_stdlib() -> str:
    v = versions()["KOTLIN_VERSION"]
    return str(cache() / f"kotlin-{v}" / "libs" / f"kotlin-stdlib-{v}.jar")


def kotlin_classpath() -> str:
    libs = cache() / f"kotlin-{versions()['KOTLIN_VERSION']}" / "libs"
    return ":".join(str(p) for p in sorted(libs.glob("*.jar")))


if __name__ == "__main__":
    import sys

    print({"kubectl": kubectl, "helm": helm}[sys.argv[1]]())
