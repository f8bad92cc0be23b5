"""Pure builders: a resource's spec in, child manifests out. No API calls here."""
