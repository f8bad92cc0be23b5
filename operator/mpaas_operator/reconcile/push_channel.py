"""PushChannel: the link workload for type Link; a credentials check for vendor channels.

A Link channel is Ready once its pods are and devices can authenticate (its token key Secret holds the key).
No vendor sender exists yet, so a vendor channel never reports Ready=True: Ready=False with reason
NotImplemented once its credentials are in place.
"""

from __future__ import annotations

from typing import Any

from mpaas.api import PUSH_CHANNEL, InvalidResource
from mpaas.api.push import REQUIRED_SECRET_KEYS, ChannelType, LinkSettings, PushChannelSpec
from mpaas.keyring import decode_secret
from mpaas.kube import SECRETS, ApiError, KubeClient
from mpaas.link.tokens import MIN_KEY_BYTES

from .. import conditions
from ..builders import link as builder
from ..kubeapi import apply_children
from ..settings import SETTINGS
from .applied import summarize, with_lag
from .common import (
    NOT_IMPLEMENTED,
    identity,
    kstatus,
    report,
    report_applied_only,
    report_invalid,
    report_workload,
    workload_conditions,
)


def _spec(body: dict[str, Any]) -> PushChannelSpec:
    return PUSH_CHANNEL.parse_spec(body)  # type: ignore[return-value]


async def reconcile(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    namespace, name, _ = identity(body)
    try:
        spec = _spec(body)
    except InvalidResource as e:
        await report_invalid(client, PUSH_CHANNEL, body, e)
        await _applied_of_invalid(client, body)
        return None
    if spec.type == ChannelType.LINK:
        link = spec.link or LinkSettings()
        await apply_children(
            client,
            body,
            builder.build(
                name,
                namespace,
                link,
                image=SETTINGS.image,
                pull_policy=SETTINGS.image_pull_policy,
                redis_url=SETTINGS.redis_url,
                custom_metrics=link.autoscaling is not None and await custom_metrics(client),
            ),
        )
        return await refresh(client, body)
    # Vendor channel: no workload of its own yet; make sure its credentials are usable.
    problem = await credentials_problem(client, namespace, spec)
    if problem:
        ready = conditions.condition("Ready", False, "CredentialsMissing", problem)
    else:
        ready = conditions.condition(
            "Ready",
            False,
            NOT_IMPLEMENTED,
            f"Secret {spec.credentials_secret_ref.name} has every key {spec.type} needs; "  # type: ignore[union-attr]
            f"no sender delivers through {spec.type} yet",
        )
    return await report(client, PUSH_CHANNEL, body, kstatus(ready))


async def token_problem(client: KubeClient, namespace: str, link: LinkSettings) -> str | None:
    """Why no device can authenticate to a Link channel, if none can."""
    ref = link.token_secret_ref
    if ref is None:
        return 'link.tokenSecretRef is not set: no device can connect (docs/link.md, "Tokens")'
    secret = await client.get(SECRETS, namespace, ref.name)
    if secret is None:
        return f"Secret {namespace}/{ref.name} (link.tokenSecretRef) not found: no device can connect"
    key = decode_secret(secret.get("data") or {}).get(ref.key, b"")
    if len(key) < MIN_KEY_BYTES:
        return (
            f"Secret {namespace}/{ref.name} has no {ref.key} of at least {MIN_KEY_BYTES} bytes: no device can connect"
        )
    return None


async def custom_metrics(client: KubeClient) -> bool:
    """Whether the cluster serves the custom metrics API (a Prometheus Adapter, say), so that a Link channel's
    autoscaler can follow connections per pod."""
    try:
        await client.request("GET", "/apis/custom.metrics.k8s.io/v1beta1")
    except ApiError:
        return False
    return True


async def credentials_problem(client: KubeClient, namespace: str, spec: PushChannelSpec) -> str | None:
    ref = spec.credentials_secret_ref
    if ref is None:  # the CRD requires it for vendor channels
        return "credentialsSecretRef is not set"
    secret = await client.get(SECRETS, namespace, ref.name)
    if secret is None:
        return f"Secret {namespace}/{ref.name} not found"
    data = decode_secret(secret.get("data") or {})  # an entry that is not base64 counts as missing
    missing = [k for k in REQUIRED_SECRET_KEYS[ChannelType(spec.type)] if not data.get(k, b"").strip()]
    if missing:
        return f"Secret {namespace}/{ref.name} lacks {', '.join(missing)} (needed for {spec.type})"
    return None


async def _applied_of_invalid(client: KubeClient, body: dict[str, Any]) -> None:
    """A refused Link channel's pods (of its last valid spec) go on telling which generation they run."""
    if (body.get("spec") or {}).get("type") == ChannelType.LINK:
        await report_applied_only(client, PUSH_CHANNEL, body, builder.selector(body["metadata"]["name"]))


async def refresh(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    """Status of a Link channel from its Deployment (after a reconcile, or when the Deployment changed)."""
    try:
        _spec(body)
    except InvalidResource:
        await _applied_of_invalid(client, body)
        return None

    namespace, name, generation = identity(body)
    spec = _spec(body)
    no_key = await token_problem(client, namespace, spec.link or LinkSettings())

    def compute(
        deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ready, reconciling, progress, counts = workload_conditions(deployment)
        if ready["status"] == "True" and no_key:
            ready = conditions.condition("Ready", False, "TokenKeyMissing", f"{progress}; but {no_key}")
        applied = summarize(pods, PUSH_CHANNEL.kind, namespace, name, generation)
        ready, reconciling, progress, reason = with_lag(applied, ready, reconciling, progress)
        return kstatus(ready, reconciling=reconciling, progress=progress, reason=reason), {
            "readyReplicas": counts.get("readyReplicas", 0),
            **applied.fields(),
        }

    return await report_workload(client, PUSH_CHANNEL, body, builder.child_name(name), builder.selector(name), compute)
