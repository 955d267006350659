"""Endpoint keys, address forms and row gathers: the small primitives of the capture path."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.capture.model.gather import row_view, rows
from callrec.capture.model.packets import address_bytes, address_text, endpoint_key, endpoint_keys


def test_ipv4_keys_are_exact() -> None:
    assert endpoint_key("198.51.100.10", 4000) == (0xC633640A << 16) | 4000
    assert endpoint_key("0.0.0.0", 0) == 0


def test_ipv6_keys_have_the_top_bit_and_differ_from_ipv4() -> None:
    v6 = endpoint_key("2001:db8::1", 4000)
    assert v6 >> 63 == 1
    assert v6 != endpoint_key("2001:db8::1", 4001) != endpoint_key("2001:db8::2", 4000)
    assert endpoint_key("::ffff:198.51.100.10", 4000) == endpoint_key("198.51.100.10", 4000)


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_vector_and_scalar_keys_agree(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    addr = np.frombuffer(address_bytes(str(ip)), dtype=np.uint8).reshape(1, 16)
    assert int(endpoint_keys(addr, np.array([port]))[0]) == endpoint_key(str(ip), port)
    assert ipaddress.ip_address(address_text(address_bytes(str(ip)))) in (
        ip,
        getattr(ip, "ipv4_mapped", None),
    )


def test_distinct_ipv6_endpoints_do_not_collide() -> None:
    addrs = [f"2001:db8:{i:x}::{j:x}" for i in range(40) for j in range(25)]
    ports = [5000, 5001, 20000, 65535]
    keys = {endpoint_key(a, p) for a in addrs for p in ports}
    assert len(keys) == len(addrs) * len(ports)


def test_address_text_round_trip() -> None:
    assert address_text(address_bytes("203.0.113.7")) == "203.0.113.7"
    assert address_text(address_bytes("2001:db8::7")) == "2001:db8::7"
    with pytest.raises(ValueError):
        address_bytes("not-an-address")


def test_row_gathers_copy_windows() -> None:
    buf = np.arange(50, dtype=np.uint8)
    got = rows(buf, np.array([0, 7, 40]), 10)
    assert got.tolist() == [list(range(0, 10)), list(range(7, 17)), list(range(40, 50))]
    got[0, 0] = 99
    assert buf[0] == 0  # a copy, not a view
    assert row_view(buf[5:], 3)[0].tolist() == [5, 6, 7]
    assert row_view(buf, 60).shape == (0, 60)
    with pytest.raises(TypeError):
        row_view(buf.astype(np.int16), 2)
