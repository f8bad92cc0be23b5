"""Pieces every workload the operator builds shares: labels, security, probes, RBAC."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpaas import __version__
from mpaas.api import GROUP, KINDS
from mpaas.api.base import Autoscaling
from mpaas.component import Component

MANAGED_BY = "mpaas-operator"
OWNER_KIND_LABEL = f"{GROUP}/owner-kind"
OWNER_NAME_LABEL = f"{GROUP}/owner-name"


def reads_of(component: Component) -> list[str]:
    """The plurals of the mpaas.io kinds a registered component reads: what its Role lets it list and watch."""
    return [KINDS[kind].plural for kind in component.kinds]


def selector_labels(component: str, instance: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": f"mpaas-{component}", "app.kubernetes.io/instance": instance}


def labels(component: str, instance: str, owner_kind: str, version: str) -> dict[str, str]:
    return {
        **selector_labels(component, instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "mpaas",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": version,
        OWNER_KIND_LABEL: owner_kind,
        OWNER_NAME_LABEL: instance,
    }


def selector_string(sel: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def meta(name: str, namespace: str, lbls: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": lbls}


PRE_STOP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30  # the preStop wait, then the component's drain, then SIGKILL
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def component_container(
    *,
    component: str,
    image: str,
    pull_policy: str,
    port: int,
    env: dict[str, str],
    resources: dict[str, dict[str, str]],
    secret_env: dict[str, tuple[str, str]] | None = None,
    field_env: dict[str, str] | None = None,
    extra_ports: list[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    return {
        "name": component,
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": [component],
        "env": [
            {"name": "MPAAS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            # The pod writes the generation it has applied on itself (mpaas.applied): it names its own Pod.
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MPAAS_PORT", "value": str(port)},
            *({"name": k, "value": v} for k, v in sorted(env.items())),
            *(
                {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                for k, (secret, key) in sorted((secret_env or {}).items())
            ),
            *({"name": k, "valueFrom": {"fieldRef": {"fieldPath": f}}} for k, f in sorted((field_env or {}).items())),
        ],
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            *({"name": n, "containerPort": p, "protocol": "TCP"} for n, p in extra_ports or []),
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "initialDelaySeconds": 5,
        },
        "resources": {k: v for k, v in resources.items() if v},
        # Keep serving while the endpoints controller and kube-proxy take the pod out of the Service:
        # SIGTERM (and the drain) comes only after this, so a rolling update refuses no connection.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(
    *,
    name: str,
    namespace: str,
    lbls: dict[str, str],
    selector: dict[str, str],
    replicas: int | None,
    container: dict[str, Any],
    service_account: str,
    grace_seconds: int = TERMINATION_GRACE_SECONDS,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": {
            "metadata": {"labels": lbls, "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "http"}},
            "spec": {
                "serviceAccountName": service_account,
                "automountServiceAccountToken": True,
                "securityContext": POD_SECURITY,
                "terminationGracePeriodSeconds": grace_seconds,
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector},
                    }
                ],
            },
        },
    }
    if replicas is not None:  # absent when an HPA owns the replica count
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, namespace, lbls), "spec": spec}


def service(
    *,
    name: str,
    namespace: str,
    lbls: dict[str, str],
    selector: dict[str, str],
    port: int,
    extra_ports: list[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, namespace, lbls),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"},
                *({"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in extra_ports or []),
            ],
        },
    }


def hpa(
    *,
    name: str,
    namespace: str,
    lbls: dict[str, str],
    min_replicas: int,
    max_replicas: int,
    cpu_percent: int,
    metrics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name, namespace, lbls),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": metrics
            or [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu_percent}},
                }
            ],
        },
    }


def pdb(*, name: str, namespace: str, lbls: dict[str, str], selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, namespace, lbls),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def reader_rbac(
    *,
    name: str,
    namespace: str,
    lbls: dict[str, str],
    plurals: list[str],
    only: list[str] | None = None,
    secrets: list[str] | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount + Role + RoleBinding so a component can watch its own resources.

    `only` narrows the mpaas.io kinds to those object names, `secrets` names the Secrets it may read; a
    component watches each such object by name (a list or watch by `metadata.name` is checked against
    resourceNames). No names, no Secret access: an empty resourceNames would grant them all.

    Every component may also get and patch `pods/status` in its namespace, to tell on its own Pod which
    generation of its resource it has applied (mpaas.applied). Pod names are not known in advance, so the
    rule cannot name them; `pods` itself (labels, spec) is not granted.
    """
    read = ["get", "list", "watch"]
    rules: list[dict[str, Any]] = [
        {"apiGroups": [GROUP], "resources": plurals, "verbs": read, **({"resourceNames": only} if only else {})}
    ]
    rules.append({"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch"]})
    if secrets:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": read, "resourceNames": sorted(secrets)})
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(name, namespace, lbls),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(name, namespace, lbls),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(name, namespace, lbls),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


@dataclass
class Children:
    """What should exist, and which optional kinds should not (deleted if present)."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    absent: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)


@dataclass(frozen=True)
class Workload:
    """One component's workload, as an owner resource asks for it."""

    component: str
    child_name: str
    namespace: str
    instance: str  # the owner's name
    owner_kind: str
    image: str
    pull_policy: str
    port: int
    service_port: int
    env: dict[str, str]
    resources: dict[str, dict[str, str]]
    replicas: int
    autoscaling: Autoscaling | None
    reads: list[str]  # plurals of mpaas.io kinds the component watches
    reads_only: list[str] | None = None  # those kinds' object names it may read (None: all in the namespace)
    reads_secrets: list[str] = field(default_factory=list)  # names of the Secrets it may read
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # variable -> (Secret, key)
    field_env: dict[str, str] = field(default_factory=dict)  # variable -> the Pod's field (status.podIP)
    # Ports besides http, as (name, container port): on the container and, same number, on the Service.
    extra_ports: list[tuple[str, int]] = field(default_factory=list)
    grace_seconds: int = TERMINATION_GRACE_SECONDS
    hpa_metrics: list[dict[str, Any]] | None = None  # instead of CPU utilization


def workload_children(w: Workload) -> Children:
    """RBAC, Deployment and Service; an HPA when autoscaling; a PDB when more than one pod runs."""
    lbls = labels(w.component, w.instance, w.owner_kind, __version__)
    sel = selector_labels(w.component, w.instance)
    container = component_container(
        component=w.component,
        image=w.image,
        pull_policy=w.pull_policy,
        port=w.port,
        env=w.env,
        resources=w.resources,
        secret_env=w.secret_env,
        field_env=w.field_env,
        extra_ports=w.extra_ports,
    )
    out = Children()
    out.apply += reader_rbac(
        name=w.child_name,
        namespace=w.namespace,
        lbls=lbls,
        plurals=w.reads,
        only=w.reads_only,
        secrets=w.reads_secrets,
    )
    out.apply.append(
        deployment(
            name=w.child_name,
            namespace=w.namespace,
            lbls=lbls,
            selector=sel,
            replicas=None if w.autoscaling else w.replicas,
            container=container,
            service_account=w.child_name,
            grace_seconds=w.grace_seconds,
        )
    )
    out.apply.append(
        service(
            name=w.child_name,
            namespace=w.namespace,
            lbls=lbls,
            selector=sel,
            port=w.service_port,
            extra_ports=w.extra_ports,
        )
    )
    if w.autoscaling:
        a = w.autoscaling
        out.apply.append(
            hpa(
                name=w.child_name,
                namespace=w.namespace,
                lbls=lbls,
                min_replicas=a.min_replicas,
                max_replicas=a.max_replicas,
                cpu_percent=a.target_cpu_utilization_percent,
                metrics=w.hpa_metrics,
            )
        )
    else:
        out.absent.append(("HorizontalPodAutoscaler", w.child_name))
    if (w.autoscaling.min_replicas if w.autoscaling else w.replicas) > 1:
        out.apply.append(pdb(name=w.child_name, namespace=w.namespace, lbls=lbls, selector=sel))
    else:
        out.absent.append(("PodDisruptionBudget", w.child_name))
    return out
