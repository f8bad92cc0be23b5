"""A small async Kubernetes API client shared by the components and the operator.

Credentials come from the official client's loaders (kubeconfig, exec plugins,
in-cluster service account); requests go through one pooled httpx client so
watches and writes run on the event loop without threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
STRATEGIC_MERGE_CONTENT_TYPE = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: Any, method: str, path: str):
        self.status = status
        self.body = body
        reason = body.get("message") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path}: HTTP {status}: {reason}")

    @property
    def reason(self) -> str:
        return self.body.get("reason", "") if isinstance(self.body, dict) else ""


_REACHABLE_CACHE_SECONDS = 0.2
_REACHABLE_CONNECT_SECONDS = 0.3


class Gone(ApiError):
    """HTTP 410: the resourceVersion we resumed from is too old; re-list."""


def api_error(status: int, body: Any, method: str, path: str) -> ApiError:
    """The error for a failed call or watch: Gone for 410, so a watcher knows to re-list."""
    return (Gone if status == 410 else ApiError)(status, body, method, path)


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


SECRETS = ResourceType("", "v1", "secrets")
SERVICES = ResourceType("", "v1", "services")
PODS = ResourceType("", "v1", "pods")
DEPLOYMENTS = ResourceType("apps", "v1", "deployments")
HPAS = ResourceType("autoscaling", "v2", "horizontalpodautoscalers")
PDBS = ResourceType("policy", "v1", "poddisruptionbudgets")
SERVICE_ACCOUNTS = ResourceType("", "v1", "serviceaccounts")
ROLES = ResourceType("rbac.authorization.k8s.io", "v1", "roles")
ROLE_BINDINGS = ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings")
INGRESSES = ResourceType("networking.k8s.io", "v1", "ingresses")

# The built-in kinds the platform writes, by kind name.
BUILTIN: dict[str, ResourceType] = {
    "Secret": SECRETS,
    "Service": SERVICES,
    "Pod": PODS,
    "Deployment": DEPLOYMENTS,
    "HorizontalPodAutoscaler": HPAS,
    "PodDisruptionBudget": PDBS,
    "ServiceAccount": SERVICE_ACCOUNTS,
    "Role": ROLES,
    "RoleBinding": ROLE_BINDINGS,
    "Ingress": INGRESSES,
}


def _load_configuration(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.Configuration:
    cfg = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
        if kubeconfig is None:
            return cfg
    except k8s_config.ConfigException:
        pass
    k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return cfg


class KubeClient:
    """Async access to the API server: get, list, watch, server-side apply, status, delete."""

    def __init__(self, kubeconfig: str | None = None, *, context: str | None = None, timeout: float = 30.0):
        cfg = _load_configuration(kubeconfig, context)
        self._cfg = cfg
        verify: ssl.SSLContext | bool = False
        if cfg.verify_ssl:
            ctx = (
                ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
            )
            if cfg.cert_file and cfg.key_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            verify = ctx
        self.host = cfg.host.rstrip("/")
        self._reachable, self._reachable_at = False, -1.0
        self._http = httpx.AsyncClient(
            base_url=self.host,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        # The hook refreshes exec-plugin and service-account tokens when they rotate.
        if self._cfg.refresh_api_key_hook is not None:
            self._cfg.refresh_api_key_hook(self._cfg)
        token = self._cfg.get_api_key_with_prefix("BearerToken") or self._cfg.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token if token.lower().startswith("bearer") else f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def close(self) -> None:
        await self._http.aclose()

    async def reachable(self) -> bool:
        """Whether the API server accepts TCP connections now: one connect, no request (cheap while it is away).

        Watches backing off after an outage probe this, so they resume as soon as the server is back.
        Probes within `_REACHABLE_CACHE_SECONDS` of each other share one answer.
        """
        now = time.monotonic()
        if now - self._reachable_at < _REACHABLE_CACHE_SECONDS:
            return self._reachable
        self._reachable_at = now
        url = httpx.URL(self.host)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, port), _REACHABLE_CONNECT_SECONDS)
            writer.close()
            self._reachable = True
        except (OSError, TimeoutError):
            self._reachable = False
        return self._reachable

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            content_type = content_type or "application/json"
        resp = await self._http.request(
            method, path, params=params, content=content, headers=self._headers(content_type)
        )
        data = (
            resp.json()
            if resp.content and resp.headers.get("content-type", "").startswith("application/json")
            else resp.text
        )
        if resp.status_code >= 400:
            raise api_error(resp.status_code, data, method, path)
        return data if isinstance(data, dict) else {"raw": data}

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", rt.path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return await self.request("GET", rt.path(namespace), params=params)

    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events; raises Gone when resourceVersion is too old."""
        params: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        path = rt.path(namespace)
        timeout = httpx.Timeout(connect=5.0, read=timeout_seconds + 30, write=10.0, pool=5.0)
        async with self._http.stream("GET", path, params=params, headers=self._headers(), timeout=timeout) as resp:
            if resp.status_code >= 400:
                body = await resp.aread()
                raise api_error(resp.status_code, body.decode(errors="replace"), "WATCH", path)
            async for line in resp.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    raise api_error(int(status.get("code") or 500), status, "WATCH", path)
                yield event

    async def apply(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        *,
        field_manager: str,
        subresource: str | None = None,
        force: bool = True,
    ) -> dict[str, Any]:
        """Server-side apply: we own exactly the fields we send."""
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            rt.path(meta.get("namespace"), meta["name"], subresource),
            params={"fieldManager": field_manager, "force": "true" if force else "false"},
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
        )

    async def merge_patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await self._patch(rt, namespace, name, patch, subresource, MERGE_CONTENT_TYPE)

    async def strategic_patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Strategic merge patch (built-in kinds only): lists with a merge key, such as a Pod's conditions, are
        merged entry by entry instead of replaced, so the kubelet's own entries stay."""
        return await self._patch(rt, namespace, name, patch, subresource, STRATEGIC_MERGE_CONTENT_TYPE)

    async def _patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None,
        content_type: str,
    ) -> dict[str, Any]:
        return await self.request("PATCH", rt.path(namespace, name, subresource), body=patch, content_type=content_type)

    async def create(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", rt.path(obj["metadata"].get("namespace")), body=obj)

    async def delete(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        """Delete (foreground-independent); False when it was already gone."""
        try:
            await self.request("DELETE", rt.path(namespace, name), body={"propagationPolicy": "Background"})
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise
