"""The ``[controls]`` and ``[consent]`` tables: how a call's recording is started, stopped, paused
and resumed while it runs, and how the caller's consent is established::

    [controls]
    start = "*1"                # key codes (RFC 4733 or SIP INFO), keyed by either party
    stop = "*2"
    pause = "*3"                # a card number is read: both channels blanked until resume
    resume = "*4"
    keyed_by = "any"            # "caller", "callee" or "any": whose key presses count
    digit_gap_s = 3             # a code's keys at most this far apart
    header = "X-Record"         # in a re-INVITE / INFO / UPDATE: start, stop, pause or resume
    pause_fill = "silence"      # or "tone": a soft 400 Hz tone marks the pause in the recording

    [consent]                   # for rules with consent = "required"
    announcement = "/etc/callrec/consent.wav"   # the prompt, found in the callee->caller audio
    header = "X-Consent"        # granted / yes / given, or declined / no / refused
    after_s = 8                 # last resort: consent this many seconds after the answer
    opt_out = "9"               # the caller's key that declines before consent is established
    search_s = 60               # how far into the call the prompt is looked for
    min_score = 0.6             # how alike the prompt must be (0-1; see decode.announce)

Codes are one to eight keys of ``0-9 * # A-D``; the four must differ and none may begin another (a
start code that begins the stop code could never stop). Headers must be ``X-`` headers, the ones
the capture keeps from in-dialog requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from callrec.decode.announce import DEFAULT_MIN_SCORE, Announcement, AnnouncementError, load_announcement
from callrec.recorder.policy.direction import PolicyError

CODE = re.compile(r"^[0-9*#A-D]{1,8}$")
ACTIONS = ("start", "stop", "pause", "resume")
KEYED_BY = ("caller", "callee", "any")
PAUSE_FILLS = ("silence", "tone")
GRANTED = frozenset({"granted", "given", "yes", "true", "1", "accepted"})
DECLINED = frozenset({"declined", "refused", "no", "false", "0", "denied"})


@dataclass(frozen=True, slots=True)
class ControlSettings:
    start: str = "*1"
    stop: str = "*2"
    pause: str = "*3"
    resume: str = "*4"
    keyed_by: str = "any"
    digit_gap_s: float = 3.0
    header: str = "x-record"
    pause_fill: str = "silence"

    def codes(self) -> dict[str, str]:
        """Key code -> action."""
        return {self.start: "start", self.stop: "stop", self.pause: "pause", self.resume: "resume"}


@dataclass(frozen=True, slots=True)
class ConsentSettings:
    announcement_path: Path | None = None
    announcement: Announcement | None = None
    header: str = "x-consent"
    after_s: float | None = None
    opt_out: str = "9"
    search_s: float = 60.0
    min_score: float = DEFAULT_MIN_SCORE

    @property
    def configured(self) -> bool:
        """Whether any way to establish consent is set (else required consent is never given)."""
        return self.announcement is not None or bool(self.header) or self.after_s is not None


def parse_controls(table: Mapping[str, object], where: str = "controls") -> ControlSettings:
    """The ``[controls]`` table; raises :class:`PolicyError` naming every bad key."""
    problems: list[str] = []
    known = ("start", "stop", "pause", "resume", "keyed_by", "digit_gap_s", "header", "pause_fill")
    _unknown(table, known, where, problems)
    defaults = ControlSettings()
    codes = {}
    for action in ACTIONS:
        value = table.get(action, getattr(defaults, action))
        if not isinstance(value, str) or not CODE.match(value.upper()):
            problems.append(f"{where}.{action}: {value!r} is not a key code (1-8 of 0-9 * # A-D)")
            continue
        codes[action] = value.upper()
    for action, code in codes.items():
        for other_action, other in codes.items():
            if action < other_action and code == other:
                problems.append(f"{where}.{action}: the same code as {other_action} ({code!r})")
            elif action != other_action and other.startswith(code) and code != other:
                problems.append(f"{where}.{action}: {code!r} begins {other_action}'s code {other!r}")
    keyed_by = _choice(table, "keyed_by", KEYED_BY, defaults.keyed_by, where, problems)
    fill = _choice(table, "pause_fill", PAUSE_FILLS, defaults.pause_fill, where, problems)
    gap = _positive(table, "digit_gap_s", defaults.digit_gap_s, where, problems)
    header = _header(table, "header", defaults.header, where, problems)
    if problems:
        raise PolicyError(problems)
    return ControlSettings(
        start=codes["start"],
        stop=codes["stop"],
        pause=codes["pause"],
        resume=codes["resume"],
        keyed_by=keyed_by,
        digit_gap_s=gap if gap is not None else defaults.digit_gap_s,
        header=header,
        pause_fill=fill,
    )


def parse_consent(
    table: Mapping[str, object], where: str = "consent", base: Path | None = None
) -> ConsentSettings:
    """The ``[consent]`` table (a relative announcement path is taken from ``base``); the
    announcement file is read and checked now, so a bad one is a configuration error."""
    problems: list[str] = []
    known = ("announcement", "header", "after_s", "opt_out", "search_s", "min_score")
    _unknown(table, known, where, problems)
    defaults = ConsentSettings()
    path: Path | None = None
    announcement = None
    raw = table.get("announcement")
    if raw is not None:
        if not isinstance(raw, str) or not raw:
            problems.append(f"{where}.announcement: must be the path of a WAV file")
        else:
            path = Path(raw).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            try:
                announcement = load_announcement(path)
            except AnnouncementError as exc:
                problems.append(f"{where}.announcement: {exc}")
    after = _positive(table, "after_s", None, where, problems)
    search = _positive(table, "search_s", defaults.search_s, where, problems)
    opt_out = table.get("opt_out", defaults.opt_out)
    if not isinstance(opt_out, str) or (opt_out and not CODE.match(opt_out.upper())) or len(opt_out) > 1:
        problems.append(f'{where}.opt_out: {opt_out!r} is not one key (0-9 * # A-D), or "" for none')
        opt_out = defaults.opt_out
    score = table.get("min_score", defaults.min_score)
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 < score < 1:
        problems.append(f"{where}.min_score: must be a number between 0 and 1, not {score!r}")
        score = defaults.min_score
    header = _header(table, "header", defaults.header, where, problems)
    if problems:
        raise PolicyError(problems)
    return ConsentSettings(
        announcement_path=path,
        announcement=announcement,
        header=header,
        after_s=after,
        opt_out=opt_out.upper(),
        search_s=search if search is not None else defaults.search_s,
        min_score=float(score),
    )


def _unknown(table: Mapping[str, object], known: tuple[str, ...], where: str, problems: list[str]) -> None:
    for key in table:
        if key not in known:
            problems.append(f"{where}.{key}: unknown key (known: {', '.join(known)})")


def _choice(
    table: Mapping[str, object],
    key: str,
    allowed: tuple[str, ...],
    default: str,
    where: str,
    problems: list[str],
) -> str:
    value = table.get(key, default)
    if value not in allowed:
        problems.append(f"{where}.{key}: {value!r} is not one of {', '.join(allowed)}")
        return default
    return str(value)


def _positive(
    table: Mapping[str, object], key: str, default: float | None, where: str, problems: list[str]
) -> float | None:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.append(f"{where}.{key}: must be a number of seconds greater than 0, not {value!r}")
        return default
    return float(value)


def _header(table: Mapping[str, object], key: str, default: str, where: str, problems: list[str]) -> str:
    value = table.get(key, default)
    if value == "":
        return ""  # switched off
    if not isinstance(value, str) or not re.match(r"^[Xx]-[A-Za-z0-9-]+$", value):
        problems.append(
            f"{where}.{key}: {value!r} must be an X- header name (the capture keeps X- headers of "
            'in-dialog requests), or "" for none'
        )
        return default
    return value.lower()
