import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpaas.rules import RuleError, bucket, compile_rule, percent_of, version_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("rule", "attrs", "expected"),
    [
        ("DEVICE_ID MOD 1000 IN (100..200, 450..600)", {"DEVICE_ID": "150"}, True),
        ("DEVICE_ID MOD 1000 IN (100..200, 450..600)", {"DEVICE_ID": "1450"}, True),
        ("DEVICE_ID MOD 1000 IN (100..200, 450..600)", {"DEVICE_ID": "300"}, False),
        ("DEVICE_ID MOD 1000 IN (100..200)", {}, False),
        ("CITY IN (Hangzhou, Shanghai)", {"CITY": "hangzhou"}, True),
        ("CITY NOT IN (Hangzhou)", {"CITY": "Beijing"}, True),
        ("city in (hangzhou) && brand == Acme", {"CITY": "Hangzhou", "BRAND": "ACME"}, True),
        ("APP_VERSION >= 2.1.0", {"APP_VERSION": "2.10"}, True),
        ("APP_VERSION >= 2.1.0", {"APP_VERSION": "2.0.9"}, False),
        ("APP_VERSION >= 2.1", {"APP_VERSION": "2.1.0"}, True),
        ("OS_VERSION < 14", {"OS_VERSION": "13.7.1"}, True),
        ('!(BRAND IN (Acme)) || USER_ID IN ("u 1")', {"BRAND": "Acme", "USER_ID": "u 1"}, True),
        ('!(BRAND IN (Acme)) || USER_ID IN ("u 1")', {"BRAND": "Acme", "USER_ID": "u2"}, False),
    ],
)
def test_rules_evaluate(rule: str, attrs: dict[str, str], expected: bool) -> None:
    assert compile_rule(rule)(attrs) is expected


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("", "empty rule"),
        ("FOO IN (1)", "unknown attribute"),
        ("CITY IN (a", "expected ')'"),
        ("DEVICE_ID MOD 0 IN (1)", "positive whole number"),
        ("DEVICE_ID MOD 10 IN (a)", "MOD results are numbers"),
        ("CITY IN (9..1)", "empty range"),
        ("CITY ==", "expected a value"),
        ("CITY IN (a) &&", "expected 'word'"),
        ("CITY IN (a) CITY", "unexpected"),
    ],
)
def test_bad_rules_say_where(rule: str, fragment: str) -> None:
    with pytest.raises(RuleError) as e:
        compile_rule(rule)
    assert fragment in str(e.value)


def test_mod_hash_is_stable_and_spreads() -> None:
    assert bucket("device-abc", 1000) == bucket("device-abc", 1000)
    hits = sum(percent_of(f"dev-{i}", 10) for i in range(20000))
    assert 1700 < hits < 2300, hits


def test_version_key_ignores_trailing_zeros() -> None:
    assert version_key("2.1.0") == version_key("2.1") < version_key("2.1.1")


def test_evaluation_takes_microseconds() -> None:
    rule = compile_rule(
        "DEVICE_ID MOD 1000 IN (100..200, 450..600) && CITY IN (Hangzhou, Shanghai) && APP_VERSION >= 2.1"
    )
    attrs = {"DEVICE_ID": "d-1234567", "CITY": "Shanghai", "APP_VERSION": "3.0"}
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        rule(attrs)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    assert per_call_us < 50, per_call_us


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_any_text_compiles_or_raises_rule_error(text: str) -> None:
    try:
        fn = compile_rule(text)
    except RuleError:
        return
    fn({"DEVICE_ID": "1", "CITY": "x", "APP_VERSION": "1.0"})
