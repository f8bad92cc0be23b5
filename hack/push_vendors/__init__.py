"""Local stand-ins for the push vendors' HTTP APIs, used by tests and benchmarks."""
