"""Every route of the real app x every role (+ anonymous, + API tokens): allowed or refused
exactly as the policy table (callcenter.users.model.POLICY) says, on SQLite.

A route without declared roles fails the test unless it is the static file route. Each request
uses a fresh session (created directly in the store), so routes with side effects (sign-out)
cannot spoil the next request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from users_support import add_role_users, make_app

from callcenter.users.model import POLICY, ROLES, SCOPES
from callcenter.web.api import ANY_SCOPE, RouteSpec, iter_specs
from callcenter.web.keys import API_TOKENS, WEB_SESSIONS

Client = TestClient[Any, Any]
PUBLIC = None

# The routes of issue 2 and of the users/auth area, by the permission they must require.
# Routes of other areas are checked against the table generically (their roles must be one of
# POLICY's role sets).
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/"): "live:view",
    ("GET", "/ws"): "live:view",
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/v1/calls"): "calls:read",
    ("GET", "/api/v1/calls/{uniqueid}"): "calls:read",
    ("GET", "/api/v1/calls/summary"): "live:view",
    ("GET", "/api/v1/calls/live"): "live:view",
    ("GET", "/api/v1/agents"): "live:view",
    ("GET", "/api/v1/queues"): "live:view",
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): "self",
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): "self",
    ("GET", "/api/v1/me"): "self",
    ("PATCH", "/api/v1/me"): "self",
    ("POST", "/api/v1/me/password"): "self",
    ("GET", "/api/v1/me/tokens"): "self",
    ("POST", "/api/v1/me/tokens"): "self",
    ("DELETE", "/api/v1/me/tokens/{token_id}"): "self",
    ("GET", "/api/v1/users"): "users:read",
    ("POST", "/api/v1/users"): "users:admin",
    ("GET", "/api/v1/users/{user_id}"): "users:read",
    ("PATCH", "/api/v1/users/{user_id}"): "users:admin",
    ("POST", "/api/v1/users/{user_id}/password"): "users:admin",
    ("GET", "/api/v1/users/{user_id}/tokens"): "users:admin",
    ("DELETE", "/api/v1/users/{user_id}/tokens/{token_id}"): "users:admin",
    ("GET", "/api/v1/audit"): "audit:read",
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/api/docs"): PUBLIC,
}

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")


def concrete(path: str) -> str:
    # a well-formed id that matches nothing: the role check runs before any lookup
    return _PARAM.sub("999999", path)


def role_denied(status: int, body: Any) -> bool:
    """The wrapper's refusal: 401, or 403 `forbidden` naming the role/scope (a handler's own
    business refusal would not start with that)."""
    if status == 401:
        return True
    if status != 403 or not isinstance(body, dict):
        return False
    err = body.get("error", {})
    message = str(err.get("message", ""))
    return err.get("code") == "forbidden" and (message.startswith("role ") or "token" in message)


def undocumented_5xx(spec: RouteSpec, status: int) -> bool:
    # e.g. /healthz answers 503 while the (absent) PBX is down: documented, not a crash
    return status >= 500 and status not in spec.errors and status not in spec.extra_responses


async def call(
    client: Client, spec: RouteSpec, headers: dict[str, str]
) -> tuple[int, Any, str | None]:
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
    if spec.method in ("POST", "PUT", "PATCH", "DELETE"):
        kwargs["json"] = {}
    resp = await client.request(spec.method, concrete(spec.path), **kwargs)
    body: Any = None
    if resp.content_type == "application/json":
        body = await resp.json()
    else:
        await resp.read()
    return resp.status, body, resp.headers.get("Location")


async def test_every_route_x_every_role(
    sqlite_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client: Client = await aiohttp_client(make_app(sqlite_url, tmp_path))
    app: web.Application = client.app
    users = await add_role_users(app)
    role_sets = {frozenset(v) for v in POLICY.values()}

    routes: list[RouteSpec] = []
    undeclared: list[str] = []
    for route, spec in iter_specs(app):
        if isinstance(route.resource, web.StaticResource):
            continue  # /static/...: public files by design
        if spec is None:
            undeclared.append(
                f"{route.method} {route.resource.canonical if route.resource else '?'}"
            )
            continue
        routes.append(spec)
    assert not undeclared, f"routes without declared roles: {undeclared}"
    declared = {(s.method, s.path) for s in routes}
    missing = set(EXPECTED) - declared
    assert not missing, f"expected routes not in the app: {sorted(missing)}"

    failures: list[str] = []
    for spec in routes:
        key = (spec.method, spec.path)
        if key in EXPECTED:
            permission = EXPECTED[key]
            want = None if permission is None else POLICY[permission]
            if (spec.roles is None) != (want is None) or (want is not None and spec.roles != want):
                failures.append(f"{key}: declares {spec.roles}, policy says {permission}")
        elif spec.roles is not None and spec.roles not in role_sets:
            failures.append(f"{key}: roles {sorted(spec.roles)} match no POLICY entry")

        # anonymous
        status, body, location = await call(client, spec, {})
        if spec.roles is None:
            if role_denied(status, body) or undocumented_5xx(spec, status):
                failures.append(f"{key} anonymous: public route answered {status}")
        elif spec.page and spec.method == "GET":
            if status != 303 or not (location or "").startswith("/login?next="):
                failures.append(f"{key} anonymous: page should redirect to /login, got {status}")
        elif status != 401:
            failures.append(f"{key} anonymous: expected 401, got {status}")

        # every role, each with a fresh session (and its CSRF token)
        for role in ROLES:
            session = await app[WEB_SESSIONS].create(users[role].id, ip=None, user_agent="matrix")
            headers = {
                "Cookie": f"cc_session={session.cookie}",
                "X-CSRF-Token": session.csrf_token,
            }
            status, body, _ = await call(client, spec, headers)
            allowed = spec.roles is None or role in spec.roles
            if undocumented_5xx(spec, status):
                failures.append(f"{key} as {role}: server error {status} {body}")
            elif allowed and role_denied(status, body):
                failures.append(f"{key} as {role}: refused ({status}) but the policy allows it")
            elif not allowed and not (status == 403 and role_denied(status, body)):
                failures.append(f"{key} as {role}: got {status}, the policy forbids it")

        # CSRF: an allowed role's cookie session without the token is refused on unsafe methods
        if spec.roles is not None and spec.method in ("POST", "PUT", "PATCH", "DELETE"):
            csrf_role = sorted(spec.roles)[0]
            session = await app[WEB_SESSIONS].create(
                users[csrf_role].id, ip=None, user_agent="matrix"
            )
            status, body, _ = await call(client, spec, {"Cookie": f"cc_session={session.cookie}"})
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if status != 403 or code != "csrf_failed":
                failures.append(f"{key} as {csrf_role} without CSRF token: got {status} {code}")

        # API tokens of the admin: with every scope, and with none that fits
        if spec.roles is not None and "admin" in spec.roles:
            _, all_scopes = await app[API_TOKENS].create(
                users["admin"].id, name="all", scopes=SCOPES
            )
            status, body, _ = await call(client, spec, {"Authorization": f"Bearer {all_scopes}"})
            if spec.scope is None:
                if not role_denied(status, body):
                    failures.append(f"{key} via token: session-only route answered {status}")
            elif role_denied(status, body):
                failures.append(f"{key} via token with scope {spec.scope}: refused ({status})")
            if spec.scope not in (None, ANY_SCOPE):
                other = [s for s in SCOPES if s != spec.scope]
                _, narrow = await app[API_TOKENS].create(
                    users["admin"].id, name="narrow", scopes=other
                )
                status, body, _ = await call(client, spec, {"Authorization": f"Bearer {narrow}"})
                if not role_denied(status, body):
                    failures.append(f"{key} via token without {spec.scope}: got {status}")

    assert not failures, "\n".join(failures)
