"""SDP session descriptions (RFC 8866, formerly RFC 4566) as offer/answer (RFC 3264) needs them.

Tolerant like real endpoints: LF or CRLF line ends, trailing spaces, unknown line types and
attributes kept or ignored, ``c=`` TTL / address-count suffixes stripped (``IN IP4 x/127``), missing
``o=`` / ``s=`` accepted, attribute names and direction values compared case-insensitively (X-Lite
sends ``a=SendRecv``). A body that does not start with ``v=`` or holds a line that is not ``x=...``
raises :class:`~capture.model.errors.ParseError` with reason ``sdp_malformed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from callrec.capture.model.errors import ParseError
from callrec.capture.model.media import STATIC_PAYLOAD_TYPES, MediaFormat

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Profiles whose media is SRTP: RFC 3711 (SAVP), RFC 5124 (SAVPF), RFC 5764 (DTLS-SRTP).
ENCRYPTED_PROFILES = frozenset(
    transport + profile
    for transport in ("RTP/", "UDP/TLS/RTP/", "TCP/TLS/RTP/")
    for profile in ("SAVP", "SAVPF")
)
# SDES (RFC 4568), DTLS fingerprint (RFC 8122), ZRTP (RFC 6189), MIKEY key-mgmt (RFC 4567).
KEYING_ATTRIBUTES = frozenset({"crypto", "fingerprint", "zrtp-hash", "key-mgmt"})
# Of these, the ones that may also stand at session level and then cover every medium.
_SESSION_KEYING_ATTRIBUTES = frozenset({"fingerprint", "key-mgmt"})

Attribute = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class SdpMedia:
    """One ``m=`` section. ``connection_address`` is the media-level ``c=`` else the session one;
    ``direction`` likewise; ``rtpmap`` / ``fmtp`` map payload type -> attribute text."""

    media: str
    port: int
    port_count: int
    protocol: str
    formats: tuple[str, ...]
    connection_address: str | None = None
    direction: str = "sendrecv"
    rtpmap: dict[int, str] = field(default_factory=dict, hash=False)
    fmtp: dict[int, str] = field(default_factory=dict, hash=False)
    ptime_ms: int | None = None
    maxptime_ms: int | None = None
    rtcp_port: int | None = None
    rtcp_address: str | None = None
    rtcp_mux: bool = False
    attributes: tuple[Attribute, ...] = ()
    session_keying: bool = False  # a session-level a=fingerprint / a=key-mgmt covers this medium

    @property
    def is_disabled(self) -> bool:
        """Port 0 rejects or disables the stream (RFC 3264 6)."""
        return self.port == 0

    @property
    def is_encrypted(self) -> bool:
        """SRTP profile, or keying attributes (a=crypto, a=fingerprint, a=zrtp-hash, a=key-mgmt)."""
        if self.session_keying or self.protocol.upper() in ENCRYPTED_PROFILES:
            return True
        return any(name.lower() in KEYING_ATTRIBUTES for name, _ in self.attributes)

    def formats_by_pt(self) -> dict[int, MediaFormat]:
        """Payload type -> format, in ``m=`` preference order: a=rtpmap (+ a=fmtp) where given, the
        RFC 3551 static table for static types without rtpmap. Dynamic types without rtpmap and
        non-numeric formats (``t38``, ``webrtc-datachannel``) are left out."""
        found: dict[int, MediaFormat] = {}
        for text in self.formats:
            if not (text.isascii() and text.isdigit() and len(text) <= 3):
                continue
            pt = int(text)
            if pt > 127 or pt in found:
                continue
            fmtp = self.fmtp.get(pt, "")
            fmt = _from_rtpmap(pt, self.rtpmap[pt], fmtp) if pt in self.rtpmap else None
            if fmt is None:
                static = STATIC_PAYLOAD_TYPES.get(pt)
                if static is None:
                    continue
                fmt = replace(static, fmtp=fmtp) if fmtp else static
            found[pt] = fmt
        return found


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body. Origin fields are ``""`` when ``o=`` is missing or short."""

    version: int
    origin_username: str
    origin_session_id: str
    origin_version: str
    origin_address: str
    session_name: str
    connection_address: str | None
    direction: str
    media: tuple[SdpMedia, ...]
    attributes: tuple[Attribute, ...] = ()

    def audio(self) -> list[SdpMedia]:
        """The enabled (port != 0) audio streams."""
        return [m for m in self.media if m.media.lower() == "audio" and not m.is_disabled]


def _malformed(message: str) -> ParseError:
    return ParseError(message, "sdp_malformed")


def _small_int(text: str, limit: int) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return None
    value = int(text)
    return value if value <= limit else None


def _millis(text: str) -> int | None:
    """a=ptime / a=maxptime: integer ms, some stacks write ``20.0``."""
    whole, _, fraction = text.strip().partition(".")
    if fraction and not (fraction.isascii() and fraction.isdigit()):
        return None
    return _small_int(whole, 100_000)


def _from_rtpmap(pt: int, text: str, fmtp: str) -> MediaFormat | None:
    """``<encoding>/<clock rate>[/<channels>]`` (RFC 8866 6.6); None when unusable."""
    parts = text.strip().split("/")
    if len(parts) < 2 or not parts[0].strip():
        return None
    clock = _small_int(parts[1], 10_000_000)
    if not clock:
        return None
    channels = _small_int(parts[2], 255) if len(parts) > 2 else 1
    return MediaFormat(pt, canonical_encoding(parts[0].strip()), clock, channels or 1, fmtp)


# Encoding names are case-insensitive (RFC 8866 6.6); these are shown in their registered spelling.
_SPELLING = {
    name.upper(): name
    for name in (
        *(f.encoding for f in STATIC_PAYLOAD_TYPES.values()),
        "opus",
        "telephone-event",
        "speex",
        "iLBC",
        "AMR",
        "AMR-WB",
        "G7221",
        "G726-16",
        "G726-24",
        "G726-32",
        "G726-40",
        "red",
        "ulpfec",
        "rtx",
        "t140",
        "EVS",
        "SILK",
        "CLEARMODE",
        "H264",
        "VP8",
    )
}


def canonical_encoding(name: str) -> str:
    """``pcma`` -> ``PCMA``, ``OPUS`` -> ``opus``; names not listed are kept as written."""
    return _SPELLING.get(name.upper(), name)


def _connection(value: str) -> str | None:
    """``IN IP4 192.0.2.1/127`` -> ``192.0.2.1`` (TTL and address count stripped), IPv6 alike."""
    parts = value.split()
    if len(parts) < 3:
        return None
    return parts[2].split("/", 1)[0] or None


def _attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return name.strip(), (rest.strip() if sep else None)


def _direction(attributes: list[Attribute], default: str) -> str:
    direction = default
    for name, value in attributes:
        if value is None and name.lower() in DIRECTIONS:
            direction = name.lower()
    return direction


def _media(lines: list[tuple[str, str]], session_c: str | None, session_dir: str, keyed: bool) -> SdpMedia:
    parts = lines[0][1].split()
    if len(parts) < 3:
        raise _malformed("m= line needs media, port and protocol")
    port_text, _, count_text = parts[1].partition("/")
    port = _small_int(port_text, 65535)
    count = _small_int(count_text, 65535) if count_text else 1
    if port is None or not count:
        raise _malformed(f"bad m= port {parts[1]!r}")
    connection: str | None = None
    attributes: list[Attribute] = []
    for kind, value in lines[1:]:
        if kind == "c" and connection is None:
            connection = _connection(value)
        elif kind == "a":
            attributes.append(_attribute(value))
    rtpmap: dict[int, str] = {}
    fmtp: dict[int, str] = {}
    ptime = maxptime = rtcp_port = None
    rtcp_address: str | None = None
    rtcp_mux = False
    for name, attr in attributes:
        key = name.lower()
        if attr is None:
            rtcp_mux = rtcp_mux or key == "rtcp-mux"
            continue
        if key in ("rtpmap", "fmtp"):
            pt_text, _, text = attr.partition(" ")
            pt = _small_int(pt_text, 127)
            if pt is not None:
                (rtpmap if key == "rtpmap" else fmtp).setdefault(pt, text.strip())
        elif key == "ptime":
            ptime = _millis(attr)
        elif key == "maxptime":
            maxptime = _millis(attr)
        elif key == "rtcp":  # RFC 3605: a=rtcp:<port> [IN IP4 <address>]
            fields = attr.split()
            rtcp_port = _small_int(fields[0], 65535) if fields else None
            rtcp_address = _connection(" ".join(fields[1:])) if len(fields) >= 4 else None
    return SdpMedia(
        media=parts[0],
        port=port,
        port_count=count,
        protocol=parts[2],
        formats=tuple(parts[3:]),
        connection_address=connection or session_c,
        direction=_direction(attributes, session_dir),
        rtpmap=rtpmap,
        fmtp=fmtp,
        ptime_ms=ptime,
        maxptime_ms=maxptime,
        rtcp_port=rtcp_port,
        rtcp_address=rtcp_address,
        rtcp_mux=rtcp_mux,
        attributes=tuple(attributes),
        session_keying=keyed,
    )


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body (bytes are decoded as UTF-8 with replacement, the SDP default charset)."""
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    session: list[tuple[str, str]] = []
    sections: list[list[tuple[str, str]]] = []
    version: int | None = None
    for raw in text.split("\n"):
        line = raw.rstrip()
        if not line:
            continue
        kind = line[0]
        if len(line) < 2 or line[1] != "=" or not (kind.isascii() and kind.isalpha()):
            raise _malformed(f"not an SDP line: {line[:40]!r}")
        value = line[2:]
        if version is None:
            if kind != "v":
                raise _malformed("SDP does not start with v=")
            version = _small_int(value, 1 << 31)
            if version is None:
                raise _malformed(f"bad SDP version {value[:20]!r}")
        elif kind == "m":
            sections.append([(kind, value)])
        elif sections:
            sections[-1].append((kind, value))
        else:
            session.append((kind, value))
    if version is None:
        raise _malformed("empty SDP")

    origin = ["", "", "", ""]
    session_name = ""
    connection: str | None = None
    attributes: list[Attribute] = []
    for kind, value in session:
        if kind == "o":
            fields = value.split()
            if len(fields) >= 6:
                origin = [fields[0], fields[1], fields[2], fields[5]]
        elif kind == "s":
            session_name = value.strip()
        elif kind == "c" and connection is None:
            connection = _connection(value)
        elif kind == "a":
            attributes.append(_attribute(value))
    direction = _direction(attributes, "sendrecv")
    keyed = any(name.lower() in _SESSION_KEYING_ATTRIBUTES for name, _ in attributes)
    return SessionDescription(
        version=version,
        origin_username=origin[0],
        origin_session_id=origin[1],
        origin_version=origin[2],
        origin_address=origin[3],
        session_name=session_name,
        connection_address=connection,
        direction=direction,
        media=tuple(_media(lines, connection, direction, keyed) for lines in sections),
        attributes=tuple(attributes),
    )


# What an m= section carries, as the tracker sorts media.
AUDIO = "audio"
VIDEO = "video"  # m=video over RTP
OTHER = "other"  # m=application, m=text, ... over UDP
T38 = "t38"  # m=image udptl t38


def side_kind(media: SdpMedia) -> str | None:
    """What an enabled ``m=`` section that is not audio carries over UDP (``None``: audio, disabled
    or not over UDP)."""
    protocol = media.protocol.upper()
    if media.media.lower() == "audio" or media.is_disabled or protocol.startswith("TCP"):
        return None
    if media.media.lower() == "image" and protocol == "UDPTL":
        return T38
    return VIDEO if media.media.lower() == "video" else OTHER
