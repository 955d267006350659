"""Recordings at rest: the data directory, sealed recording files, keys, the catalogue, the audit
trail, retention and holds, and who may do what.

Imports neither ``capture`` nor ``decode`` (see ARCHITECTURE.md).
"""
