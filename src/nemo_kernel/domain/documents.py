"""JSON and YAML documents as users send them (API bodies, bus petitions), parsed and checked whole.

A document is refused before anything reads it as a model: a key given twice (which would silently keep the last
value), nesting beyond :data:`MAX_DEPTH`, a lone surrogate, a non-finite number, an integer beyond 64 bits, or a
YAML value that has no JSON form (``!!binary``, sets); YAML dates and times are kept as the text written.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import yaml

from nemo_kernel.domain.common import INT64_MAX, field_path, is_valid_unicode

MAX_DEPTH = 32
"""How deeply a document may nest; real descriptors nest about 6 levels."""

MAX_VALUES = 200_000
"""How many values (scalars, lists, mappings) a document may hold, after YAML aliases are expanded."""


class DocumentError(ValueError):
    """A document that cannot be taken: it does not parse (``field`` is None), or ``field`` breaks a rule."""

    def __init__(self, message: str, field: str | None = None, problem: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem or message


class _DuplicateKey(ValueError):
    def __init__(self, key: object) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _float(text: str) -> float:
    # -0.0 + 0.0 is 0.0: a negative zero passes every `ge=0` bound and would be stored and shown as "-0.0".
    return float(text) + 0.0


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(key)
        document[key] = value
    return document


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice (it would keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges on purpose; the mapping may override what it merges
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base constructor refuses it
            if duplicate:
                raise _DuplicateKey(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        return float(super().construct_yaml_float(node)) + 0.0  # no negative zero, as in _float

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> str:  # type: ignore[override]
        # A date or time is kept as the text written: a datetime field parses it, a string field keeps it.
        return str(self.construct_scalar(node))


_StrictYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictYamlLoader.construct_yaml_timestamp)
_StrictYamlLoader.add_constructor("tag:yaml.org,2002:float", _StrictYamlLoader.construct_yaml_float)


def load_document(raw: bytes | str, *, yaml_syntax: bool) -> Any:
    """``raw`` parsed as YAML or JSON and checked with :func:`document_problem`; raises :class:`DocumentError`."""
    kind = "YAML" if yaml_syntax else "JSON"
    try:
        if yaml_syntax:
            document = yaml.load(raw, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader
        else:
            document = json.loads(raw, object_pairs_hook=_unique_pairs, parse_float=_float)
    except _DuplicateKey as exc:
        problem = f"duplicate key {exc.key!r}: each key may appear once in a mapping"
        raise DocumentError(problem, str(exc.key), problem) from exc
    except RecursionError as exc:
        # The parsers recurse per level: a document nested deeper than they follow is refused like any deep one.
        raise DocumentError(f"not valid {kind}: nested too deeply") from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise DocumentError(f"not valid {kind}: {_in_our_words(exc)}") from exc
    found = document_problem(document)
    if found is not None:
        field, problem = found
        raise DocumentError(f"{field}: {problem}", field, problem)
    return document


def _in_our_words(exc: Exception) -> str:
    # Python's limit on int() of long digit strings names no type of its own, and its message tells the caller to
    # call sys.set_int_max_str_digits(): say what is wrong with the document instead.
    if "integer string conversion" in str(exc):
        return f"a number with more than {sys.get_int_max_str_digits()} digits"
    return str(exc)


def document_problem(document: Any) -> tuple[str, str] | None:
    """Where a parsed document breaks the rules every input obeys, as ``(field path, problem)``; None if nowhere.

    The rules: only JSON types (mappings with string keys, lists, strings, numbers, booleans, null), strings of
    valid Unicode (a lone surrogate cannot be stored or answered), finite numbers, integers that fit 64 bits, at
    most :data:`MAX_DEPTH` levels and :data:`MAX_VALUES` values. Walked without recursion, so any depth is safe.
    """
    stack: list[tuple[Any, list[str | int]]] = [(document, [])]
    count = 0
    while stack:
        value, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return "(body)", f"more than {MAX_VALUES} values"
        if len(path) > MAX_DEPTH:
            return field_path(path[:MAX_DEPTH]), f"nested more than {MAX_DEPTH} levels deep"
        problem = _scalar_problem(value)
        if problem is not None:
            return field_path(path) or "(body)", problem
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, bool):
                    # YAML 1.1 reads a bare on/yes/y (off/no/n) key as a boolean: name the key it most likely was
                    word = "on" if key else "off"
                    problem = f'a bare {word}: key is read as {str(key).lower()} by YAML 1.1: quote it ("{word}":)'
                    return field_path([*path, word]), problem + (", or for a policy write triggers:" if key else "")
                if not isinstance(key, str):
                    return field_path(path) or "(body)", f"key {key!r} is not a string"
                if not is_valid_unicode(key):
                    problem = "is not valid text (a lone surrogate or a NUL character)"
                    return field_path(path) or "(body)", f"key {key!r} {problem}"
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(value))
    return None


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return None if is_valid_unicode(value) else "not valid text (a lone surrogate or a NUL character)"
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, int):
        return None if -INT64_MAX - 1 <= value <= INT64_MAX else "integer out of range (64 bits)"
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    return f"a YAML {type(value).__name__} value has no JSON form (quote it to make it a string)"


def load_yaml_stream(raw: bytes | str) -> list[Any]:
    """Every document of a YAML stream (``---`` between them), each parsed and checked like :func:`load_document`;
    raises :class:`DocumentError` (the field is prefixed with the document's index when there are several)."""
    try:
        documents = [d for d in yaml.load_all(raw, Loader=_StrictYamlLoader) if d is not None]
    except _DuplicateKey as exc:
        problem = f"duplicate key {exc.key!r}: each key may appear once in a mapping"
        raise DocumentError(problem, str(exc.key), problem) from exc
    except RecursionError as exc:
        raise DocumentError("not valid YAML: nested too deeply") from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise DocumentError(f"not valid YAML: {_in_our_words(exc)}") from exc
    # One document is checked as itself, so its fields are named as in a body of one; several by their index.
    found = document_problem(documents[0] if len(documents) == 1 else documents)
    if found is not None:
        field, problem = found
        raise DocumentError(f"{field}: {problem}", field, problem)
    return documents
