"""The mpaas operator: reconciles the four mpaas.io kinds into workloads and status.

Layout:
  main.py        kopf settings and start-up (peering, storage, timeouts)
  handlers.py    handler registration only: which event calls which reconcile
  reconcile/     one module per kind: read spec, apply children, compute status
  builders/      pure functions: spec -> child manifests (no API calls)
  kubeapi.py     every API write: server-side apply, owner references, status
  conditions.py  status conditions with stable transition times
  metrics.py     Prometheus metrics (reconciles, their duration, Events) and their /metrics endpoint
  releases.py    the one loop that checks DeliveryTask packages (package_check.py), advances their stages and
                 builds their diff packages (diff_builds.py)
"""
