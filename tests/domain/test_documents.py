"""Documents as users send them (API bodies, bus petitions): parsed and checked whole, never half-read."""

from __future__ import annotations

import pytest

from nemo_kernel.domain import MAX_DEPTH, DocumentError, load_document
from nemo_kernel.domain.documents import load_yaml_stream


@pytest.mark.parametrize(
    ("raw", "yaml_syntax", "field", "problem"),
    [
        ('{"name": "a", "name": "b"}', False, "name", "duplicate key 'name'"),
        ("name: a\nname: b\n", True, "name", "duplicate key 'name'"),
        ("x:\n  k: 1\n  k: 2\n", True, "k", "duplicate key 'k'"),
        ('{"a": "\\ud800"}', False, "a", "not valid text"),
        ('{"a": ["ok", {"\\udc00": 1}]}', False, "a[1]", "not valid text"),
        ('a: "\\ud800"', True, "a", "not valid text"),
        ('{"a": "x\\u0000y"}', False, "a", "not valid text"),
        ('{"cpu": Infinity}', False, "cpu", "finite"),
        ('{"cpu": -Infinity}', False, "cpu", "finite"),
        ('{"cpu": NaN}', False, "cpu", "finite"),
        ('{"cpu": 1e309}', False, "cpu", "finite"),
        ("cpu: .nan", True, "cpu", "finite"),
        ('{"n": 9223372036854775808}', False, "n", "64 bits"),
        ("name: !!binary d2Vi", True, "name", "no JSON form"),
        ("tags: !!set {a, b}", True, "tags", "no JSON form"),
        ("1: a", True, "(body)", "not a string"),
        ("x:\n  on: [violated]\n", True, "x.on", "a bare on: key is read as true by YAML 1.1: quote it"),
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", False, "a" + "[0]" * (MAX_DEPTH - 1), f"more than {MAX_DEPTH}"),
    ],
)
def test_a_bad_value_names_its_field(raw: str, yaml_syntax: bool, field: str, problem: str) -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(raw, yaml_syntax=yaml_syntax)
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("raw", "yaml_syntax"),
    [
        ("[" * 100_000 + "]" * 100_000, False),
        ('{"a":' * 5000 + "1" + "}" * 5000, False),
        ("[" * 5000 + "]" * 5000, True),
        ("".join(" " * i + "a:\n" for i in range(2000)), True),
        ("{not json", False),
        ("a: [unclosed", True),
    ],
)
def test_what_does_not_parse_is_refused_without_a_field(raw: str, yaml_syntax: bool) -> None:
    with pytest.raises(DocumentError) as caught:
        load_document(raw, yaml_syntax=yaml_syntax)
    assert caught.value.field is None


def test_good_documents_and_yaml_merges_are_kept() -> None:
    assert load_document('{"a": [1, 2.5, true, null, "x"]}', yaml_syntax=False) == {"a": [1, 2.5, True, None, "x"]}
    merged = load_document("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n", yaml_syntax=True)
    assert merged["other"] == {"x": 3, "y": 2}
    # YAML dates and times stay the text written (a datetime field parses it, a string field keeps it).
    dates = load_document("d: 2024-01-01\nt: 2026-01-01T00:00:00Z\n", yaml_syntax=True)
    assert dates == {"d": "2024-01-01", "t": "2026-01-01T00:00:00Z"}


def test_a_yaml_alias_bomb_is_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(DocumentError) as caught:
        load_document("\n".join(lines), yaml_syntax=True)
    assert "values" in caught.value.problem


@pytest.mark.parametrize(
    ("raw", "yaml_syntax"),
    [('{"latency_ms": -0.0, "at": [-0.0e5]}', False), ("latency_ms: -0.0\nat: [-0.0e+5]\n", True)],
)
def test_negative_zero_is_read_as_zero(raw: str, yaml_syntax: bool) -> None:
    # -0.0 passes `ge=0` and would be stored and shown as "-0.0" (a latency, a threshold of minus nothing)
    document = load_document(raw, yaml_syntax=yaml_syntax)
    assert document == {"latency_ms": 0.0, "at": [0.0]}
    assert str(document["latency_ms"]) == str(document["at"][0]) == "0.0"


@pytest.mark.parametrize(
    ("raw", "yaml_syntax"), [('{"n": ' + "9" * 5000 + "}", False), ("n: " + "9" * 5000 + "\n", True)]
)
def test_an_integer_of_thousands_of_digits_is_refused_in_our_words(raw: str, yaml_syntax: bool) -> None:
    # Python's own message told the caller to call sys.set_int_max_str_digits()
    with pytest.raises(DocumentError) as caught:
        load_document(raw, yaml_syntax=yaml_syntax)
    assert "sys." not in str(caught.value) and "more than 4300 digits" in str(caught.value), str(caught.value)


def test_a_yaml_stream_names_fields_as_a_body_does_and_by_index_when_there_are_several() -> None:
    with pytest.raises(DocumentError) as one:
        load_yaml_stream("policies:\n  - {action: move, on: [violated]}\n")
    assert one.value.field == "policies[0].on"
    with pytest.raises(DocumentError) as several:
        load_yaml_stream("a: 1\n---\nb: .nan\n")
    assert several.value.field == "[1].b"
    assert load_yaml_stream("a: 1\n---\nb: 2\n") == [{"a": 1}, {"b": 2}]
