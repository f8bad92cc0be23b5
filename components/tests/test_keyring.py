"""Secrets as every component reads them (mpaas.keyring)."""

import base64

import pytest

from mpaas.config import Resource, unlisted
from mpaas.keyring import SECRET, decode_secret, secret_data

pytestmark = pytest.mark.unit


def test_an_entry_that_is_not_base64_counts_as_missing() -> None:
    good = base64.b64encode(b"key").decode()
    assert decode_secret({"a": good, "b": "not base64!", "c": "QUJD=x"}) == {"a": b"key"}


def test_secret_data_tells_missing_from_not_known_yet() -> None:
    data = {"hmacKey": base64.b64encode(b"k").decode()}
    resources = {
        SECRET: {("ns", "keys"): Resource(SECRET, "ns", "keys", 1, "", data, {})},
        unlisted(SECRET): {("ns", "later"): Resource(SECRET, "ns", "later", 0, "", None, {})},
    }
    assert secret_data(resources, "ns", "keys") == {"hmacKey": b"k"}
    assert secret_data(resources, "ns", "gone") == {}  # listed and absent: deleted
    assert secret_data(resources, "ns", "later") is None  # its watch has not listed it yet
    assert secret_data(resources, "ns", None) == {}
