"""Helpers the templates call: the current URL with arguments changed, UTC times, durations."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from flask import request


def url_with(args: Mapping[str, str], **changes: object) -> str:
    """The current page's URL with some query arguments changed (``None`` removes one)."""
    merged = {k: v for k, v in args.items() if v != ""}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return request.path + ("?" + urlencode(merged) if merged else "")


def utc_text(iso: str | None) -> str:
    """``2026-11-28T14:02:03.120Z`` as ``2026-11-28 14:02:03``."""
    return (iso or "")[:19].replace("T", " ")


def duration_text(seconds: float | None) -> str:
    """``75.2`` as ``1:15``; hours when there are some."""
    if seconds is None:
        return "–"
    whole = int(round(float(seconds)))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
