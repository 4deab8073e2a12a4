"""Pure user decisions: password hashing, the policy table, masking, secrets and scopes, the
login rate limiter, language negotiation, redirects after sign-in."""

from __future__ import annotations

import hashlib

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from callcenter.users.model import FULL_NUMBER_ROLES, POLICY, ROLES, SCOPES, Principal
from callcenter.users.service import (
    LoginRateLimiter,
    Passwords,
    can,
    check_scopes,
    landing_path,
    mask_digits,
    mask_number,
    negotiate_language,
    new_api_token,
    new_session_token,
    normalise_username,
    numbers_for,
    safe_next,
)

FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def principal(role: str, **kw: object) -> Principal:
    return Principal(user_id=1, username=role, display_name=role, role=role, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ passwords


def test_hash_verifies_and_is_salted() -> None:
    pw = Passwords(hasher=FAST)
    a, b = pw.hash("correct horse"), pw.hash("correct horse")
    assert a != b and a.startswith("$argon2id$")
    assert pw.verify(a, "correct horse") == (True, False)
    assert pw.verify(a, "correct hors") == (False, False)
    assert pw.verify("not a hash", "correct horse") == (False, False)
    assert pw.verify(a, "x" * 10_000) == (False, False)


def test_rehash_is_asked_for_when_parameters_change() -> None:
    old = Passwords(hasher=FAST).hash("correct horse")
    stronger = Passwords(hasher=PasswordHasher(time_cost=2, memory_cost=128, parallelism=1))
    assert stronger.verify(old, "correct horse") == (True, True)
    assert stronger.verify(stronger.hash("correct horse"), "correct horse") == (True, False)


@pytest.mark.parametrize("bad", ["short", " " * 12, "x" * 257])
def test_password_rules(bad: str) -> None:
    with pytest.raises(ValueError, match="password"):
        Passwords(hasher=FAST).hash(bad)


def test_usernames_are_lowercase_and_restricted() -> None:
    assert normalise_username("  Alice.W ") == "alice.w"
    for bad in ("a", "-lead", "has space", "ünïcode", "x" * 65, ""):
        with pytest.raises(ValueError):
            normalise_username(bad)


# ------------------------------------------------------------------------------ policy


def test_policy_table_covers_known_roles_only() -> None:
    for permission, roles in POLICY.items():
        assert roles, permission
        assert roles <= set(ROLES), permission
    assert POLICY["users:admin"] == {"admin"}
    assert "agent" not in POLICY["live:view"] and "qa" in POLICY["live:view"]
    assert "qa" not in POLICY["tickets:write"] and "qa" in POLICY["tickets:read"]
    assert POLICY["self"] == set(ROLES)


def test_can() -> None:
    assert can(principal("admin"), "users:admin")
    assert not can(principal("supervisor"), "users:admin")
    assert can(principal("supervisor"), "audit:read")
    assert not can(None, "self")
    with pytest.raises(KeyError):
        can(principal("admin"), "no:such")


# ------------------------------------------------------------------------------ masking


def test_mask_number_by_role() -> None:
    for role in ROLES:
        shown = mask_number("13812348000", principal(role))
        if role in FULL_NUMBER_ROLES:
            assert shown == "13812348000"
        else:
            assert shown == "138****8000"
    assert mask_number("13812348000", None) == "138****8000"
    assert mask_number(None, principal("qa")) is None


def test_numbers_for_masks_every_number_a_call_carries_for_qa_only() -> None:
    call = {
        "caller_number": "13812348000",
        "dialed_number": "4008001234",
        "variables": {"CALLCENTER_CALLBACK": "13912345678", "CALLCENTER_ORDER_NUMBER": "123456"},
        "ivr_steps": [
            {"kind": "collect", "input": "123456"},
            {"kind": "callback", "input": "13912345678", "result": "requested"},
        ],
        "callback": {"request": {"number": "13912345678"}, "number_normalised": "13912345678"},
    }
    assert numbers_for(principal("agent"), call) == call
    shown = numbers_for(principal("qa"), call)
    assert shown["caller_number"] == "138****8000"
    assert shown["dialed_number"] == "4008001234"  # the hotline's own number
    assert shown["variables"] == {
        "CALLCENTER_CALLBACK": "139****5678",
        "CALLCENTER_ORDER_NUMBER": "123456",
    }
    assert shown["ivr_steps"][0]["input"] == "123456"
    assert shown["ivr_steps"][1]["input"] == "139****5678"
    assert shown["callback"] == {
        "request": {"number": "139****5678"},
        "number_normalised": "139****5678",
    }
    assert call["caller_number"] == "13812348000"  # the input is not changed


def test_mask_digits_keeps_the_format() -> None:
    assert mask_digits("+86 138-1234-8000") == "+86 1**-****-8000"
    assert mask_digits("021-62345678") == "021-****5678"
    assert mask_digits("62345678") == "******78"
    assert mask_digits("8001") == "**01"
    assert mask_digits("7") == "*"
    assert mask_digits("anonymous") == "****"


@given(st.text(alphabet="0123456789 +-()", min_size=1, max_size=30))
def test_masking_keeps_the_layout_and_hides_most_digits(number: str) -> None:
    masked = mask_digits(number)
    digits = sum(ch.isdigit() for ch in number)
    if digits == 0:
        return
    assert len(masked) == len(number)
    for orig, shown in zip(number, masked, strict=True):
        assert shown == orig or (orig.isdigit() and shown == "*")
    hidden = masked.count("*")
    assert hidden >= (4 if digits >= 11 else max(1, digits - 2))


# ------------------------------------------------------------------------------ secrets


def test_api_tokens_are_random_prefixed_and_stored_as_sha256() -> None:
    a, b = new_api_token(), new_api_token()
    assert a.plaintext != b.plaintext
    assert a.plaintext.startswith("cc_") and len(a.plaintext) >= 40
    assert a.prefix == a.plaintext[:8]
    assert a.digest == hashlib.sha256(a.plaintext.encode()).hexdigest()
    s = new_session_token()
    assert s.digest == hashlib.sha256(s.plaintext.encode()).hexdigest() and len(s.plaintext) >= 40


def test_scopes_are_checked_and_canonical() -> None:
    assert check_scopes(["tickets:write", "calls:read", "calls:read"]) == (
        "calls:read",
        "tickets:write",
    )
    assert set(check_scopes(SCOPES)) == set(SCOPES)
    with pytest.raises(ValueError, match="unknown scope"):
        check_scopes(["calls:read", "root"])
    with pytest.raises(ValueError, match="at least one"):
        check_scopes([])


# ------------------------------------------------------------------------------ rate limiting


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_blocks_after_the_limit_and_slides() -> None:
    clock = FakeClock()
    rl = LoginRateLimiter(clock=clock, max_failures=3, window_seconds=60)
    for _ in range(3):
        assert rl.retry_after("amy", "10.0.0.1") == 0
        rl.failed("Amy", "10.0.0.1")
        clock.now += 10
    wait = rl.retry_after("AMY", "10.0.0.1")
    assert wait == pytest.approx(30)  # the first failure (at 1000) leaves the window at 1060
    assert rl.retry_after("amy", "10.0.0.2") == 0  # another address
    assert rl.retry_after("bob", "10.0.0.1") == 0  # another user
    clock.now += wait
    assert rl.retry_after("amy", "10.0.0.1") == 0  # one slot free again
    rl.failed("amy", "10.0.0.1")
    assert rl.retry_after("amy", "10.0.0.1") > 0


def test_success_resets_the_user_counter() -> None:
    clock = FakeClock()
    rl = LoginRateLimiter(clock=clock, max_failures=2, window_seconds=60)
    rl.failed("amy", "ip")
    rl.succeeded("amy", "ip")
    rl.failed("amy", "ip")
    assert rl.retry_after("amy", "ip") == 0


def test_one_address_trying_many_users_is_limited_too() -> None:
    clock = FakeClock()
    rl = LoginRateLimiter(clock=clock, max_failures=5, max_failures_per_ip=4, window_seconds=60)
    for i in range(4):
        rl.failed(f"user{i}", "10.9.9.9")
    assert rl.retry_after("someone-else", "10.9.9.9") > 0
    assert rl.retry_after("someone-else", "10.9.9.8") == 0


def test_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    rl = LoginRateLimiter(clock=clock, max_failures=3, window_seconds=60, max_keys=100)
    for i in range(1000):
        rl.failed(f"user{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(rl) <= 100
    clock.now += 61
    assert rl.retry_after("user999", "10.0.3.231") == 0
    assert len(rl) < 100  # expired keys are dropped when looked at


def test_limiter_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        LoginRateLimiter(clock=FakeClock(), max_failures=0)


# ------------------------------------------------------------------------------ navigation


@pytest.mark.parametrize(
    ("requested", "header", "expected"),
    [
        ("en", "zh-CN", "en"),
        ("zh-CN", "en", "zh-CN"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr, en;q=0.4, zh;q=0.8", "zh-CN"),
        (None, "de", "zh-CN"),
        (None, None, "zh-CN"),
        ("xx", "en;q=bogus, en-GB;q=0.3", "en"),
    ],
)
def test_negotiate_language(requested: str | None, header: str | None, expected: str) -> None:
    assert negotiate_language(requested, header) == expected


def test_landing_and_safe_next() -> None:
    assert landing_path("agent") == "/console" and landing_path("specialist") == "/console"
    assert landing_path("qa") == "/" and landing_path("admin") == "/"
    assert safe_next("/api/docs", "agent") == "/api/docs"
    assert safe_next("/", "agent") == "/console" and safe_next("/", "supervisor") == "/"
    for evil in ("//evil.example", "https://evil.example", "/\\evil", "", None, "javascript:x"):
        assert safe_next(evil, "agent") == "/console"
