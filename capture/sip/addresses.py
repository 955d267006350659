"""SIP header values that name parties (RFC 3261 20.10, 25.1; RFC 3966): name-addr with display
name, URI and parameters, list-valued headers split outside quotes and ``<>``, and the user (a
number, for phones) and host of sip:, sips: and tel: URIs. Malformed values raise
:class:`ParseError` with reason ``sip_malformed``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from callrec.capture.model.errors import ParseError

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)  # RFC 3261 quoted-string


_ESCAPE = re.compile(r"\\(.)", re.DOTALL)  # quoted-pair


# A quoted string (unterminated: to the end), an <URI>, a run of other characters, or the separator.
_SPLIT_TOKENS = {s: re.compile(rf'"(?:[^"\\]|\\.)*"?|<[^>]*>?|[^"<{s}]+|{s}', re.DOTALL) for s in ",;"}


_TEL_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")  # RFC 3966 visual-separator


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact-style value: display name, URI and the header parameters (``tag``...)."""

    display: str
    uri: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def _split_outside(value: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quoted strings (with quoted-pairs) and ``<...>``, in linear time."""
    if sep not in value or ('"' not in value and "<" not in value):
        return value.split(sep)
    parts: list[str] = []
    begin = 0
    for match in _SPLIT_TOKENS[sep].finditer(value):
        if match.group() == sep:
            parts.append(value[begin : match.start()])
            begin = match.end()
    parts.append(value[begin:])
    return parts


def split_header_list(value: str) -> list[str]:
    """Split a list-valued header (Via, Contact, Route, P-Asserted-Identity, Allow...) at commas that
    are outside quotes and ``<>``. Not for Authorization-style values or Date (commas inside)."""
    return [item for item in (part.strip(" \t") for part in _split_outside(value, ",")) if item]


def parse_params(text: str) -> dict[str, str]:
    """``;name=value;flag`` -> ``{"name": "value", "flag": ""}``: names lower-cased, quoted values
    unquoted, the first occurrence of a name wins."""
    params: dict[str, str] = {}
    for piece in _split_outside(text, ";"):
        name, _, value = piece.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            continue
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _ESCAPE.sub(r"\1", value[1:-1])
        params.setdefault(name, value)
    return params


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``"Alice" <sip:a@x;transport=udp>;tag=1``, ``Bob <sip:b@y>``, ``<sip:x>`` or a bare
    ``sip:bob@host;tag=2``. RFC 3261 20.10: without angle brackets the parameters after the URI
    are header parameters, not URI parameters. Quoted display names may hold ``\\"`` escapes."""
    text = value.strip(" \t")
    display = ""
    if text.startswith('"'):
        quoted = _QUOTED.match(text)
        if quoted is None:
            raise ParseError("unterminated quoted display name", "sip_malformed")
        display = _ESCAPE.sub(r"\1", quoted.group(1)) if "\\" in quoted.group(1) else quoted.group(1)
        text = text[quoted.end() :].lstrip(" \t")
        if not text.startswith("<"):
            raise ParseError("quoted display name without <URI>", "sip_malformed")
    less = text.find("<")
    if less >= 0:
        greater = text.find(">", less)
        if greater < 0:
            raise ParseError("name-addr without closing >", "sip_malformed")
        if not display:
            display = text[:less].strip(" \t")
        uri = text[less + 1 : greater].strip(" \t")
        tail = text[greater + 1 :]
    else:
        uri, _, tail = text.partition(";")
        uri = uri.strip(" \t")
    return NameAddr(display, uri, parse_params(tail))


def _scheme(uri: str) -> tuple[str, str]:
    text = uri.strip(" \t")
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip(" \t")
    scheme, sep, rest = text.partition(":")
    return (scheme.lower(), rest) if sep else ("", text)


def _tel_number(subscriber: str) -> str:
    return unquote(subscriber.split(";", 1)[0]).translate(_TEL_VISUAL_SEPARATORS)


def uri_user(uri: str) -> str:
    """The user part (a number, for phones) of a sip:/sips:/tel: URI, percent-decoded.

    ``sip:+352123@host;user=phone`` -> ``+352123``; ``tel:+1-555-0100;phone-context=x`` ->
    ``+15550100`` (RFC 3966 visual separators removed, also for ``user=phone`` SIP URIs);
    ``sip:host`` -> ``""``; other schemes -> ``""``."""
    scheme, rest = _scheme(uri)
    if scheme == "tel":
        return _tel_number(rest)
    if scheme not in ("sip", "sips"):
        return ""
    at = rest.find("@")
    if at < 0:
        return ""
    user = rest[:at].split(":", 1)[0]  # drop a (deprecated) password
    uri_params = parse_params(rest[at + 1 :].split("?", 1)[0].partition(";")[2])
    if uri_params.get("user", "").lower() == "phone":
        return _tel_number(user)
    return unquote(user)


def dialled_number(text: str) -> str:
    """The number a Request-URI dials, as the catalogue shows numbers (:func:`uri_user`); text with no
    URI scheme (a number as typed) is returned as it is."""
    return uri_user(text) if _scheme(text)[0] else text.strip()


def uri_host(uri: str) -> str:
    """The host of a sip:/sips: URI, lower-case, without port or IPv6 brackets; ``""`` otherwise.

    Quirk: some phones write IPv6 hosts without brackets (``sip:u@fec0:0:0:0:216:d3ff:fe0d:22c:5060``);
    nine colon-separated groups are read as address plus port."""
    scheme, rest = _scheme(uri)
    if scheme not in ("sip", "sips"):
        return ""
    hostport = re.split(r"[;?]", rest[rest.find("@") + 1 :], maxsplit=1)[0].strip(" \t").lower()
    if hostport.startswith("["):
        close = hostport.find("]")
        return hostport[1:close] if close > 0 else hostport[1:]
    groups = hostport.split(":")
    return groups[0] if len(groups) <= 2 else ":".join(groups[:8])
