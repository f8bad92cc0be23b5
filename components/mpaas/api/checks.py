"""Rules the CRD schema cannot express: references between fields and the gray-rule language.

`Kind.parse_spec` runs these after the model validates, so the operator (which
turns failures into `Ready=False, reason InvalidSpec`) and the components
(which keep the last good config) judge a resource the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ..rules import RuleError, compile_rule
from .base import ApiModel
from .delivery import DeliveryTaskSpec
from .gateway import GatewaySpec


def _rule(where: str, rule: str | None, problems: list[str]) -> None:
    if rule:
        try:
            compile_rule(rule)
        except RuleError as e:
            problems.append(f"{where}: {e}")


ROLLOUT_NOT_IMPLEMENTED = (
    "spec.rollout: stepwise rollouts are not implemented yet; remove it "
    "(gateway pods roll out with their Deployment's rolling update)"
)


def check_gateway(spec: GatewaySpec) -> list[str]:
    problems: list[str] = []
    if spec.rollout is not None:  # refused rather than accepted and ignored (the CRD refuses it too)
        problems.append(ROLLOUT_NOT_IMPLEMENTED)
    upstreams = {u.name for u in spec.upstreams}
    app_ids = {a.app_id for a in spec.apps}
    groups = {u.name for u in spec.upstreams if u.clusters}
    for i, u in enumerate(spec.upstreams):
        seen: set[str] = set()
        for j, member in enumerate(u.clusters):
            where = f"spec.upstreams[{i}].clusters[{j}].upstream"
            if member.upstream == u.name:
                problems.append(f"{where}: a cluster group cannot contain itself")
            elif member.upstream not in upstreams:
                problems.append(f"{where}: no upstream named {member.upstream!r}")
            elif member.upstream in groups:
                problems.append(f"{where}: {member.upstream!r} is a cluster group itself; list its members instead")
            elif member.upstream in seen:
                problems.append(f"{where}: {member.upstream!r} is listed twice")
            seen.add(member.upstream)
        if u.failover_upstream is not None:
            if u.failover_upstream == u.name:
                problems.append(f"spec.upstreams[{i}].failoverUpstream: an upstream cannot fail over to itself")
            elif u.failover_upstream not in upstreams:
                problems.append(f"spec.upstreams[{i}].failoverUpstream: no upstream named {u.failover_upstream!r}")
    sv = spec.session_validation
    if sv is not None and sv.upstream not in upstreams:
        problems.append(f"spec.sessionValidation.upstream: no upstream named {sv.upstream!r}")
    for i, a in enumerate(spec.apis):
        where = f"spec.apis[{i}] ({a.operation_type})"
        if a.auth_required and sv is None:
            problems.append(f"{where}.authRequired: set spec.sessionValidation to say how logins are checked")
        if a.upstream not in upstreams:
            problems.append(f"{where}.upstream: no upstream named {a.upstream!r}")
        if a.canary is not None:
            if a.canary.upstream not in upstreams:
                problems.append(f"{where}.canary.upstream: no upstream named {a.canary.upstream!r}")
            elif a.canary.upstream == a.upstream:
                problems.append(f"{where}.canary.upstream: the canary must go to another upstream than {a.upstream!r}")
            _rule(f"{where}.canary.rule", a.canary.rule, problems)
        unknown = [x for x in a.apps if app_ids and x not in app_ids]
        if unknown:
            problems.append(f"{where}.apps: {', '.join(unknown)} not listed in spec.apps")
    # A CodePush client names its app by the key alone: one key, one deployment (across gateways: apps.py).
    keys: dict[str, str] = {}
    for i, app in enumerate(spec.apps):
        for j, d in enumerate(app.code_push.deployments if app.code_push is not None else ()):
            where = f"spec.apps[{i}].codePush.deployments[{j}].key"
            if d.key in keys:
                problems.append(f"{where}: the key of {keys[d.key]} already; each deployment needs its own key")
            else:
                keys[d.key] = f"{app.app_id}/{app.workspace_id} {d.platform} {d.name}"
    return problems


def check_delivery_task(spec: DeliveryTaskSpec) -> list[str]:
    problems: list[str] = []
    _rule("spec.targeting.rule", spec.targeting.rule, problems)
    percents = [s.percent for s in spec.stages]
    if any(b < a for a, b in itertools.pairwise(percents)):
        problems.append(f"spec.stages: percents must not decrease (got {percents})")
    if any(s.duration_seconds is None for s in spec.stages[:-1]):
        problems.append("spec.stages: every stage but the last needs durationSeconds")
    wl = spec.targeting.whitelist
    if wl is not None and wl.only and not (wl.user_ids or wl.device_ids or wl.user_ids_object or wl.device_ids_object):
        problems.append("spec.targeting.whitelist.only is set but the whitelist is empty")
    return problems


CHECKS: dict[type[ApiModel], Callable[..., list[str]]] = {
    GatewaySpec: check_gateway,
    DeliveryTaskSpec: check_delivery_task,
}
