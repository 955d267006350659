"""Capture filters: tcpdump-style expressions compiled to classic BPF for ``SO_ATTACH_FILTER``.

The expression is compiled by libpcap's ``pcap_compile`` (through ctypes, on a "dead" handle of the
interface's link type; ``libpcap.so.0.8`` comes with tshark and tcpdump on Debian), or, when the
library cannot be loaded, by ``tcpdump -ddd -y EN10MB EXPR``. The result is a list of
:class:`Instruction` (``struct sock_filter``: code, jt, jf, k) that :func:`sock_fprog` packs for
the kernel. Neither is on the packet path: the kernel runs the filter before a frame reaches the ring.

The default filter (:func:`default_filter`) keeps what the tracker can use and nothing else:

- all UDP (SIP, RTP, RTCP on any port, VXLAN/GENEVE/HEP mirror tunnels);
- every IPv4 fragment (``ip[6:2] & 0x3fff != 0``: more-fragments flag or a fragment offset), since
  fragments after the first carry no UDP header; and every IPv6 packet whose fixed header is followed
  by a Fragment header (next header 44), for the same reason (an IPv6 fragment never matches ``udp``);
- TCP to or from the SIP ports (5060, 5061 by default). The tracker reads SIP over TCP on any port by
  content, but keeping all TCP would keep almost everything a mirror port carries (web, backups, file
  shares). SIP over TCP on other ports needs ``sip_tcp_ports=None`` (all TCP) or a listed port;
- mirror tunnels carried as IP protocols: GRE (ERSPAN, 47), IP-in-IP (4, 41) and EtherIP (97);
- the same inside one more VLAN tag (``... or (vlan and (...))``; see below).

Why never a bare ``port 5060``: libpcap's ``port`` test reads the UDP/TCP header, and only fragment
offset 0 has one, so ``port 5060`` keeps the first fragment of a large INVITE (an SDP with many ICE
candidates, a long Via chain: more than one MTU) and drops the rest: the INVITE can never be
reassembled and the call is lost. It also drops the RTP, which uses ports the SDP negotiates.

VLAN tags in the kernel: Linux removes the outer 802.1Q/802.1ad tag from a received frame before
packet sockets see it (the ring returns it apart, and :mod:`capture.sources.ring` puts it back), so a filter
sees the frame *without* its outer tag: ``udp`` matches VLAN-tagged UDP, and ``vlan`` tests a second
(inner, QinQ) tag. An expression such as ``vlan 100`` therefore cannot select an outer VLAN id here;
select VLANs after decoding (``DatagramBatch.vlan``) instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from callrec.capture.model.packets import LINKTYPE_ETHERNET, LINKTYPE_RAW

DEFAULT_SNAPLEN = 262144
SIP_TCP_PORTS = (5060, 5061)
# IP protocols of mirror tunnels the frame decoder opens (capture.frames.tunnels).
TUNNEL_PROTOCOLS = (47, 4, 41, 97)
_NETMASK_UNKNOWN = 0xFFFFFFFF
# pcap_open_dead takes a DLT_ value; for these two the DLT_ and LINKTYPE_ values differ or matter.
_DLT = {LINKTYPE_ETHERNET: 1, LINKTYPE_RAW: 12}
_TCPDUMP_LINK = {LINKTYPE_ETHERNET: "EN10MB", LINKTYPE_RAW: "RAW"}
_LIBPCAP_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")


class FilterError(ValueError):
    """A capture filter that cannot be compiled (bad expression, no compiler available)."""


@dataclass(frozen=True, slots=True)
class Instruction:
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


def default_filter(sip_tcp_ports: Sequence[int] | None = SIP_TCP_PORTS) -> str:
    """The default capture filter as a tcpdump expression (see the module docstring).

    ``sip_tcp_ports``: TCP ports kept (SIP over TCP); ``None`` keeps all TCP.
    """
    tcp = "tcp"
    if sip_tcp_ports is not None:
        ports = " or ".join(str(int(p)) for p in sip_tcp_ports)
        tcp = f"(tcp and port ({ports}))" if ports else ""
    tunnels = " or ".join(f"ip proto {p}" for p in TUNNEL_PROTOCOLS)
    tunnels6 = " or ".join(f"ip6[6] == {p}" for p in TUNNEL_PROTOCOLS)
    parts = ["udp", "(ip[6:2] & 0x3fff != 0)", "ip6[6] == 44", tcp, tunnels, tunnels6]
    core = " or ".join(p for p in parts if p)
    return f"{core} or (vlan and ({core}))"


DEFAULT_FILTER = default_filter()


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


_libpcap: ctypes.CDLL | None = None
_libpcap_tried = False


def _load_libpcap() -> ctypes.CDLL | None:
    global _libpcap, _libpcap_tried
    if _libpcap_tried:
        return _libpcap
    _libpcap_tried = True
    found = ctypes.util.find_library("pcap")
    for name in ((found,) if found else ()) + _LIBPCAP_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_BpfProgram),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        ]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.restype = None
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_close.restype = None
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        _libpcap = lib
        break
    return _libpcap


def _with_libpcap(lib: ctypes.CDLL, expression: str, linktype: int, snaplen: int) -> list[Instruction]:
    handle = lib.pcap_open_dead(_DLT[linktype], snaplen)
    if not handle:
        raise FilterError("libpcap: pcap_open_dead failed")
    try:
        prog = _BpfProgram()
        if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1, _NETMASK_UNKNOWN) != 0:
            why = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            raise FilterError(f"capture filter {expression!r} does not compile: {why}")
        try:
            insns = ctypes.cast(prog.bf_insns, ctypes.POINTER(_SockFilter))
            return [
                Instruction(insns[i].code, insns[i].jt, insns[i].jf, insns[i].k) for i in range(prog.bf_len)
            ]
        finally:
            lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)


def _with_tcpdump(tcpdump: str, expression: str, linktype: int, snaplen: int) -> list[Instruction]:
    args = [tcpdump, "-ddd", "-s", str(snaplen), "-y", _TCPDUMP_LINK[linktype], expression]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or ["tcpdump failed"]
        raise FilterError(f"capture filter {expression!r} does not compile: {why[0]}")
    lines = done.stdout.split("\n")
    count = int(lines[0])
    out = []
    for line in lines[1 : 1 + count]:
        code, jt, jf, k = (int(v) for v in line.split())
        out.append(Instruction(code, jt, jf, k))
    return out


def filter_compiler() -> str | None:
    """What compiles filters here: ``"libpcap"``, ``"tcpdump"``, or None (filters cannot be used)."""
    if _load_libpcap() is not None:
        return "libpcap"
    return "tcpdump" if shutil.which("tcpdump") else None


def compile_filter(
    expression: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN
) -> list[Instruction]:
    """Compile a tcpdump-style ``expression`` for frames of ``linktype`` (Ethernet or raw IP).

    Raises :class:`FilterError` naming the expression when it does not compile, or when neither
    libpcap nor tcpdump is installed.
    """
    if linktype not in _DLT:
        raise FilterError(f"capture filter {expression!r}: link type {linktype} is not supported")
    lib = _load_libpcap()
    if lib is not None:
        program = _with_libpcap(lib, expression, linktype, snaplen)
    else:
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise FilterError(
                f"capture filter {expression!r}: neither libpcap (libpcap0.8) nor tcpdump is installed"
            )
        program = _with_tcpdump(tcpdump, expression, linktype, snaplen)
    if not program:
        raise FilterError(f"capture filter {expression!r} compiled to an empty program")
    return program


def accept_all(snaplen: int = DEFAULT_SNAPLEN) -> list[Instruction]:
    """A one-instruction program that keeps every frame (``ret #snaplen``)."""
    return [Instruction(0x06, 0, 0, snaplen)]


class FilterProgram:
    """A program packed for ``setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, ...)``.

    Holds the instruction array alive while the ``struct sock_fprog`` (which points at it) is used.
    """

    def __init__(self, program: Sequence[Instruction]) -> None:
        n = len(program)
        if not 0 < n <= 4096:  # BPF_MAXINSNS
            raise FilterError(f"a socket filter has 1 to 4096 instructions, not {n}")
        self.instructions = list(program)
        self._array = (_SockFilter * n)(*(_SockFilter(i.code, i.jt, i.jf, i.k) for i in program))
        self.fprog = struct.pack("@HP", n, ctypes.addressof(self._array))
