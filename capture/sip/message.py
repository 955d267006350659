"""SIP messages (RFC 3261): one datagram (or one stream message) in, an immutable :class:`SipMessage` out.

Tolerances real captures need: LF-only line ends besides CRLF (7.5 asks for CRLF) and leading CRLF
keep-alives (RFC 5626); folded header lines (7.3.1: a line starting with SP/HTAB continues the value)
unfolded into one space; case-insensitive names with compact forms (7.3.3) expanded. Over UDP, bytes
after Content-Length are discarded and without Content-Length the body is the rest of the datagram
(18.3); fewer bytes than announced raise Truncated (:func:`parse_datagram` keeps such a message).
Header text is UTF-8 (replacement characters for bad bytes); the body stays bytes. Failures are
ParseErrors with reason ``sip_malformed``, ``sip_missing_header`` (no Call-ID or CSeq) or
``sip_truncated`` (a Truncated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callrec.capture.model.errors import NeedMoreData, ParseError, Truncated
from callrec.capture.sip.addresses import NameAddr, parse_name_addr, parse_params, split_header_list

MAX_HEADERS = 256
MAX_START_LINE = 8192
MAX_HEAD_BYTES = 65536

# RFC 3261 7.3.3 and 20, plus RFC 3265 (o), 3515 (r), 3892 (b), 4028 (x), 3841 (a, j, d), 4474 (y, n).
# fmt: off
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id", "f": "from", "t": "to", "m": "contact", "v": "via", "l": "content-length",
    "c": "content-type", "e": "content-encoding", "s": "subject", "k": "supported", "o": "event",
    "r": "refer-to", "b": "referred-by", "x": "session-expires", "u": "allow-events",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition", "y": "identity",
    "n": "identity-info",
}
# fmt: on

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")  # RFC 3261 25.1 token
_TOKEN_B = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+")
_CSEQ = re.compile(r"([0-9]{1,10})[ \t]+([A-Za-z0-9.!%*_+`'~-]+)")
_CLEN_B = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*(?:\r?\n[ \t]+)?([0-9]+)", re.IGNORECASE)
_NOT_CRLF = re.compile(rb"[^\r\n]")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_URI_SCHEMES_B = (b"sip:", b"sips:", b"tel:")
_PART_CONTENT_TYPE = re.compile(r"\ncontent-type[ \t]*:([^\r\n]*)", re.IGNORECASE)

# Header names as they are usually spelled, mapped to canonical names: saves the token check and
# lower() on the common path. Bounded: unknown names are never added.
# fmt: off
_COMMON_NAMES = (
    "Via", "From", "To", "Call-ID", "Call-Id", "CSeq", "Cseq", "Contact", "Max-Forwards", "Content-Type",
    "Content-Length", "User-Agent", "Server", "Allow", "Supported", "Require", "Record-Route", "Route",
    "Expires", "Session-Expires", "Min-SE", "P-Asserted-Identity", "P-Preferred-Identity", "Privacy",
    "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate", "Accept",
    "Allow-Events", "Event", "Content-Disposition", "Date", "Subject", "Remote-Party-ID", "Diversion",
    "Reason", "Call-Info", "Alert-Info", "RSeq", "RAck", "Refer-To", "Referred-By", "Replaces",
    "Content-Encoding", "Accept-Language", "Accept-Encoding", "Organization", "Timestamp", "Warning",
)
# fmt: on
_CANONICAL: dict[str, str] = {}
for _name in _COMMON_NAMES:
    for _spelling in (_name, _name.lower(), _name.upper()):
        _CANONICAL[_spelling] = _name.lower()
for _short, _full in COMPACT_FORMS.items():
    _CANONICAL[_short] = _CANONICAL[_short.upper()] = _full


class TruncatedBody(Truncated):
    """Content-Length promises more than arrived (snaplen, a lost IP fragment, or a sender that
    miscounts). ``message`` holds the complete headers and the partial body, for callers that
    prefer some metadata to none."""

    def __init__(self, text: str, message: SipMessage) -> None:
        super().__init__(text, "sip_truncated")
        self.message = message


def canonical_header_name(name: str) -> str:
    """The canonical lower-case full name: ``"i"`` -> ``"call-id"``, ``"CSeq"`` -> ``"cseq"``."""
    canon = _CANONICAL.get(name)
    if canon is None:
        canon = name.strip(" \t").lower()
        canon = COMPACT_FORMS.get(canon, canon)
    return canon


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP request (``method``, ``request_uri``) or response (``status_code``, ``reason``).

    ``headers`` keep the wire order, with canonical lower-case full names and unfolded values; a
    comma-separated list in one header line stays one value (see :func:`split_header_list`)."""

    method: str | None
    request_uri: str | None
    status_code: int | None
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (any case, compact names accepted), or None."""
        key = canonical_header_name(name)
        for hname, value in self.headers:
            if hname == key:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, one per header line, in order."""
        key = canonical_header_name(name)
        return [value for hname, value in self.headers if hname == key]

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method); :func:`parse_message` has checked the form already."""
        value = self.header("cseq")
        match = _CSEQ.fullmatch(value.strip(" \t")) if value is not None else None
        if match is None:
            raise ParseError("missing or malformed CSeq", "sip_malformed")
        return int(match.group(1)), match.group(2)

    def _name_addr(self, name: str) -> NameAddr | None:
        items = split_header_list(self.header(name) or "")
        try:
            return parse_name_addr(items[0]) if items else None
        except ParseError:
            return None

    @property
    def from_addr(self) -> NameAddr | None:
        """From as a :class:`NameAddr`; None when absent or unparseable (also for the other *_addr)."""
        return self._name_addr("from")

    @property
    def to_addr(self) -> NameAddr | None:
        return self._name_addr("to")

    @property
    def p_asserted_identity(self) -> NameAddr | None:
        """The first identity of P-Asserted-Identity (RFC 3325 allows a SIP and a tel URI)."""
        return self._name_addr("p-asserted-identity")

    @property
    def from_tag(self) -> str | None:
        return None if (addr := self.from_addr) is None else addr.tag

    @property
    def to_tag(self) -> str | None:
        return None if (addr := self.to_addr) is None else addr.tag

    @property
    def via_branch(self) -> str | None:
        """The branch parameter of the topmost Via (the transaction id for RFC 3261 stacks)."""
        items = split_header_list(self.header("via") or "")
        return parse_params(items[0].partition(";")[2]).get("branch") if items else None

    @property
    def content_type(self) -> str | None:
        """Lower-case media type without parameters, e.g. ``"application/sdp"``."""
        value = self.header("content-type")
        return None if value is None else value.partition(";")[0].strip(" \t").lower()

    @property
    def content_length(self) -> int | None:
        """The Content-Length header as a number (None when absent); ``len(body)`` is what arrived."""
        value = (self.header("content-length") or "").strip(" \t")
        return int(value) if value.isascii() and value.isdigit() else None

    def sdp_bodies(self) -> list[bytes]:
        """The application/sdp bodies: the body itself, or the SDP parts of a multipart body
        (mixed, alternative, related; one nested multipart level). A part without Content-Type
        whose text starts with ``v=0`` counts as SDP (seen in the wild; RFC 2046 says text/plain)."""
        return _sdp_parts(self.header("content-type"), self.body, 0)

    def summary(self) -> str:
        """Short text for event lists: ``"INVITE"`` or ``"180 Ringing"``."""
        if self.method is not None:
            return self.method
        return f"{self.status_code} {self.reason}" if self.reason else str(self.status_code)


def _sdp_parts(ctype: str | None, body: bytes, depth: int) -> list[bytes]:
    if ctype is None:
        return [body] if body.lstrip(b"\r\n \t").startswith(b"v=0") else []
    media, _, param_text = ctype.partition(";")
    media = media.strip(" \t").lower()
    if media == "application/sdp":
        return [body] if body else []
    boundary = parse_params(param_text).get("boundary")
    if not media.startswith("multipart/") or depth > 1 or not boundary:
        return []
    return [
        sdp
        for part_type, content in _multipart(body, boundary)
        for sdp in _sdp_parts(part_type, content, depth + 1)
    ]


def _multipart(body: bytes, boundary: str) -> list[tuple[str | None, bytes]]:
    """RFC 2046 5.1.1: (Content-Type or None, content) of the parts between ``--boundary`` lines up
    to ``--boundary--``. The CRLF before a delimiter belongs to it; transport padding is dropped."""
    parts: list[tuple[str | None, bytes]] = []
    for chunk in body.split(b"--" + boundary.encode("utf-8", "replace"))[1:]:
        newline = chunk.find(b"\n")
        if chunk.startswith(b"--") or newline < 0:
            break
        part = b"\n" + chunk[newline + 1 :].removesuffix(b"\n").removesuffix(b"\r")
        head_end, body_start = _find_head_end(part, 0)  # the "\n" makes "no part headers" an empty head
        if head_end < 0:
            parts.append((None, part[1:]))
            continue
        match = _PART_CONTENT_TYPE.search(part[:head_end].decode("utf-8", "replace"))
        parts.append((match.group(1).strip(" \t") if match else None, part[body_start:]))
    return parts


def _find_head_end(data: bytes, start: int) -> tuple[int, int]:
    """(index of the newline ending the last header line, start of the body), or (-1, -1).
    The head ends at the first empty line, CRLF or LF-only."""
    blank = _BLANK_LINE.search(data, start)
    return (blank.start(), blank.end()) if blank else (-1, -1)


def _malformed(message: str) -> ParseError:
    return ParseError(message, "sip_malformed")


def _parse_start_line(line: str) -> tuple[str | None, str | None, int | None, str | None]:
    if len(line) > MAX_START_LINE:
        raise _malformed("SIP start line too long")
    if line[:8].upper() == "SIP/2.0 ":
        code = line[8:11]
        rest = line[11:]
        if not (len(code) == 3 and code.isascii() and code.isdigit()) or (rest and rest[0] != " "):
            raise _malformed("bad SIP status line")
        status = int(code)
        if not 100 <= status <= 699:
            raise _malformed(f"SIP status code {status} out of range")
        return None, None, status, rest.strip(" \t")
    parts = [part for part in line.split(" ") if part]
    well_formed = len(parts) == 3 and parts[2].upper() == "SIP/2.0" and ":" in parts[1]
    if not well_formed or not _TOKEN.fullmatch(parts[0]):
        raise _malformed("bad SIP request line")
    return parts[0], parts[1], None, None


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message (a UDP payload, or one message cut out by :func:`message_length`).
    A short body raises :class:`TruncatedBody`, which still carries the headers."""
    start = 0
    if data[:1] in (b"\r", b"\n"):  # keep-alive CRLFs before the message
        start = skip.start() if (skip := _NOT_CRLF.search(data)) else len(data)
    head_end, body_start = _find_head_end(data, start)
    if (head_end if head_end >= 0 else len(data)) - start > MAX_HEAD_BYTES:
        raise _malformed("SIP header section too long")
    if head_end < 0:
        raise Truncated("SIP message ends inside the header section", "sip_truncated")
    lines = data[start:head_end].decode("utf-8", "replace").split("\n")  # a CR stays at each line's end
    if len(lines) > 4 * MAX_HEADERS:
        raise _malformed("too many SIP header lines")
    method, request_uri, status_code, reason = _parse_start_line(lines[0].removesuffix("\r"))

    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        canon = _CANONICAL.get(name)
        if canon is None or not sep:  # not a common header name as usually spelled: the slow path
            if line[:1] in (" ", "\t"):  # folded continuation of the previous header (RFC 3261 7.3.1)
                if not headers:
                    raise _malformed("SIP continuation line before any header")
                if more := line.strip(" \t\r"):
                    previous, text = headers[-1]
                    headers[-1] = (previous, f"{text} {more}" if text else more)
                continue
            name = name.rstrip(" \t")  # HCOLON allows whitespace before the colon
            if not sep or _TOKEN.fullmatch(name) is None:
                raise _malformed("SIP header line is not 'token: value'")
            canon = COMPACT_FORMS.get(name.lower(), name.lower())
        headers.append((canon, value.strip(" \t\r")))
    if len(headers) > MAX_HEADERS:
        raise _malformed("too many SIP headers")

    first = dict(reversed(headers))  # name -> first value
    for required in ("call-id", "cseq"):
        if not first.get(required):
            raise ParseError(f"SIP message without {required}", "sip_missing_header")
    if _CSEQ.fullmatch(first["cseq"]) is None:
        raise _malformed("malformed CSeq")
    body = data[body_start:]
    clen = first.get("content-length")
    if clen is not None:
        if not (clen.isascii() and clen.isdigit() and len(clen) <= 10):
            raise _malformed("malformed Content-Length")
        if int(clen) > len(body):
            partial = SipMessage(method, request_uri, status_code, reason, tuple(headers), body)
            raise TruncatedBody(f"SIP body has {len(body)} of {clen} bytes", partial)
        body = body[: int(clen)]
    return SipMessage(method, request_uri, status_code, reason, tuple(headers), body)


def parse_datagram(data: bytes) -> SipMessage:
    """Parse a SIP message that is a whole UDP datagram. The frame decoder drops datagrams cut by
    the snaplen, so a datagram ends where its sender ended the message: a Content-Length beyond
    it is the sender miscounting (seen: SIPp multipart INVITEs two bytes short, answered 200 by
    the server). The message is kept with the body that arrived, as the endpoints did."""
    try:
        return parse_message(data)
    except TruncatedBody as exc:
        return exc.message


def message_length(data: bytes, offset: int = 0) -> int:
    """Length of the complete message that starts at ``offset`` in a stream (SIP over TCP/TLS).

    Convention: the count includes any leading CRLF keep-alives (RFC 5626), so
    ``parse_message(data[offset : offset + n])`` parses the message and the next one starts at
    ``offset + n``. On streams Content-Length is mandatory (RFC 3261 18.3); when it is missing the
    body is taken as empty. Only the framing is checked here; :func:`parse_message` validates.
    Raises :class:`NeedMoreData` when the data ends first (including when there are only CRLFs),
    :class:`ParseError` when no header end shows up within ``MAX_HEAD_BYTES``."""
    if offset < 0 or offset > len(data):
        raise ValueError(f"offset {offset} outside the data")
    start = skip.start() if (skip := _NOT_CRLF.search(data, offset)) else len(data)
    head_end, body_start = _find_head_end(data, start)
    if head_end < 0:
        if len(data) - start > MAX_HEAD_BYTES:
            raise _malformed("SIP header section too long")
        raise NeedMoreData("SIP header section incomplete")
    match = _CLEN_B.search(data, start, head_end + 1)
    length = 0
    if match is not None:
        if len(match.group(1)) > 10:
            raise _malformed("malformed Content-Length")
        length = int(match.group(1))
    end = body_start + length
    if end > len(data):
        raise NeedMoreData(f"SIP body needs {end - len(data)} more bytes")
    return end - offset


def looks_like_sip(data: bytes) -> bool:
    """Cheap start-line check: ``METHOD sip:/sips:/tel:... SIP/2.0`` or ``SIP/2.0 ddd``.

    Meant for choosing which UDP payloads to parse on any port; HTTP, RTP, STUN and random bytes
    fail on the first bytes. A payload of CRLFs only (a keep-alive) is not SIP."""
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    if data[:8].upper() == b"SIP/2.0 ":
        code = data[8:11]
        return len(code) == 3 and code.isdigit() and data[11:12] in (b" ", b"\r", b"\n")
    space = data.find(b" ", 0, 33)
    if space <= 0 or _TOKEN_B.fullmatch(data, 0, space) is None:
        return False
    uri = space + 1
    if not data[uri : uri + 5].lower().startswith(_URI_SCHEMES_B):
        return False
    eol = data.find(b"\n", uri, uri + MAX_START_LINE)
    if eol < 0:
        return False
    line = data[uri:eol].rstrip(b"\r")
    return line[-8:].upper() == b" SIP/2.0" and b" " not in line[:-8]
