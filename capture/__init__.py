"""Packets to calls: capture sources, frames, SIP, SDP, RTP, dialogs, correlation.

Imports nothing from its siblings (see ARCHITECTURE.md).
"""
