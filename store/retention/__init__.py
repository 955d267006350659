"""Retention: classes and expiry dates, legal holds, and the crash-safe purge."""
