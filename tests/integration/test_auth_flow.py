"""Sign-in, sessions, CSRF, rate limiting, API tokens, disabled users and the audit trail on the
real app (create_app) over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher
from users_support import PASSWORD, add_user, login, make_app

from callcenter.users.repository import UserRepository
from callcenter.users.service import Passwords
from callcenter.web.keys import API_TOKENS, AUDIT, USERS, WEB_SESSIONS

Client = TestClient[Any, Any]


@pytest.fixture
async def client(migrated_db_url: str, tmp_path: Path, aiohttp_client: Any) -> Client:
    c: Client = await aiohttp_client(make_app(migrated_db_url, tmp_path, login_max_failures=3))
    await add_user(c.app, "admin", "admin")
    await add_user(c.app, "amy", "agent", agent_interface="PJSIP/1001", group="bookings")
    return c


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = (await resp.json())["error"]
    return body


async def test_login_sets_a_safe_cookie_and_logout_ends_the_session(client: Client) -> None:
    assert (await _error(await client.get("/api/v1/me"), 401))["code"] == "unauthenticated"
    resp = await client.post("/api/v1/auth/login", json={"username": "AMY", "password": PASSWORD})
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("cc_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on 127.0.0.1, setting left on auto
    body = await resp.json()
    assert body["landing"] == "/console" and body["user"]["role"] == "agent"
    assert body["user"]["csrf_token"] == body["csrf_token"]

    me = await (await client.get("/api/v1/me")).json()
    assert me["username"] == "amy" and me["agent_interface"] == "PJSIP/1001"
    assert "console:use" in me["permissions"] and "users:admin" not in me["permissions"]

    # logout is an unsafe method: the CSRF token is required
    assert (await _error(await client.post("/api/v1/auth/logout"), 403))["code"] == "csrf_failed"
    out = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status == 204
    assert (await _error(await client.get("/api/v1/me"), 401))["code"] == "unauthenticated"


async def test_secure_cookie_when_configured(
    migrated_db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    c = await aiohttp_client(make_app(migrated_db_url, tmp_path, session_cookie_secure=True))
    await add_user(c.app, "sam", "supervisor")
    resp = await c.post("/api/v1/auth/login", json={"username": "sam", "password": PASSWORD})
    assert resp.status == 200
    assert "Secure" in resp.headers["Set-Cookie"]


async def test_stolen_cookie_value_is_not_the_stored_id(client: Client) -> None:
    resp = await client.post("/api/v1/auth/login", json={"username": "amy", "password": PASSWORD})
    cookie = resp.cookies["cc_session"].value
    principal = await client.app[WEB_SESSIONS].resolve(cookie)
    assert principal is not None and principal.session_id != cookie
    # the stored id (sha256 of the cookie) does not work as a cookie
    assert principal.session_id is not None
    assert await client.app[WEB_SESSIONS].resolve(principal.session_id) is None


async def test_csrf_is_required_for_cookie_posts_with_header_or_form_field(
    client: Client,
) -> None:
    body = await login(client, "admin")
    new_user = {"username": "neo", "password": "long-enough-1", "role": "qa"}
    err = await _error(await client.post("/api/v1/users", json=new_user), 403)
    assert err["code"] == "csrf_failed"
    wrong = await client.post("/api/v1/users", json=new_user, headers={"X-CSRF-Token": "nope"})
    assert (await _error(wrong, 403))["code"] == "csrf_failed"
    ok = await client.post(
        "/api/v1/users", json=new_user, headers={"X-CSRF-Token": body["csrf_token"]}
    )
    assert ok.status == 201, await ok.text()
    # HTML forms send it as a field: sign out through the form
    form = await client.post(
        "/logout", data={"csrf_token": body["csrf_token"]}, allow_redirects=False
    )
    assert form.status == 303 and form.headers["Location"] == "/login"
    assert (await client.get("/api/v1/me")).status == 401


async def test_wrong_password_then_rate_limit_with_retry_after(client: Client) -> None:
    for _ in range(3):
        resp = await client.post(
            "/api/v1/auth/login", json={"username": "amy", "password": "wrong-password"}
        )
        assert (await _error(resp, 401))["code"] == "invalid_credentials"
    # now even the right password is refused for a while
    resp = await client.post("/api/v1/auth/login", json={"username": "amy", "password": PASSWORD})
    assert (await _error(resp, 429))["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0
    # another user from the same address is not locked out by amy's failures
    assert (await login(client, "admin"))["user"]["username"] == "admin"
    failed, _ = await client.app[AUDIT].list(action="login_failed")
    assert [e.entity_id for e in failed] == ["amy"] * 3


async def test_unknown_user_and_disabled_user_get_the_same_answer(client: Client) -> None:
    unknown = await client.post(
        "/api/v1/auth/login", json={"username": "ghost", "password": PASSWORD}
    )
    amy = await client.app[USERS].get_by_username("amy")
    assert amy is not None
    await client.app[USERS].update(amy.id, disabled=True)
    disabled = await client.post(
        "/api/v1/auth/login", json={"username": "amy", "password": PASSWORD}
    )
    assert (await _error(unknown, 401)) == (await _error(disabled, 401))


async def test_disabling_a_user_ends_their_session_and_tokens(client: Client) -> None:
    admin_client = client
    admin = await login(admin_client, "admin")
    amy = await client.app[USERS].get_by_username("amy")
    assert amy is not None
    session = await client.app[WEB_SESSIONS].create(amy.id, ip="127.0.0.1", user_agent="t")
    _, token = await client.app[API_TOKENS].create(amy.id, name="crm", scopes=["calls:read"])
    amy_cookie = {"Cookie": f"cc_session={session.cookie}"}
    amy_bearer = {"Authorization": f"Bearer {token}"}
    # (the test client keeps the admin's cookie; an explicit Authorization header wins)
    assert (await client.get("/api/v1/calls", headers=amy_bearer)).status == 200

    resp = await admin_client.patch(
        f"/api/v1/users/{amy.id}",
        json={"disabled": True},
        headers={"X-CSRF-Token": admin["csrf_token"]},
    )
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    assert await client.app[WEB_SESSIONS].resolve(session.cookie) is None
    assert await client.app[WEB_SESSIONS].count_for_user(amy.id) == 0
    assert (await client.get("/api/v1/calls", headers=amy_bearer)).status == 401
    del amy_cookie


async def test_admin_cannot_lock_themselves_out(client: Client) -> None:
    admin = await login(client, "admin")
    me = admin["user"]["id"]
    headers = {"X-CSRF-Token": admin["csrf_token"]}
    for change in ({"disabled": True}, {"role": "agent"}):
        resp = await client.patch(f"/api/v1/users/{me}", json=change, headers=headers)
        assert (await _error(resp, 409))["code"] == "conflict"


async def test_api_tokens_scopes_revocation_and_expiry(client: Client) -> None:
    body = await login(client, "admin")
    csrf = {"X-CSRF-Token": body["csrf_token"]}
    resp = await client.post(
        "/api/v1/me/tokens",
        json={"name": "reporting", "scopes": ["calls:read", "audit:read"], "expires_in_days": 30},
        headers=csrf,
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    secret = created["token"]
    assert secret.startswith("cc_") and created["prefix"] == secret[:8]
    listed = await (await client.get("/api/v1/me/tokens")).json()
    assert [t["id"] for t in listed["items"]] == [created["id"]]
    assert "token" not in listed["items"][0]  # the secret is never shown again

    bearer = {"Authorization": f"Bearer {secret}"}
    client.session.cookie_jar.clear()  # from now on only the token speaks
    assert (await client.get("/api/v1/calls", headers=bearer)).status == 200
    assert (await client.get("/api/v1/audit", headers=bearer)).status == 200
    me = await (await client.get("/api/v1/me", headers=bearer)).json()
    assert me["via_token"] is True and me["csrf_token"] is None
    assert me["scopes"] == ["audit:read", "calls:read"]
    # admin role, but the token lacks users:admin
    err = await _error(await client.get("/api/v1/users", headers=bearer), 403)
    assert "users:admin" in err["message"]
    # tokens need no CSRF token, but may not mint tokens (sessions only)
    minted = await client.post(
        "/api/v1/me/tokens", json={"name": "x", "scopes": ["calls:read"]}, headers=bearer
    )
    assert (await _error(minted, 403))["code"] == "forbidden"
    # garbage or a non-bearer scheme is anonymous
    for header in ("Bearer cc_nope", "Basic YWRtaW46eA==", "Bearer "):
        resp = await client.get("/api/v1/calls", headers={"Authorization": header})
        assert resp.status == 401

    revoked = await client.app[API_TOKENS].revoke(created["id"])
    assert revoked.revoked_at is not None
    assert (await client.get("/api/v1/calls", headers=bearer)).status == 401

    admin = await client.app[USERS].get_by_username("admin")
    assert admin is not None
    tokens = client.app[API_TOKENS]
    token, expiring = await tokens.create(
        admin.id, name="short", scopes=["calls:read"], expires_at=tokens.now() + timedelta(days=1)
    )
    assert await tokens.resolve(expiring) is not None
    later = type(tokens)(
        session_factory=tokens._sessions, clock=lambda: tokens.now() + timedelta(days=2)
    )
    assert await later.resolve(expiring) is None
    assert token.prefix == expiring[:8]


async def test_token_of_an_agent_keeps_the_agent_role(client: Client) -> None:
    amy = await client.app[USERS].get_by_username("amy")
    assert amy is not None
    _, secret = await client.app[API_TOKENS].create(
        amy.id, name="x", scopes=["users:admin", "audit:read"]
    )
    bearer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/users", headers=bearer)).status == 403
    assert (await client.get("/api/v1/audit", headers=bearer)).status == 403


async def test_password_change_ends_other_sessions(client: Client) -> None:
    first = await login(client, "amy")
    other = await client.app[WEB_SESSIONS].create(
        first["user"]["id"], ip="10.0.0.2", user_agent="phone"
    )
    bad = await client.post(
        "/api/v1/me/password",
        json={"current_password": "not-it", "new_password": "new-pass-456"},
        headers={"X-CSRF-Token": first["csrf_token"]},
    )
    assert (await _error(bad, 422))["fields"] == {"current_password": "not your current password"}
    ok = await client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "new-pass-456"},
        headers={"X-CSRF-Token": first["csrf_token"]},
    )
    assert ok.status == 204
    assert await client.app[WEB_SESSIONS].resolve(other.cookie) is None
    assert (await client.get("/api/v1/me")).status == 200  # this session stays
    assert (await login(client, "amy", "new-pass-456"))["user"]["username"] == "amy"


async def test_sessions_expire_when_idle_and_at_their_lifetime(client: Client) -> None:
    repo = client.app[WEB_SESSIONS]
    amy = await client.app[USERS].get_by_username("amy")
    assert amy is not None
    new = await repo.create(amy.id, ip=None, user_agent=None)
    now = repo._clock()
    idle = type(repo)(
        session_factory=repo._sessions,
        idle_timeout=timedelta(minutes=30),
        clock=lambda: now + timedelta(minutes=31),
    )
    assert await idle.resolve(new.cookie) is None
    assert await repo.resolve(new.cookie) is None  # expired sessions are deleted
    new = await repo.create(amy.id, ip=None, user_agent=None)
    old = type(repo)(
        session_factory=repo._sessions,
        max_age=timedelta(hours=12),
        idle_timeout=timedelta(days=1),
        clock=lambda: now + timedelta(hours=12, seconds=1),
    )
    assert await old.resolve(new.cookie) is None
    # stale sessions are purged in bulk (at start-up and at each sign-in)
    await repo.create(amy.id, ip=None, user_agent=None)
    fresh = await repo.create(amy.id, ip=None, user_agent=None)
    assert await old.purge_expired() == 2
    assert await repo.count_for_user(amy.id) == 0
    assert await repo.resolve(fresh.cookie) is None


async def test_login_upgrades_an_old_password_hash(client: Client) -> None:
    weak = Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    sessions = client.app[USERS]._sessions
    old_repo = UserRepository(session_factory=sessions, passwords=weak)
    user = await old_repo.create(username="olga", password=PASSWORD, role="qa")
    before = await client.app[USERS].password_hash(user.id)
    assert before is not None and "m=8," in before
    await login(client, "olga")
    after = await client.app[USERS].password_hash(user.id)
    assert after is not None and after != before and "m=1024,t=1,p=1" in after
    await login(client, "olga")  # still signs in with the upgraded hash


async def test_html_login_form_with_csrf_cookie_and_languages(client: Client) -> None:
    page = await client.get("/login?next=/console&lang=en")
    html = await page.text()
    assert page.status == 200 and 'lang="en"' in html and "Sign in" in html
    assert "http://" not in html and "https://" not in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token is not None
    zh = await client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert "登录" in await zh.text()

    # a form post without the matching cookie token is refused (login CSRF)
    forged = await client.post(
        "/login",
        data={"username": "amy", "password": PASSWORD, "csrf_token": "forged", "lang": "en"},
        allow_redirects=False,
    )
    assert forged.status == 403 and "expired" in await forged.text()
    page = await client.get("/login?next=/console&lang=en")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None
    wrong = await client.post(
        "/login",
        data={"username": "amy", "password": "nope-nope", "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert wrong.status == 401
    page = await client.get("/login?next=/console&lang=en")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None
    ok = await client.post(
        "/login",
        data={
            "username": "amy",
            "password": PASSWORD,
            "csrf_token": token.group(1),
            "next": "//evil.example/",
        },
        allow_redirects=False,
    )
    assert ok.status == 303
    assert ok.headers["Location"] == "/console"  # no open redirect; agents land on the console
    assert (await client.get("/api/v1/me")).status == 200


async def test_pages_redirect_anonymous_to_login_and_refuse_wrong_roles(client: Client) -> None:
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/"
    await login(client, "amy")
    assert (await client.get("/", allow_redirects=False)).status == 403  # agents: the console
    ws = await client.get("/ws")
    assert ws.status == 403


async def test_websocket_refuses_other_sites(client: Client) -> None:
    await login(client, "admin")
    resp = await client.get(
        "/ws",
        headers={
            "Origin": "http://evil.example",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert resp.status == 403
    ws = await client.ws_connect("/ws")  # same origin (no Origin header from the test client)
    await ws.close()


async def test_audit_log_records_sign_ins_and_user_changes(client: Client) -> None:
    await client.post("/api/v1/auth/login", json={"username": "amy", "password": "bad-bad-bad"})
    admin = await login(client, "admin")
    csrf = {"X-CSRF-Token": admin["csrf_token"]}
    created = await (
        await client.post(
            "/api/v1/users",
            json={"username": "qa1", "password": "qa-pass-123", "role": "qa"},
            headers=csrf,
        )
    ).json()
    await client.patch(f"/api/v1/users/{created['id']}", json={"language": "en"}, headers=csrf)
    await client.post(
        f"/api/v1/users/{created['id']}/password", json={"password": "qa-pass-456"}, headers=csrf
    )
    await client.post("/api/v1/auth/logout", headers=csrf)
    await login(client, "admin")
    page = await (await client.get("/api/v1/audit", params={"limit": "50"})).json()
    actions = [(e["action"], e["entity_type"]) for e in reversed(page["items"])]
    assert actions == [
        ("login_failed", "user"),
        ("login", "user"),
        ("create", "user"),
        ("update", "user"),
        ("password", "user"),
        ("logout", "user"),
        ("login", "user"),
    ]
    assert page["total"] == 7
    filtered = await (
        await client.get(
            "/api/v1/audit", params={"entity_type": "user", "entity_id": str(created["id"])}
        )
    ).json()
    assert {e["action"] for e in filtered["items"]} == {"create", "update", "password"}
    assert all(e["actor_user_id"] == admin["user"]["id"] for e in filtered["items"])
    assert all(
        "password" not in str(e["details"]) or e["action"] == "password" for e in filtered["items"]
    )
    bad = await client.get("/api/v1/audit", params={"since": "2026-01-01T00:00:00"})
    assert (await _error(bad, 422))["fields"]["__root__"].startswith("since needs a time zone")
