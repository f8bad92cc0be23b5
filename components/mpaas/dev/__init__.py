"""`mpaas dev`: the whole platform in one process, for a laptop."""
