"""Portal passwords: scrypt hashes with their parameters stored alongside, checked in constant time.

A stored hash reads ``scrypt$ln=15,r=8,p=1$<salt>$<key>`` (salt and derived key in unpadded
base64): the cost is part of the text, so raising the default later keeps old hashes checkable
(and :func:`needs_rehash` says which to renew). The password is NFKC-normalised first, so the
same password typed on two keyboards (composed or decomposed accents) is the same password.

Hashes are kept in ``users.password_hash`` (:meth:`store.access.principals.Users.set_password_hash`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata

from callrec.store.errors import InvalidArgument

SCHEME = "scrypt"
DEFAULT_LOG2_N = 15  # 32 MiB of memory and ~0.1 s per check on one core of the appliance
DEFAULT_R = 8
DEFAULT_P = 1
MIN_LENGTH = 12
MAX_LENGTH = 1024
_SALT_BYTES = 16
_KEY_BYTES = 32
# Limits on the parameters read back from a stored hash: a hash altered to ask for gigabytes of
# memory must fail to check, not take the portal down.
_MAX_LOG2_N, _MAX_R, _MAX_P = 20, 16, 4
_FORMAT = re.compile(
    r"scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{8,64})\$([A-Za-z0-9+/]{8,128})"
)
# A hash to check against when a user has none, so an unknown user costs as long as a wrong password.
_DUMMY: dict[int, str] = {}


def check_password(password: object) -> str:
    """A password that may be set: text of :data:`MIN_LENGTH` to :data:`MAX_LENGTH` characters,
    not all blank, without control characters; raises :class:`InvalidArgument` otherwise."""
    if not isinstance(password, str):
        raise InvalidArgument("a password must be text")
    text = unicodedata.normalize("NFKC", password)
    if len(text) < MIN_LENGTH:
        raise InvalidArgument(f"the password is too short: use at least {MIN_LENGTH} characters")
    if len(text) > MAX_LENGTH:
        raise InvalidArgument(f"the password is too long: use at most {MAX_LENGTH} characters")
    if not text.strip() or any(unicodedata.category(ch) == "Cc" for ch in text):
        raise InvalidArgument("the password must be visible text without control characters")
    return text


def hash_password(
    password: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """The stored form of ``password`` (checked by :func:`check_password`) with a fresh salt."""
    text = check_password(password)
    _check_cost(log2_n, r, p)
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _derive(text, salt, log2_n, r, p)
    return f"{SCHEME}$ln={log2_n},r={r},p={p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches the stored hash. ``None`` (no password set) or a malformed hash
    never matches, after the same work as a real check, so timing does not tell them apart."""
    parsed = _parse(stored) if isinstance(stored, str) else None
    if not isinstance(password, str) or len(password) > 4 * MAX_LENGTH:
        password = ""
    text = unicodedata.normalize("NFKC", password)
    if parsed is None:
        dummy = _parse(_dummy_hash())
        assert dummy is not None
        log2_n, r, p, salt, expected = dummy
        hmac.compare_digest(_derive(text, salt, log2_n, r, p), expected)
        return False
    log2_n, r, p, salt, expected = parsed
    return hmac.compare_digest(_derive(text, salt, log2_n, r, p), expected)


def needs_rehash(
    stored: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> bool:
    """Whether a stored hash is weaker than the given (default) cost, or not one of ours."""
    parsed = _parse(stored)
    return parsed is None or (parsed[0], parsed[1], parsed[2]) < (log2_n, r, p)


def _dummy_hash() -> str:
    if DEFAULT_LOG2_N not in _DUMMY:
        _DUMMY[DEFAULT_LOG2_N] = hash_password(secrets.token_urlsafe(24))
    return _DUMMY[DEFAULT_LOG2_N]


def _check_cost(log2_n: int, r: int, p: int) -> None:
    if not (1 <= log2_n <= _MAX_LOG2_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise InvalidArgument(
            f"invalid scrypt cost ln={log2_n}, r={r}, p={p}: ln 1-{_MAX_LOG2_N}, r 1-{_MAX_R}, p 1-{_MAX_P}"
        )


def _derive(text: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(text.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=_KEY_BYTES)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    match = _FORMAT.fullmatch(stored.strip())
    if match is None:
        return None
    log2_n, r, p = (int(g) for g in match.groups()[:3])
    try:
        _check_cost(log2_n, r, p)
        salt, key = _unb64(match.group(4)), _unb64(match.group(5))
    except (InvalidArgument, binascii.Error, ValueError):
        return None
    if len(salt) < 8 or len(key) != _KEY_BYTES:
        return None
    return log2_n, r, p, salt, key


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
