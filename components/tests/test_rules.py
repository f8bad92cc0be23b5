import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpaas.rules import RuleError, bucket, compile_rule, parse_uint, percent_of, version_key

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
    a, b, c = version_key("2.1.0"), version_key("2.1"), version_key("2.1.1")
    assert a is not None and b is not None and c is not None
    assert a == b < c


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("007", 7),
        ("123456789012345678", 123456789012345678),
        ("1234567890123456789", None),  # more than 18 digits
        ("", None),
        ("\u00b2", None),  # isdigit() says yes, int() says no
        ("1\u00b2", None),
        ("\u0663", None),  # an Arabic-Indic digit: int() takes it, no protocol field holds it
        (" 7", None),
        ("7 ", None),
        ("+7", None),
        ("-7", None),
        ("1_000", None),
        ("9" * 5000, None),  # int() refuses over 4300 digits; the bound refuses far sooner
    ],
)
def test_parse_uint_takes_ascii_digits_only_and_bounded(text: str, expected: int | None) -> None:
    assert parse_uint(text) == expected


@pytest.mark.parametrize(
    "value",
    ["\u00b2", "1\u00b2", "\u00b9\u00b2\u00b3", "9" * 5000, "1" * 4301, "\u0663", "", "1." * 3000, "\ud800"],
)
@pytest.mark.parametrize(
    "rule",
    [
        "DEVICE_ID MOD 100 IN (0..49)",
        "DEVICE_ID MOD 100 == 7",
        "DEVICE_ID IN (1..100)",
        "DEVICE_ID >= 10",
        "DEVICE_ID < 10",
        "APP_VERSION >= 2.1",
        "OS_VERSION < 14",
        "USER_ID IN (a, 5..9)",
    ],
)
def test_no_client_value_makes_a_rule_raise(rule: str, value: str) -> None:
    attrs = {"DEVICE_ID": value, "APP_VERSION": value, "OS_VERSION": value, "USER_ID": value}
    assert compile_rule(rule)(attrs) in (True, False)


def test_numbers_and_versions_from_clients_keep_their_meaning() -> None:
    assert bucket("1450", 1000) == 450
    assert bucket("\u00b2", 100) == bucket("\u00b2", 100)  # hashed as text, stably
    assert compile_rule("DEVICE_ID IN (1..100)")({"DEVICE_ID": "\u00b2"}) is False
    assert compile_rule("DEVICE_ID >= 10")({"DEVICE_ID": "9" * 30}) is False  # too long to be a number
    assert compile_rule("APP_VERSION >= 2.1")({"APP_VERSION": "2.1.0-beta"}) is True
    assert compile_rule("APP_VERSION >= 2.1")({"APP_VERSION": "1." + "9" * 40}) is False
    assert version_key("1." * 40) is None and version_key("1." + "9" * 19) is None


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


def test_nesting_is_bounded_with_a_rule_error_not_a_recursion_error() -> None:
    for deep in ("!" * 1000 + "CITY == a", "(" * 500 + "CITY == a" + ")" * 500):
        with pytest.raises(RuleError, match="nested deeper than 32"):
            compile_rule(deep)
    ok = compile_rule("!" * 32 + "CITY == a")  # as deep as it may go: parsed and evaluated
    assert ok({"CITY": "a"}) is True
