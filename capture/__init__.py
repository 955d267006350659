"""Packets to calls: sources, frames, SIP and SDP, RTP streams and their correlation, call tracking.

Imports nothing from its siblings (see ARCHITECTURE.md).
"""
