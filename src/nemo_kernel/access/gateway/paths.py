"""One normal form for request paths, so that the route the gateway chooses is the path its upstream receives.

A route is chosen by path prefix, and its plugins (acl, oidc, rate limits) are the protection. Were the route
chosen on the path as sent, a path with dot segments (``/pub/../secret``, ``/pub/%2e%2e/secret``) would match a
less specific route than the one the upstream resolves it to. So the path is normalised once, the route is
matched on the normal form, and exactly that form goes upstream: it has no dot segments and no encoded
unreserved characters left for anyone downstream to resolve differently. Paths that upstreams read in more than
one way are refused instead: path parameters (``/pub/secret;x``, which Tomcat, Jetty and Spring strip) and empty
segments (``/pub//secret``, which many servers merge) would route as ``/pub`` and reach ``/pub/secret``.
"""

from __future__ import annotations

import string

#: RFC 3986 section 2.3: characters that mean the same encoded or not, so they are decoded.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
#: What a path may hold unencoded (section 3.3: pchar and "/"); anything else is percent-encoded.
_PATH_CHARS = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset(string.hexdigits)
#: Encoded "/" and "\": upstreams disagree on whether they separate segments, so no form of them is safe.
_SEPARATORS = frozenset({0x2F, 0x5C})


class PathRejected(ValueError):
    """A path with no safe normal form: it is refused (400) rather than guessed at."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise_path(raw: str) -> str:
    """The normal form of an absolute, percent-encoded path (RFC 3986 section 6.2.2).

    Unreserved characters are decoded (``%2e`` is ``.``), other percent-encodings get upper-case hex, characters
    a path may not hold are encoded, then dot segments are removed (section 5.2.4). Raises :class:`PathRejected`
    for an encoded ``/`` or ``\\``, a literal ``\\``, a malformed percent-encoding, a ``;`` (path parameters), an
    empty segment (``//``; a trailing ``/`` is not one), or ``..`` above the root.
    """
    if not raw.startswith("/"):
        raise PathRejected("path must start with /")
    # Checked on the raw path: an encoded ";" (%3B) stays encoded in the normal form, so only a literal one is a
    # parameter; and dot-segment removal never creates an empty segment, it only drops them.
    if ";" in raw:
        raise PathRejected("path parameters (';') in path")
    if "//" in raw:
        raise PathRejected("empty segment ('//') in path")
    if "%" not in raw and "/." not in raw and _PATH_CHARS.issuperset(raw):
        return raw  # the common case, already normal: one scan in C instead of one Python step per character
    return _remove_dot_segments(_normalise_encoding(raw))


def _normalise_encoding(raw: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "%":
            digits = raw[index + 1 : index + 3]
            if len(digits) != 2 or not _HEX.issuperset(digits):
                raise PathRejected("malformed percent-encoding in path")
            byte = int(digits, 16)
            if byte in _SEPARATORS:
                raise PathRejected("encoded '/' or '\\' in path")
            decoded = chr(byte)
            out.append(decoded if decoded in _UNRESERVED else f"%{byte:02X}")
            index += 3
            continue
        if char == "\\":
            raise PathRejected("backslash in path")
        out.append(char if char in _PATH_CHARS else "".join(f"%{b:02X}" for b in char.encode()))
        index += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    # Segment by segment, equivalent to section 5.2.4 on an absolute path, except that ".." at the root is an
    # error instead of being dropped: a path that tries to climb out is an attack, not a typo to repair.
    segments = path[1:].split("/")
    kept: list[str] = []
    last = len(segments) - 1
    for position, segment in enumerate(segments):
        if segment == "..":
            if not kept:
                raise PathRejected("path climbs above /")
            kept.pop()
        elif segment != ".":
            kept.append(segment)
            continue
        if position == last:
            kept.append("")  # "/a/b/.." is "/a/": a final dot segment leaves its directory's slash
    return "/" + "/".join(kept)
