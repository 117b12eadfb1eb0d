"""Shared building blocks of the domain models."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError, field_validator

# Matched with fullmatch: `$` would also match before a final newline ("pp\n").
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

INT64_MAX = 2**63 - 1
"""Integers beyond this do not fit the store's columns (and mean nothing as a count or a size)."""


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a DNS label (RFC 1123): lower-case letters, digits and '-', 1-63 characters."""
    return _DNS_LABEL.fullmatch(value) is not None


def _check_name(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError(
            "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, Strict(), AfterValidator(_check_name)]
"""A resource name (cluster, node, workload, namespace): a DNS label, as in Kubernetes."""


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings, overrides and isolates (CVE-2021-42574, "Trojan Source"): they reorder the text around them."""


def is_one_line(text: str) -> bool:
    """Whether ``text`` has no control character, line break, bidirectional override or other invisible format
    character: a newline in a name or a label is an attack on logs, terminals, file paths and pattern matches, and
    an override (U+202E) or an invisible character (U+200B, U+2060, U+FEFF: Unicode's format category, ``Cf``)
    makes a table or a log line show other text than it holds ("w\u200b1" shows as "w1"); none is part of a name.

    The two joiners (U+200C, U+200D) are allowed between two non-ASCII characters: Persian and Indic scripts spell
    words with them, and emoji sequences are joined by them; next to ASCII they only hide ("w\u200d1")."""
    for i, c in enumerate(text):
        if c in _JOINERS and _joins(text, i):
            continue
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c in _BIDI_CONTROLS:
            return False
    return True


_JOINERS = frozenset("\u200c\u200d")


def _joins(text: str, i: int) -> bool:
    """Whether the joiner at ``i`` sits between two visible non-ASCII characters (a joiner's only use)."""
    if i == 0 or i == len(text) - 1:
        return False
    before, after = text[i - 1], text[i + 1]
    return all(not x.isascii() and unicodedata.category(x)[0] in "LMS" for x in (before, after))


def _check_one_line(value: str) -> str:
    if not is_one_line(value):
        raise ValueError("one line of text, without control characters, bidi overrides or invisible characters")
    return value


OneLine = Annotated[str, Strict(), AfterValidator(_check_one_line)]
"""A short text shown in tables and logs, such as a region: one line, no control, bidi or invisible character."""


MAX_LABELS = 64
"""Labels one object (a cluster, a node, a workload's node selector) may hold: each is matched by the decision engine
and shown in tables, so their number is bounded where they are defined, not only by the size of a request."""
MAX_LABEL_NAME = 63
MAX_LABEL_PREFIX = 253
MAX_LABEL_VALUE = 253


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _check_label_key(value: str) -> str:
    if not value or not is_one_line(value):
        raise ValueError("a label key is one line of text, not empty, without control, bidi or invisible characters")
    # Kubernetes' qualified name: an optional prefix (a DNS subdomain) and '/', then the name proper, so that a
    # node's Kubernetes labels can be written as they are. The name proper stays any one-line text (wider than
    # Kubernetes' [A-Za-z0-9_.-]): labels NEMO stored before are not refused for it.
    if value.count("/") > 1:
        raise ValueError("a label key has at most one '/', between a prefix and the name (example.org/gpu)")
    prefix, slash, name = value.rpartition("/")
    if len(name) > MAX_LABEL_NAME or len(prefix) > MAX_LABEL_PREFIX:
        raise ValueError(
            f"a label key is at most {MAX_LABEL_NAME} characters, after an optional prefix of at most "
            f"{MAX_LABEL_PREFIX} and a '/' (example.org/gpu), as in Kubernetes"
        )
    if slash and not prefix:
        raise ValueError("a label key's prefix before the '/' is not empty (example.org/gpu), as in Kubernetes")
    if not name:
        raise ValueError("a label key's name after the '/' is not empty (example.org/gpu), as in Kubernetes")
    if prefix and not _DNS_SUBDOMAIN.fullmatch(prefix):
        raise ValueError(
            "a label key's prefix is a DNS subdomain: lowercase letters, digits, '-' and '.', each part starting "
            "and ending with a letter or digit (example.org/gpu), as in Kubernetes"
        )
    return value


def _check_label_value(value: str) -> str:
    if not is_one_line(value):
        raise ValueError("a label value is one line of text, without control, bidi or invisible characters")
    if len(value) > MAX_LABEL_VALUE:
        raise ValueError(f"a label value is at most {MAX_LABEL_VALUE} characters")
    return value


def _check_label_count(value: Any) -> Any:
    # before the entries are validated: a body of 100,000 labels is refused for its count, not checked label by label
    if isinstance(value, dict) and len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, not {len(value)}")
    return value


Labels = Annotated[
    dict[
        Annotated[str, Strict(), AfterValidator(_check_label_key)],
        Annotated[str, Strict(), AfterValidator(_check_label_value)],
    ],
    BeforeValidator(_check_label_count),
]
"""Labels of a cluster or node, and label selectors: one line of text each (``zone: a``, ``example.org/gpu: a100``),
at most :data:`MAX_LABELS` of them; keys bounded as Kubernetes' qualified names, values at most 253 characters."""

Lax = Strict(False)
"""Marks an enum or datetime field of a :class:`Spec` as lax: JSON, YAML and the store give them as strings."""


def derived_name(display_name: str) -> str:
    """A DNS label for a name that is not one: a lower-case slug, deterministic, e.g. ``My Service`` -> ``my-service``.

    Letters with accents lose them; what has no ASCII form is dropped. A name with nothing left, or too long,
    gets a short hash of the whole name so that different names stay different.
    """
    ascii_form = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_form.lower()).strip("-")
    if slug and len(slug) <= 63:
        return slug
    digest = hashlib.sha256(display_name.encode()).hexdigest()[:8]
    return f"{slug[:54].rstrip('-')}-{digest}" if slug else f"w-{digest}"


def field_path(parts: list[str | int]) -> str:
    """A field's location as API errors write it: ``services[0].Name``; a mapping's key at fault is named by itself
    (``deployment.env.A=B``: pydantic ends its location with a ``[key]`` marker)."""
    text = ""
    for part in parts:
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def stored_refusal(exc: ValidationError, what: str, remedy: str) -> str:
    """The message of an object whose stored ``what`` (descriptor, spec) an older NEMO stored and this version's
    checks refuse: the first field at fault and ``remedy`` (apply it again or delete it). The object is shown with
    that document as null and this message, so that one such row costs only itself."""
    first = exc.errors()[0]
    why = f"{field_path(list(first['loc'])) or what}: {first['msg'].removeprefix('Value error, ')}"
    return f"the stored {what} no longer passes this version's checks ({why}); {remedy}"


def is_valid_unicode(text: str) -> bool:
    """Whether ``text`` can be stored and answered: no lone surrogate (it cannot be encoded) and no NUL character
    (PostgreSQL's text cannot hold it, so SQLite and PostgreSQL would disagree)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Model(BaseModel):
    """Base for domain models: unknown fields are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Spec(Model):
    """Base for what users write (descriptors, cluster specs, petitions): strict types and finite numbers.

    ``replicas: true`` is not 1, ``1000.0`` is not an integer, a YAML ``!!binary`` value is not a string, and
    every string is valid Unicode. Enum and datetime fields are marked :data:`Lax`, as they come as strings.
    """

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        where = _bad_text(value)
        if where is not None:
            raise ValueError(f"{where + ': ' if where else ''}not valid text (a lone surrogate or a NUL character)")
        return value


def _bad_text(value: Any) -> str | None:
    """The path (within a field) of the first string or mapping key that is not valid Unicode, else None."""
    # Most fields are a number, a flag, an enum or a short string: answered without the walk (this validator runs
    # on every field of every spec, twenty-odd per node of a 10,000-node inventory).
    if isinstance(value, str):
        return None if is_valid_unicode(value) else ""
    if not isinstance(value, dict | list | tuple):
        return None  # a nested model validated its own fields
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_valid_unicode(item):
                return field_path(path)
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not is_valid_unicode(key):
                    return field_path(path)
                stack.append((child, [*path, str(key)]))
        elif isinstance(item, list | tuple):
            stack.extend((child, [*path, i]) for i, child in enumerate(item))
        # a nested model validated its own fields
    return None


def check_int64(value: Any) -> Any:
    """``value`` unchanged, if it is no integer beyond 64 bits (a before-validator: after it, one is a float)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError("integer out of range (64 bits)")
    return value


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
