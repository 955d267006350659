"""Which way a call goes: inbound, outbound, internal or external-to-external.

Configured as one table (the caller adds the file name to errors)::

    [direction]
    internal_networks = ["198.51.100.0/24", "2001:db8:10::/48"]   # CIDRs; a bare address is a /32 or /128
    pbx = ["198.51.100.5"]                  # the PBX's addresses: ambiguous, it talks for both sides
    trunks = ["203.0.113.1"]                # carriers / SBCs: whoever is there is external
    internal_numbers = ["2??", "+35226*"]   # globs (* ? [...]) over the number as signalled

See :func:`classify` for how the four combine.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CapturedCall, Endpoint

INBOUND = "inbound"
OUTBOUND = "outbound"
INTERNAL = "internal"
EXTERNAL = "external"
UNKNOWN = "unknown"
DIRECTIONS = (INBOUND, OUTBOUND, INTERNAL, EXTERNAL, UNKNOWN)

_KEYS = ("internal_networks", "pbx", "trunks", "internal_numbers")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PolicyError(ValueError):
    """A table of the configuration cannot be used: every problem, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class DirectionPolicy:
    """The ``[direction]`` table, parsed. Empty (the default) classifies every call as unknown."""

    internal_networks: tuple[Network, ...] = ()
    pbx: frozenset[Address] = frozenset()
    trunks: frozenset[Address] = frozenset()
    internal_numbers: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.internal_networks or self.pbx or self.trunks or self.internal_numbers)

    def number_is_internal(self, number: str) -> bool:
        return any(fnmatch.fnmatchcase(number, pattern) for pattern in self.internal_numbers)

    def side(self, number: str, address: str | None) -> str:
        """One party's side: ``internal``, ``external`` or ``unknown`` (see :func:`classify`)."""
        if number and self.number_is_internal(number):
            return INTERNAL
        ip = parse_address(address) if address else None
        if ip is not None and ip in self.trunks:
            return EXTERNAL
        if ip is not None and ip not in self.pbx and self.internal_networks:
            return INTERNAL if any(ip in net for net in self.internal_networks) else EXTERNAL
        # the PBX's address, no address, or no networks configured: only the number is left
        if number and self.internal_numbers:
            return EXTERNAL
        return UNKNOWN


def parse_address(text: str) -> Address | None:
    """An IP address from ``text`` (brackets and IPv4-mapped IPv6 accepted), None if it is not one."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_direction(table: Mapping[str, object], where: str = "direction") -> DirectionPolicy:
    """The ``[direction]`` table. Raises :class:`PolicyError` (a ``ValueError``) naming every bad key
    and value, each as ``<where>.<key>: reason``."""
    problems: list[str] = []
    for key in table:
        if key not in _KEYS:
            problems.append(f"{where}.{key}: unknown key (known: {', '.join(_KEYS)})")
    lists = {key: _strings(table.get(key, []), f"{where}.{key}", problems) for key in _KEYS}
    networks: list[Network] = []
    for text in lists["internal_networks"]:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=True))
        except ValueError as exc:
            hint = ""
            if "host bits" in str(exc):
                hint = f"; did you mean {ipaddress.ip_network(text.strip(), strict=False)}?"
            problems.append(
                f"{where}.internal_networks: {text!r} is not a network in CIDR form ({exc}){hint}"
            )
    addresses: dict[str, frozenset[Address]] = {}
    for key in ("pbx", "trunks"):
        found: set[Address] = set()
        for text in lists[key]:
            ip = parse_address(text)
            if ip is None:
                problems.append(f"{where}.{key}: {text!r} is not an IP address")
            else:
                found.add(ip)
        addresses[key] = frozenset(found)
    for both in sorted(addresses["pbx"] & addresses["trunks"], key=str):
        problems.append(f"{where}: {both} is listed both in pbx and in trunks; keep it in one")
    patterns = [p.strip() for p in lists["internal_numbers"]]
    for pattern in patterns:
        if not pattern:
            problems.append(f"{where}.internal_numbers: an empty pattern matches nothing; remove it")
    if problems:
        raise PolicyError(problems)
    return DirectionPolicy(
        internal_networks=tuple(networks),
        pbx=addresses["pbx"],
        trunks=addresses["trunks"],
        internal_numbers=tuple(patterns),
    )


def _strings(value: object, where: str, problems: list[str]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    problems.append(f"{where}: must be text or a list of text, not {value!r}")
    return []


def classify(
    policy: DirectionPolicy,
    *,
    caller: str,
    callee: str,
    caller_address: str | None,
    callee_address: str | None,
) -> str:
    """The call's direction: ``inbound``, ``outbound``, ``internal``, ``external`` or ``unknown``.

    Each party is first placed on a side, by the first of these that applies:

    ====================================================  =========
    the party's number matches ``internal_numbers``        internal
    its address is a trunk                                 external
    its address is in ``internal_networks`` (not the PBX)  internal
    its address is known, networks configured, not in one  external
    (PBX address, no address, or no networks:) number
    given and ``internal_numbers`` configured              external
    otherwise                                              unknown
    ====================================================  =========

    A PBX address says nothing about the party (the PBX relays calls both ways), so the number decides.
    Then the two sides give the direction:

    =========  =========  =========
    caller     callee     direction
    =========  =========  =========
    external   internal   inbound
    internal   external   outbound
    internal   internal   internal
    external   external   external (e.g. a transit through the PBX)
    unknown    any        unknown
    any        unknown    unknown
    =========  =========  =========

    With no policy configured every call is ``unknown``.
    """
    if not policy.configured:
        return UNKNOWN
    sides = (policy.side(caller, caller_address), policy.side(callee, callee_address))
    if UNKNOWN in sides:
        return UNKNOWN
    return {
        (EXTERNAL, INTERNAL): INBOUND,
        (INTERNAL, EXTERNAL): OUTBOUND,
        (INTERNAL, INTERNAL): INTERNAL,
        (EXTERNAL, EXTERNAL): EXTERNAL,
    }[sides]


def call_addresses(call: CapturedCall) -> tuple[str | None, str | None]:
    """The caller's and the callee's addresses as best known from the media (the signalling addresses
    are not kept): where each side's packets came from, else where the other side sent its packets."""
    forward = call.legs.get(CALLER_TO_CALLEE)
    backward = call.legs.get(CALLEE_TO_CALLER)
    caller = _first(forward.sources if forward else ()) or _first(backward.destinations if backward else ())
    callee = _first(backward.sources if backward else ()) or _first(forward.destinations if forward else ())
    return caller, callee


def _first(endpoints: tuple[Endpoint, ...]) -> str | None:
    return endpoints[0].address if endpoints else None
