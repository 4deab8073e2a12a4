"""Pure decisions about users: passwords, secrets, the role policy, masking, login throttling.

No I/O here; repositories and handlers call these.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from callcenter.users.model import (
    FULL_NUMBER_ROLES,
    LANGUAGES,
    POLICY,
    ROLES,
    SCOPES,
    Language,
    Principal,
    Role,
)

MIN_PASSWORD = 8
MAX_PASSWORD = 256
USERNAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
TOKEN_PREFIX: Final = "cc_"
TOKEN_PREFIX_LEN: Final = 8  # shown in token lists, enough to tell tokens apart
INTERFACE_RE: Final = re.compile(r"^[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,60}$")


# ------------------------------------------------------------------------------ passwords


class Passwords:
    """argon2id hashing. `verify` tells whether the stored hash should be replaced (the
    hasher's parameters changed since it was made), so logins upgrade old hashes."""

    def __init__(self, *, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()

    def hash(self, password: str) -> str:
        check_password_rules(password)
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> tuple[bool, bool]:
        """(matches, needs_rehash); a malformed stored hash never matches."""
        if len(password) > MAX_PASSWORD:
            return False, False
        try:
            self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, False
        return True, self._hasher.check_needs_rehash(stored_hash)

    def dummy_verify(self, password: str) -> None:
        """Spend the same time as a real check, so unknown usernames are not faster to
        answer than wrong passwords."""
        self.verify(self._dummy, password)

    @property
    def _dummy(self) -> str:
        cached: str | None = getattr(self, "_dummy_hash", None)
        if cached is None:
            cached = self._hasher.hash(secrets.token_urlsafe(16))
            self._dummy_hash = cached
        return cached


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"password must be at most {MAX_PASSWORD} characters")
    if password.strip() == "":
        raise ValueError("password must not be blank")


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_RE.match(name):
        raise ValueError(
            "username: 2-64 characters, letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


# ------------------------------------------------------------------------------ secrets


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A freshly made secret: `plaintext` is shown once; only `digest` is stored."""

    plaintext: str
    digest: str
    prefix: str


def new_api_token() -> NewSecret:
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewSecret(plaintext, sha256_hex(plaintext), plaintext[:TOKEN_PREFIX_LEN])


def new_session_token() -> NewSecret:
    plaintext = secrets.token_urlsafe(32)
    return NewSecret(plaintext, sha256_hex(plaintext), "")


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Known scopes, de-duplicated, in the canonical order; ValueError names the unknown."""
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError("a token needs at least one scope")
    return tuple(s for s in SCOPES if s in wanted)


# ------------------------------------------------------------------------------ policy


def can(principal: Principal | None, permission: str) -> bool:
    """Whether `principal`'s role has `permission` in the POLICY table (KeyError if unknown)."""
    allowed = POLICY[permission]
    return principal is not None and principal.role in allowed


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")


def landing_path(role: str) -> str:
    """Where a user lands after sign-in: front-line staff on the console, others on the
    live page."""
    return "/console" if role in ("agent", "specialist") else "/"


def safe_next(target: str | None, role: str) -> str:
    """A same-site path to continue to after sign-in (no open redirects); the site root means
    "my usual page"."""
    if (
        target
        and target != "/"
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        return target
    return landing_path(role)


def sees_full_numbers(principal: Principal | None) -> bool:
    return principal is not None and principal.role in FULL_NUMBER_ROLES


def mask_number(number: str | None, principal: Principal | None) -> str | None:
    """The phone number as this principal may see it: in full for roles that handle callers,
    otherwise the middle digits hidden (13812348000 -> 138****8000)."""
    if number is None or sees_full_numbers(principal):
        return number
    return mask_digits(number)


# Keys whose values are a caller's phone number, wherever they appear in a JSON payload
# (CALLCENTER_CALLBACK: the number a caller keyed in for a call back, kept in call variables).
NUMBER_KEYS: Final = frozenset(
    {
        "caller_number",
        "number",
        "number_raw",
        "number_normalised",
        "connected_number",
        "CALLCENTER_CALLBACK",
    }
)


def redact_numbers(payload: Any) -> Any:
    """A copy of a JSON-like payload with every caller number masked: values under
    NUMBER_KEYS, and the `input` of an IVR callback step (the number the caller keyed in)."""
    if isinstance(payload, dict):
        callback_step = payload.get("kind") == "callback"
        return {
            key: mask_digits(value)
            if (key in NUMBER_KEYS or (callback_step and key == "input"))
            and isinstance(value, str)
            and value
            else redact_numbers(value)
            for key, value in payload.items()
        }
    if isinstance(payload, list):
        return [redact_numbers(item) for item in payload]
    return payload


def numbers_for(principal: Principal | None, payload: Any) -> Any:
    """`payload` as this principal may see it: unchanged for roles that handle callers,
    otherwise through `redact_numbers`."""
    return payload if sees_full_numbers(principal) else redact_numbers(payload)


def mask_digits(number: str) -> str:
    digits = [i for i, ch in enumerate(number) if ch.isdigit()]
    n = len(digits)
    if n == 0:
        return "*" * min(len(number), 4)
    if n >= 11:  # mobile numbers and longer: the usual 138****8000
        keep_head, keep_tail = 3, 4
    else:  # landlines, extensions: only the last digits
        keep_head, keep_tail = 0, (2 if n >= 4 else 1 if n >= 2 else 0)
    hidden = set(digits[keep_head : n - keep_tail])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(number))


# ------------------------------------------------------------------------------ throttling


class LoginThrottled(Exception):
    """A sign-in attempt refused by `LoginRateLimiter.reserve`; `retry_after` in seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-ins; retry in {retry_after:.0f}s")
        self.retry_after = retry_after


# Retry-After when attempts still being checked fill the limit (they end in well under this).
IN_FLIGHT_RETRY_SECONDS: Final = 1.0


class LoginRateLimiter:
    """Sliding-window limit on failed sign-ins, per (username, client IP) and per client IP.

    An attempt is reserved (`reserve`) before the password is checked, so concurrent attempts
    count too: a key refuses once its recent failures plus the attempts in flight reach its
    limit. The reservation then becomes a failure or is released (`LoginAttempt`).

    In memory and per process: with several server processes each keeps its own count, so the
    effective limit is multiplied by the number of processes. Bounded: at most `max_keys` keys
    of failures are tracked (the least recently failed are forgotten first); attempts in flight
    are bounded by the requests being served.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_failures: int = 5,
        window_seconds: float = 900.0,
        max_failures_per_ip: int = 50,
        max_keys: int = 10_000,
    ) -> None:
        if max_failures < 1 or max_failures_per_ip < 1 or window_seconds <= 0 or max_keys < 2:
            raise ValueError("rate limiter limits must be positive")
        self._clock = clock
        self._window = window_seconds
        self._limits = {"user": max_failures, "ip": max_failures_per_ip}
        self._max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str, str], deque[float]] = OrderedDict()
        self._in_flight: dict[tuple[str, str, str], int] = {}

    def _keys(self, username: str, ip: str) -> list[tuple[str, str, str]]:
        return [("user", username.strip().lower(), ip), ("ip", "", ip)]

    def _recent(self, key: tuple[str, str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, username: str, ip: str) -> float:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = self._clock()
        wait = 0.0
        for key in self._keys(username, ip):
            times = self._recent(key, now)
            failures = 0 if times is None else len(times)
            limit = self._limits[key[0]]
            if times is not None and failures >= limit:
                # the attempt that frees a slot is the limit-th most recent one expiring
                wait = max(wait, times[-limit] + self._window - now)
            elif failures + self._in_flight.get(key, 0) >= limit:
                wait = max(wait, IN_FLIGHT_RETRY_SECONDS)
        return wait

    def reserve(self, username: str, ip: str) -> LoginAttempt:
        """Count an attempt as in flight before its password is checked; LoginThrottled
        (nothing reserved) when this username+IP or this IP is at its limit. The caller
        settles the returned attempt once: `failed`, `succeeded` or `release`."""
        wait = self.retry_after(username, ip)
        if wait > 0:
            raise LoginThrottled(wait)
        keys = self._keys(username, ip)
        for key in keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return LoginAttempt(self, username, ip)

    def _unreserve(self, username: str, ip: str) -> None:
        for key in self._keys(username, ip):
            left = self._in_flight.get(key, 0) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)

    def failed(self, username: str, ip: str) -> None:
        now = self._clock()
        for key in self._keys(username, ip):
            times = self._recent(key, now) or deque(maxlen=self._limits[key[0]])
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, username: str, ip: str) -> None:
        self._failures.pop(self._keys(username, ip)[0], None)

    def in_flight(self) -> int:
        """Attempts reserved and not yet settled (each counted once)."""
        return sum(n for (kind, _, _), n in self._in_flight.items() if kind == "ip")

    def __len__(self) -> int:
        return len(self._failures)


class LoginAttempt:
    """One reserved sign-in attempt (`LoginRateLimiter.reserve`). The first of `failed`,
    `succeeded` or `release` settles it; later calls do nothing, so `release` fits a
    `finally` for attempts that ended in an error."""

    __slots__ = ("_ip", "_limiter", "_open", "_username")

    def __init__(self, limiter: LoginRateLimiter, username: str, ip: str) -> None:
        self._limiter = limiter
        self._username = username
        self._ip = ip
        self._open = True

    def _settle(self) -> bool:
        if not self._open:
            return False
        self._open = False
        self._limiter._unreserve(self._username, self._ip)
        return True

    def failed(self) -> None:
        """The password check failed: the reservation becomes a failure."""
        if self._settle():
            self._limiter.failed(self._username, self._ip)

    def succeeded(self) -> None:
        """Signed in: the reservation ends and this username+IP's failures are forgotten."""
        if self._settle():
            self._limiter.succeeded(self._username, self._ip)

    def release(self) -> None:
        """The check did not complete (an error): the reservation ends, nothing is counted."""
        self._settle()


def negotiate_language(requested: str | None, accept_language: str | None) -> Language:
    """`requested` (e.g. ?lang=en) if known, else the best of Accept-Language, else zh-CN."""
    if requested in LANGUAGES:
        return "en" if requested == "en" else "zh-CN"
    best: tuple[float, Language] | None = None
    for part in (accept_language or "")[:512].split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        lang: Language | None = "en" if primary == "en" else "zh-CN" if primary == "zh" else None
        if lang is not None and quality > 0 and (best is None or quality > best[0]):
            best = (quality, lang)
    return best[1] if best else "zh-CN"
