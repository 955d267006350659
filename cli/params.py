"""Click parameter types for what users type as numbers: call ids and counts are ASCII digits only
(``int()`` would also take ``１`` and ``1_0``), within what the catalogue can hold; anything else is a
one-line usage error naming the value, never an OverflowError."""

from __future__ import annotations

import re

import click

INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


class BoundedInt(click.ParamType):
    """A whole number written in ASCII digits, from ``minimum`` to ``maximum``."""

    def __init__(self, name: str, minimum: int = 1, maximum: int = INT64_MAX) -> None:
        self.name = name
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not _DIGITS.fullmatch(text):
                self.fail(f"{text!r} is not a {self.name} (digits 0-9 only)", param, ctx)
            number = int(text)
        if not self.minimum <= number <= self.maximum:
            self.fail(f"{number} is not a {self.name} ({self.minimum} to {self.maximum})", param, ctx)
        return number


CALL_ID = BoundedInt("call id")
COUNT = BoundedInt("count")
