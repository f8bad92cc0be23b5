"""One module per kind: read the spec, apply children, write status. Each reconcile is idempotent."""
