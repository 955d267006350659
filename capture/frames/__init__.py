"""Frames to UDP datagrams: link layers and VLANs, IPv4/IPv6, fragment reassembly, mirror tunnels, and
SIP over TCP handed to the SIP stage."""
