"""Cryptography the platform needs beyond the `cryptography` package: SM2, request signatures, envelopes."""
