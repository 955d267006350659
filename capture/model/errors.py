"""The one error family every parser in ``capture`` raises.

The packet loop catches :class:`ParseError` at one boundary, counts ``reason`` and goes on.
"""


class ParseError(ValueError):
    """Input that cannot be parsed. ``reason`` is a short stable key for counters."""

    reason = "malformed"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class Truncated(ParseError):
    """The input ends before the structure it announces (a cut packet or file)."""

    reason = "truncated"


class NeedMoreData(Truncated):
    """A stream parser needs more bytes before it can decide (SIP over TCP)."""

    reason = "need_more_data"


class UnsupportedFormat(ParseError):
    """A capture file whose format or link type Callrec does not read."""

    reason = "unsupported_format"
