"""Recordings at rest: the data directory, atomic recording files and the SQLite catalogue.

Imports only the standard library and sqlite-utils (see ARCHITECTURE.md). Sealing, retention,
audit and access control arrive in later issues behind the same interfaces.
"""
