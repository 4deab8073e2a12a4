"""Sign-in throttling under concurrency, and text with NUL in sign-in and call ids, on the real
app (create_app) over HTTP on SQLite and PostgreSQL; the limiter's reservations unit by unit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from users_support import PASSWORD, add_user, login, make_app

from callcenter.users.model import User
from callcenter.users.repository import UserRepository
from callcenter.users.service import LoginRateLimiter, LoginThrottled
from callcenter.web.keys import AUDIT, LOGIN_LIMITER, USERS

Client = TestClient[Any, Any]
LIMIT = 5


@pytest.fixture
async def client(migrated_db_url: str, tmp_path: Path, aiohttp_client: Any) -> Client:
    c: Client = await aiohttp_client(make_app(migrated_db_url, tmp_path, login_max_failures=LIMIT))
    await add_user(c.app, "alice", "agent")
    await add_user(c.app, "sam", "supervisor")
    return c


async def test_a_concurrent_burst_of_wrong_guesses_gets_only_the_limit_checked(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = 40
    users: UserRepository = client.app[USERS]
    real_authenticate = users.authenticate
    release = asyncio.Event()
    progress = asyncio.Event()
    checked = 0
    answered = 0

    async def held_authenticate(username: str, password: str) -> User | None:
        # every check waits until each request of the burst is either here or answered
        nonlocal checked
        checked += 1
        progress.set()
        await release.wait()
        return await real_authenticate(username, password)

    monkeypatch.setattr(users, "authenticate", held_authenticate)

    async def attempt(i: int) -> tuple[int, str | None]:
        nonlocal answered
        try:
            resp = await client.post(
                "/api/v1/auth/login", json={"username": "alice", "password": f"guess-{i}"}
            )
            return resp.status, resp.headers.get("Retry-After")
        finally:
            answered += 1
            progress.set()

    tasks = [asyncio.create_task(attempt(i)) for i in range(burst)]
    while checked + answered < burst:
        await progress.wait()
        progress.clear()
    release.set()
    results = await asyncio.gather(*tasks)

    statuses = [status for status, _ in results]
    assert checked == LIMIT
    assert statuses.count(401) == LIMIT and statuses.count(429) == burst - LIMIT
    assert all(int(after or 0) >= 1 for status, after in results if status == 429)
    # the failures were counted: even the right password waits now, with a real Retry-After
    monkeypatch.setattr(users, "authenticate", real_authenticate)
    resp = await client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 60
    assert client.app[LOGIN_LIMITER].in_flight() == 0
    failed, _ = await client.app[AUDIT].list(action="login_failed")
    assert len(failed) == LIMIT


async def test_an_attempt_ending_in_an_error_frees_its_reservation(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    users: UserRepository = client.app[USERS]
    real_authenticate = users.authenticate

    async def broken(username: str, password: str) -> User | None:
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(users, "authenticate", broken)
    for _ in range(LIMIT + 1):
        resp = await client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"}
        )
        assert resp.status == 500
    assert client.app[LOGIN_LIMITER].in_flight() == 0
    monkeypatch.setattr(users, "authenticate", real_authenticate)
    assert (await login(client, "alice"))["user"]["username"] == "alice"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "\x00", "password": "b"},
        {"username": "ali\x00ce", "password": PASSWORD},
        {"username": "alice", "password": "test-pass\x00-123"},
    ],
)
async def test_json_sign_in_with_nul_is_invalid_input(client: Client, body: dict[str, str]) -> None:
    resp = await client.post("/api/v1/auth/login", json=body)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_failed" and set(error["fields"]) <= {"username", "password"}


async def test_form_sign_in_with_nul_counts_as_a_failure(client: Client) -> None:
    page = await client.get("/login")
    form = {"username": "ali\x00ce", "password": "wrong"}
    for _ in range(LIMIT):
        # each page answered comes with a new CSRF cookie
        form["csrf_token"] = page.cookies["cc_login_csrf"].value
        page = await client.post("/login", data=form, allow_redirects=False)
        assert page.status == 401, await page.text()
    form["csrf_token"] = page.cookies["cc_login_csrf"].value
    resp = await client.post("/login", data=form, allow_redirects=False)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    failed, _ = await client.app[AUDIT].list(action="login_failed")
    assert [e.entity_id for e in failed] == ["alice"] * LIMIT


async def test_call_id_with_nul_is_invalid_input(client: Client) -> None:
    await login(client, "sam")
    resp = await client.get("/api/v1/calls/%00")
    assert resp.status == 422, await resp.text()
    assert "uniqueid" in (await resp.json())["error"]["fields"]
    assert (await client.get("/api/v1/calls/" + "1" * 65)).status == 422
    assert (await client.get("/api/v1/calls/1700000000.1")).status == 404


# ------------------------------------------------------------------------------ the limiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reservations_count_until_settled() -> None:
    clock = FakeClock()
    rl = LoginRateLimiter(clock=clock, max_failures=3, window_seconds=60)
    attempts = [rl.reserve("Amy", "10.0.0.1") for _ in range(3)]
    assert rl.in_flight() == 3
    with pytest.raises(LoginThrottled) as refused:
        rl.reserve("amy", "10.0.0.1")
    assert 0 < refused.value.retry_after <= 1  # only in flight: soon decided
    assert rl.retry_after("amy", "10.0.0.2") == 0  # another address
    rl.reserve("bob", "10.0.0.1").release()  # another user

    attempts[0].release()  # an error: nothing counted, the slot is free again
    attempts[0].failed()  # settled already: no effect
    again = rl.reserve("amy", "10.0.0.1")
    for attempt in (attempts[1], attempts[2], again):
        attempt.failed()
    assert rl.in_flight() == 0
    with pytest.raises(LoginThrottled) as refused:
        rl.reserve("amy", "10.0.0.1")
    assert refused.value.retry_after == 60  # now the failures decide
    clock.now += 60  # the window passed: all forgotten
    assert len(rl) == 2 and rl.retry_after("amy", "10.0.0.1") == 0 and len(rl) == 0
    rl.reserve("amy", "10.0.0.1").failed()
    rl.reserve("amy", "10.0.0.1").succeeded()
    assert len(rl) == 1  # the user's failures are forgotten, the address's remain
    assert rl.in_flight() == 0


def test_per_address_limit_counts_attempts_in_flight_of_any_user() -> None:
    rl = LoginRateLimiter(clock=FakeClock(), max_failures=5, max_failures_per_ip=4)
    held = [rl.reserve(f"user{i}", "10.9.9.9") for i in range(4)]
    with pytest.raises(LoginThrottled):
        rl.reserve("someone-else", "10.9.9.9")
    rl.reserve("someone-else", "10.9.9.8").release()
    held[0].succeeded()
    rl.reserve("someone-else", "10.9.9.9").release()
