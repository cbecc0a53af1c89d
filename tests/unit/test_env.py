"""ingestsite.env: the environment parsers settings.py and serve.py share."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from ingestsite.env import env_bool, env_float, env_int, env_list, env_str


def test_an_unset_or_blank_variable_gives_the_default(monkeypatch):
    monkeypatch.delenv("INGEST_TEST_VARIABLE", raising=False)
    assert env_int("INGEST_TEST_VARIABLE", 7) == 7
    monkeypatch.setenv("INGEST_TEST_VARIABLE", "  ")
    assert env_str("INGEST_TEST_VARIABLE", "fallback") == "fallback"
    assert env_float("INGEST_TEST_VARIABLE", 1.5) == 1.5
    assert env_bool("INGEST_TEST_VARIABLE", True) is True
    assert env_list("INGEST_TEST_VARIABLE", "a,b") == ["a", "b"]


def test_values_are_parsed_around_whitespace(monkeypatch):
    monkeypatch.setenv("INGEST_TEST_VARIABLE", " 42 ")
    assert env_int("INGEST_TEST_VARIABLE", 0) == 42
    assert env_float("INGEST_TEST_VARIABLE", 0.0) == 42.0
    monkeypatch.setenv("INGEST_TEST_VARIABLE", " a, ,b ")
    assert env_list("INGEST_TEST_VARIABLE") == ["a", "b"]


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("Yes", True), ("off", False)])
def test_a_boolean_takes_the_usual_words(monkeypatch, raw, expected):
    monkeypatch.setenv("INGEST_TEST_VARIABLE", raw)
    assert env_bool("INGEST_TEST_VARIABLE", not expected) is expected


@pytest.mark.parametrize(
    ("parse", "raw", "message"),
    [
        (env_int, "two", "INGEST_TEST_VARIABLE must be an integer, got 'two'"),
        (env_float, "soon", "INGEST_TEST_VARIABLE must be a number, got 'soon'"),
        (env_bool, "maybe", "INGEST_TEST_VARIABLE must be true or false, got 'maybe'"),
    ],
)
def test_a_malformed_value_names_its_variable(monkeypatch, parse, raw, message):
    monkeypatch.setenv("INGEST_TEST_VARIABLE", raw)
    with pytest.raises(ImproperlyConfigured, match=message):
        parse("INGEST_TEST_VARIABLE", 0)
