"""PushChannel: the link workload for type Link; the sender workload and a credentials check for vendor types.

A Link channel is Ready once its pods are and devices can authenticate (its token key Secret holds the key).
A vendor channel is Ready once its sender pods are and the vendor took its credentials: condition
CredentialsValid says what the vendor answered (checked when the spec or the Secret changes, and every
CHECK_SECONDS), with the vendor's own words when it refused them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from mpaas.api import PUSH_CHANNEL, InvalidResource
from mpaas.api.push import ChannelType, LinkSettings, PushChannelSpec, missing_secret_keys
from mpaas.keyring import decode_secret
from mpaas.kube import SECRETS, ApiError, KubeClient
from mpaas.link.tokens import MIN_KEY_BYTES
from mpaas.push.config import Clients
from mpaas.push.vendors.base import CredentialCheck

from .. import conditions
from ..builders import link as builder
from ..builders import push as sender_builder
from ..kubeapi import apply_children
from ..settings import SETTINGS
from .applied import summarize, with_lag
from .common import (
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
    # Vendor channel: its Secret must hold what the vendor needs, then the sender pods, then the vendor's word.
    problem = await credentials_problem(client, namespace, spec)
    if problem:
        ready = conditions.condition("Ready", False, "CredentialsMissing", problem)
        return await report(client, PUSH_CHANNEL, body, kstatus(ready))
    if not (SETTINGS.redis_url and SETTINGS.kafka_url):
        ready = conditions.condition(
            "Ready",
            False,
            "StoresMissing",
            "the operator has no MPAAS_OPERATOR_REDIS_URL and MPAAS_OPERATOR_KAFKA_URL: sender pods need push's "
            "Redis and Kafka (the chart's push values)",
        )
        return await report(client, PUSH_CHANNEL, body, kstatus(ready))
    await apply_children(
        client,
        body,
        sender_builder.build(
            name,
            namespace,
            spec,
            image=SETTINGS.image,
            pull_policy=SETTINGS.image_pull_policy,
            redis_url=SETTINGS.redis_url,
            kafka_url=SETTINGS.kafka_url,
            replicas=SCALED.get((namespace, name)),
        ),
    )
    await check_credentials(client, namespace, name, spec)
    return await refresh(client, body)


CHECK_SECONDS = 600.0  # a vendor channel's credentials are asked about again this often
SCALED: dict[tuple[str, str], int] = {}  # channel -> the replicas lag scaling chose last (push_stats.py)


@dataclass
class Checked:
    fingerprint: str
    result: CredentialCheck
    at: float


_checked: dict[tuple[str, str], Checked] = {}
_clients = Clients()
log = logging.getLogger(__name__)


async def check_credentials(
    client: KubeClient, namespace: str, name: str, spec: PushChannelSpec, *, force: bool = False
) -> CredentialCheck | None:
    """Ask the vendor whether the channel's credentials work, unless asked less than CHECK_SECONDS ago with the
    same spec and Secret; None when the Secret cannot make a client."""
    ref = spec.credentials_secret_ref
    secret = await client.get(SECRETS, namespace, ref.name) if ref else None
    data = decode_secret((secret or {}).get("data") or {})
    fingerprint = hashlib.sha256(
        json.dumps([spec.model_dump(mode="json"), sorted((k, v.hex()) for k, v in data.items())]).encode()
    ).hexdigest()
    seen = _checked.get((namespace, name))
    if seen and seen.fingerprint == fingerprint and not force and time.monotonic() - seen.at < CHECK_SECONDS:
        return seen.result
    vendor, problem = _clients.get((namespace, name), spec, data)
    if vendor is None:
        result = CredentialCheck(False, "InvalidCredentials", problem or "the credentials do not make a client")
    else:
        try:
            result = await vendor.check_credentials()
        except Exception as e:  # a client's bug must not stop the reconcile: reported as the vendor's silence
            result = CredentialCheck(False, "Unreachable", f"the check failed: {e!r}"[:500])
    if seen is None or seen.result != result:
        log.info("PushChannel %s/%s: credentials %s: %s", namespace, name, result.reason, result.message[:200])
    _checked[(namespace, name)] = Checked(fingerprint, result, time.monotonic())
    return result


def last_check(namespace: str, name: str) -> CredentialCheck | None:
    seen = _checked.get((namespace, name))
    return seen.result if seen is not None else None


def forget(namespace: str, name: str) -> None:
    _checked.pop((namespace, name), None)
    SCALED.pop((namespace, name), None)
    _clients.keep_only({k for k in _checked})


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
    missing = missing_secret_keys(ChannelType(spec.type), data)
    if missing:
        return f"Secret {namespace}/{ref.name} lacks {', '.join(missing)} (needed for {spec.type})"
    return None


async def _applied_of_invalid(client: KubeClient, body: dict[str, Any]) -> None:
    """A refused Link channel's pods (of its last valid spec) go on telling which generation they run."""
    if (body.get("spec") or {}).get("type") == ChannelType.LINK:
        await report_applied_only(client, PUSH_CHANNEL, body, builder.selector(body["metadata"]["name"]))


async def refresh(client: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    """Status of a channel from its Deployment (after a reconcile, or when the Deployment changed)."""
    try:
        _spec(body)
    except InvalidResource:
        await _applied_of_invalid(client, body)
        return None

    namespace, name, generation = identity(body)
    spec = _spec(body)
    if spec.type != ChannelType.LINK:
        return await _refresh_vendor(client, body, spec)
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


async def _refresh_vendor(client: KubeClient, body: dict[str, Any], spec: PushChannelSpec) -> dict[str, Any] | None:
    namespace, name, generation = identity(body)
    if await credentials_problem(client, namespace, spec) or not (SETTINGS.redis_url and SETTINGS.kafka_url):
        return None  # the reconcile reported why there are no senders
    checked = await check_credentials(client, namespace, name, spec)

    def compute(
        deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ready, reconciling, progress, counts = workload_conditions(deployment)
        if checked is not None and not checked.ok and checked.reason != "Unreachable":
            ready = conditions.condition(
                "Ready", False, "CredentialsInvalid", f"{spec.type} refused the credentials: {checked.message}"[:1000]
            )
        applied = summarize(pods, PUSH_CHANNEL.kind, namespace, name, generation)
        ready, reconciling, progress, reason = with_lag(applied, ready, reconciling, progress)
        conds = kstatus(ready, reconciling=reconciling, progress=progress, reason=reason)
        if checked is not None:
            conds.append(
                conditions.condition(
                    "CredentialsValid",
                    checked.ok if checked.reason != "Unreachable" else None,
                    checked.reason,
                    checked.message[:1000] or ("the vendor took them" if checked.ok else "refused"),
                )
            )
        return conds, {"readyReplicas": counts.get("readyReplicas", 0), **applied.fields()}

    return await report_workload(
        client, PUSH_CHANNEL, body, sender_builder.child_name(name), sender_builder.selector(name), compute
    )
