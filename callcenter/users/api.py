"""HTTP handlers: sign-in/out (JSON and the HTML form), /api/v1/me, users, API tokens, audit.

Three routers: `router` (JSON API, in the OpenAPI document), `audit_router`, and `pages`
(the HTML sign-in page, kept out of the document).
"""

from __future__ import annotations

import html
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from callcenter.tickets.model import InputModel
from callcenter.users.model import (
    GROUPS,
    POLICY,
    SCOPES,
    SKILLS,
    ApiToken,
    AuditEntry,
    Language,
    Principal,
    Role,
    User,
)
from callcenter.users.repository import (
    DuplicateUserError,
    NewSession,
    TokenNotFoundError,
    UserNotFoundError,
)
from callcenter.users.service import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    negotiate_language,
    safe_next,
)
from callcenter.web.api import (
    ANY_SCOPE,
    ApiRouter,
    Page,
    PageQuery,
    json_response,
    parse_body,
    parse_path,
    parse_query,
    require_principal,
)
from callcenter.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    audit,
    clear_session_cookie,
    client_ip,
    cookie_secure,
    reserve_login_attempt,
    set_session_cookie,
)
from callcenter.web.errors import (
    Conflict,
    InvalidCredentials,
    NotFound,
    TooManyRequests,
    ValidationFailed,
)
from callcenter.web.keys import API_TOKENS, AUDIT, USERS, WEB_SESSIONS

LOGIN_HTML = Path(__file__).resolve().parent.parent / "web" / "templates" / "login.html"

Group = Literal["bookings", "complaints", "general", "technical"]
Skill = Literal["technical", "product", "all-round"]
Scope = Literal[
    "calls:read",
    "customers:read",
    "customers:write",
    "tickets:read",
    "tickets:write",
    "users:admin",
    "audit:read",
]
assert set(Group.__args__) == set(GROUPS) and set(Skill.__args__) == set(SKILLS)  # type: ignore[attr-defined]
assert set(Scope.__args__) == set(SCOPES)  # type: ignore[attr-defined]

# (the pattern is checked before lowercasing: it accepts capitals, stored lowercase)
Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$"
    ),
]
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Interface = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,60}$")]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------ schemas


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: Role
    group: str | None
    skills: list[str]
    agent_interface: str | None
    language: Language
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls.model_validate(user, from_attributes=True)


class MeOut(BaseModel):
    """The signed-in user. `csrf_token` (sessions only) goes in X-CSRF-Token on unsafe
    requests; `permissions` are the POLICY entries this role has."""

    id: int
    username: str
    display_name: str
    role: Role
    group: str | None
    agent_interface: str | None
    language: Language
    csrf_token: str | None
    via_token: bool
    scopes: list[str]
    permissions: list[str]

    @classmethod
    def of(cls, p: Principal) -> MeOut:
        return cls(
            id=p.user_id,
            username=p.username,
            display_name=p.display_name,
            role=p.role,
            group=p.group,
            agent_interface=p.agent_interface,
            language=p.language,
            csrf_token=p.csrf_token,
            via_token=p.via_token,
            scopes=sorted(p.scopes),
            permissions=sorted(k for k, roles in POLICY.items() if p.role in roles),
        )


class LoginIn(InputModel):
    """Text with a NUL is refused (422) like other invalid input: no user has one and
    PostgreSQL cannot compare text holding one. Passwords are taken as sent (not stripped)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD)]


class LoginOut(BaseModel):
    user: MeOut
    csrf_token: str
    expires_at: datetime
    landing: str = Field(description="Where the web UI goes next")


class UserCreate(_In):
    username: Username
    password: Password
    role: Role
    display_name: DisplayName | None = None
    group: Group | None = None
    skills: list[Skill] = Field(default_factory=list, max_length=len(SKILLS))
    agent_interface: Interface | None = None
    language: Language = "zh-CN"


class UserUpdate(_In):
    """Only the fields given change; `group`/`agent_interface` may be set to null."""

    display_name: DisplayName | None = None
    role: Role | None = None
    group: Group | None = None
    skills: list[Skill] | None = Field(None, max_length=len(SKILLS))
    agent_interface: Interface | None = None
    language: Language | None = None
    disabled: bool | None = None

    @model_validator(mode="after")
    def _not_null(self) -> UserUpdate:
        for name in ("display_name", "role", "skills", "language", "disabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class MeUpdate(_In):
    display_name: DisplayName | None = None
    language: Language | None = None


class PasswordSet(_In):
    password: Password


class PasswordChange(_In):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD)]
    new_password: Password


class TokenCreate(_In):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    scopes: list[Scope] = Field(min_length=1, max_length=len(SCOPES))
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenOut(BaseModel):
    id: int
    user_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, t: ApiToken) -> TokenOut:
        return cls.model_validate(t, from_attributes=True)


class TokenCreated(TokenOut):
    token: str = Field(description="The secret: shown this once, store it now")


class TokenList(BaseModel):
    items: list[TokenOut]


class UsersQuery(PageQuery):
    role: Role | None = None
    group: Group | None = None
    disabled: bool | None = None
    q: str | None = Field(None, min_length=1, max_length=64, description="username/name part")


class AuditQuery(PageQuery):
    actor_user_id: Id | None = None
    action: str | None = Field(None, min_length=1, max_length=32)
    entity_type: str | None = Field(None, min_length=1, max_length=32)
    entity_id: str | None = Field(None, min_length=1, max_length=64)
    since: datetime | None = None
    until: datetime | None = None

    @model_validator(mode="after")
    def _aware(self) -> AuditQuery:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} needs a time zone offset, e.g. +08:00 or Z")
        return self


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor_user_id: int | None
    actor_token_id: int | None
    action: str
    entity_type: str
    entity_id: str | None
    details: dict[str, Any]
    ip: str | None

    @classmethod
    def of(cls, e: AuditEntry) -> AuditOut:
        return cls.model_validate(e, from_attributes=True)


class UserPath(_In):
    user_id: Id


class TokenPath(_In):
    token_id: Id


class UserTokenPath(_In):
    user_id: Id
    token_id: Id


# ------------------------------------------------------------------------------ sign-in


async def sign_in(
    request: web.Request, username: str, password: str
) -> tuple[Principal, NewSession]:
    """Check the rate limit and the password; audit the outcome. Raises TooManyRequests or
    InvalidCredentials.

    The attempt is reserved with the limiter before the (threaded) password check, so a burst
    of concurrent attempts cannot all pass the limit before the first failure is counted."""
    attempt = reserve_login_attempt(request, username)
    app = request.app
    ip = client_ip(request)
    try:
        # no user has a NUL in the name and PostgreSQL cannot compare text holding one
        nul = "\x00" in username or "\x00" in password
        user = None if nul else await app[USERS].authenticate(username, password)
        if user is None:
            attempt.failed()
            name = username.replace("\x00", "").strip().lower()[:64]
            await app[AUDIT].record(None, "login_failed", "user", name, {}, ip=ip)
            raise InvalidCredentials("wrong username or password, or the account is disabled")
        attempt.succeeded()
    finally:
        attempt.release()  # an error before the outcome: nothing counted (no-op once settled)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        current = await app[WEB_SESSIONS].resolve(old)
        if current is not None and current.session_id:
            await app[WEB_SESSIONS].delete(current.session_id)
    await app[WEB_SESSIONS].purge_expired()  # sign-ins are rare: keep the table small here
    new = await app[WEB_SESSIONS].create(
        user.id, ip=ip, user_agent=request.headers.get("User-Agent")
    )
    principal = Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        group=user.group,
        agent_interface=user.agent_interface,
        language=user.language,
        session_id=new.session_id,
        csrf_token=new.csrf_token,
    )
    await app[AUDIT].record(principal, "login", "user", user.id, {}, ip=ip)
    return principal, new


async def sign_out(request: web.Request, principal: Principal) -> None:
    if principal.session_id:
        await request.app[WEB_SESSIONS].delete(principal.session_id)
    await request.app[AUDIT].record(
        principal, "logout", "user", principal.user_id, {}, ip=client_ip(request)
    )


# ------------------------------------------------------------------------------ JSON API

router = ApiRouter(tag="auth", scope=None)


@router.post(
    "/api/v1/auth/login",
    roles=None,
    body=LoginIn,
    response=LoginOut,
    errors={401, 429},
    summary="Sign in (sets the session cookie)",
)
async def login(request: web.Request) -> web.Response:
    """Starts a browser session: the `cc_session` cookie plus a CSRF token to send as
    X-CSRF-Token. 401 `invalid_credentials`; 429 `rate_limited` after repeated failures."""
    body = await parse_body(request, LoginIn)
    principal, new = await sign_in(request, body.username, body.password)
    resp = json_response(
        LoginOut(
            user=MeOut.of(principal),
            csrf_token=new.csrf_token,
            expires_at=new.expires_at,
            landing=safe_next(None, principal.role),
        )
    )
    set_session_cookie(resp, request, new)
    return resp


@router.post(
    "/api/v1/auth/logout",
    roles=POLICY["self"],
    status=204,
    summary="Sign out (ends this session)",
)
async def logout(request: web.Request) -> web.Response:
    await sign_out(request, require_principal(request))
    resp = web.Response(status=204)
    clear_session_cookie(resp, request)
    return resp


me_router = ApiRouter(tag="me", scope=None)


@me_router.get(
    "/api/v1/me", roles=POLICY["self"], response=MeOut, scope=ANY_SCOPE, summary="Who am I"
)
async def me(request: web.Request) -> web.Response:
    return json_response(MeOut.of(require_principal(request)))


@me_router.patch(
    "/api/v1/me", roles=POLICY["self"], body=MeUpdate, response=UserOut, summary="Update my profile"
)
async def update_me(request: web.Request) -> web.Response:
    principal = require_principal(request)
    body = await parse_body(request, MeUpdate)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    user = await request.app[USERS].update(principal.user_id, **changes)
    await audit(request, "update", "user", user.id, {"fields": sorted(changes)})
    return json_response(UserOut.of(user))


@me_router.post(
    "/api/v1/me/password",
    roles=POLICY["self"],
    body=PasswordChange,
    status=204,
    summary="Change my password (other sessions end)",
)
async def change_my_password(request: web.Request) -> web.Response:
    principal = require_principal(request)
    body = await parse_body(request, PasswordChange)
    users = request.app[USERS]
    if not await users.check_password(principal.user_id, body.current_password):
        raise ValidationFailed(
            "wrong password", fields={"current_password": "not your current password"}
        )
    await users.set_password(
        principal.user_id, body.new_password, keep_session=principal.session_id
    )
    await audit(request, "password", "user", principal.user_id)
    return web.Response(status=204)


@me_router.get(
    "/api/v1/me/tokens", roles=POLICY["self"], response=TokenList, summary="My API tokens"
)
async def my_tokens(request: web.Request) -> web.Response:
    principal = require_principal(request)
    tokens = await request.app[API_TOKENS].list(user_id=principal.user_id)
    return json_response(TokenList(items=[TokenOut.of(t) for t in tokens]))


@me_router.post(
    "/api/v1/me/tokens",
    roles=POLICY["self"],
    body=TokenCreate,
    response=TokenCreated,
    status=201,
    summary="Create an API token (the secret is shown once)",
)
async def create_my_token(request: web.Request) -> web.Response:
    principal = require_principal(request)
    body = await parse_body(request, TokenCreate)
    expires = (
        request.app[API_TOKENS].now() + timedelta(days=body.expires_in_days)
        if body.expires_in_days
        else None
    )
    token, secret = await request.app[API_TOKENS].create(
        principal.user_id, name=body.name, scopes=body.scopes, expires_at=expires
    )
    await audit(request, "create", "api_token", token.id, {"scopes": list(token.scopes)})
    return json_response(TokenCreated(**TokenOut.of(token).model_dump(), token=secret), status=201)


@me_router.delete(
    "/api/v1/me/tokens/{token_id}",
    roles=POLICY["self"],
    path_params=TokenPath,
    response=TokenOut,
    summary="Revoke one of my API tokens",
)
async def revoke_my_token(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, TokenPath)
    try:
        token = await request.app[API_TOKENS].revoke(path.token_id, user_id=principal.user_id)
    except TokenNotFoundError:
        raise NotFound(f"no token {path.token_id} of yours") from None
    await audit(request, "revoke", "api_token", token.id)
    return json_response(TokenOut.of(token))


users_router = ApiRouter(tag="users", scope=None)


@users_router.get(
    "/api/v1/users",
    roles=POLICY["users:read"],
    query=UsersQuery,
    response=Page[UserOut],
    scope="users:admin",
    summary="List users",
)
async def list_users(request: web.Request) -> web.Response:
    q = parse_query(request, UsersQuery)
    items, total = await request.app[USERS].list(
        role=q.role, group=q.group, disabled=q.disabled, search=q.q, limit=q.limit, offset=q.offset
    )
    return json_response(
        Page[UserOut](
            items=[UserOut.of(u) for u in items], total=total, limit=q.limit, offset=q.offset
        )
    )


@users_router.post(
    "/api/v1/users",
    roles=POLICY["users:admin"],
    body=UserCreate,
    response=UserOut,
    status=201,
    errors={409},
    scope="users:admin",
    summary="Create a user",
)
async def create_user(request: web.Request) -> web.Response:
    body = await parse_body(request, UserCreate)
    try:
        user = await request.app[USERS].create(**body.model_dump())
    except DuplicateUserError as exc:
        raise Conflict(str(exc)) from None
    except ValueError as exc:
        raise ValidationFailed("invalid user", fields={"__root__": str(exc)}) from None
    await audit(request, "create", "user", user.id, {"username": user.username, "role": user.role})
    return json_response(UserOut.of(user), status=201)


@users_router.get(
    "/api/v1/users/{user_id}",
    roles=POLICY["users:read"],
    path_params=UserPath,
    response=UserOut,
    scope="users:admin",
    summary="One user",
)
async def get_user(request: web.Request) -> web.Response:
    path = parse_path(request, UserPath)
    user = await request.app[USERS].get(path.user_id)
    if user is None:
        raise NotFound(f"no user {path.user_id}")
    return json_response(UserOut.of(user))


@users_router.patch(
    "/api/v1/users/{user_id}",
    roles=POLICY["users:admin"],
    path_params=UserPath,
    body=UserUpdate,
    response=UserOut,
    errors={409},
    scope="users:admin",
    summary="Change a user (role, group, skills, interface, language, disabled)",
)
async def update_user(request: web.Request) -> web.Response:
    """Disabling a user ends their sessions at once (their API tokens stop working too).
    An admin cannot disable themselves or take away their own admin role (409)."""
    principal = require_principal(request)
    path = parse_path(request, UserPath)
    body = await parse_body(request, UserUpdate)
    changes = body.model_dump(exclude_unset=True)
    if path.user_id == principal.user_id and (
        changes.get("disabled") or changes.get("role", "admin") != "admin"
    ):
        raise Conflict("you cannot disable yourself or drop your own admin role")
    try:
        user = await request.app[USERS].update(path.user_id, **changes)
    except UserNotFoundError:
        raise NotFound(f"no user {path.user_id}") from None
    except DuplicateUserError as exc:
        raise Conflict(str(exc)) from None
    except ValueError as exc:
        raise ValidationFailed("invalid change", fields={"__root__": str(exc)}) from None
    await audit(request, "update", "user", user.id, {"changes": _redacted(changes)})
    return json_response(UserOut.of(user))


@users_router.post(
    "/api/v1/users/{user_id}/password",
    roles=POLICY["users:admin"],
    path_params=UserPath,
    body=PasswordSet,
    status=204,
    scope="users:admin",
    summary="Set a user's password (their sessions end)",
)
async def set_user_password(request: web.Request) -> web.Response:
    path = parse_path(request, UserPath)
    body = await parse_body(request, PasswordSet)
    principal = require_principal(request)
    keep = principal.session_id if path.user_id == principal.user_id else None
    try:
        await request.app[USERS].set_password(path.user_id, body.password, keep_session=keep)
    except UserNotFoundError:
        raise NotFound(f"no user {path.user_id}") from None
    await audit(request, "password", "user", path.user_id)
    return web.Response(status=204)


@users_router.get(
    "/api/v1/users/{user_id}/tokens",
    roles=POLICY["users:admin"],
    path_params=UserPath,
    response=TokenList,
    scope="users:admin",
    summary="A user's API tokens",
)
async def user_tokens(request: web.Request) -> web.Response:
    path = parse_path(request, UserPath)
    if await request.app[USERS].get(path.user_id) is None:
        raise NotFound(f"no user {path.user_id}")
    tokens = await request.app[API_TOKENS].list(user_id=path.user_id)
    return json_response(TokenList(items=[TokenOut.of(t) for t in tokens]))


@users_router.delete(
    "/api/v1/users/{user_id}/tokens/{token_id}",
    roles=POLICY["users:admin"],
    path_params=UserTokenPath,
    response=TokenOut,
    scope="users:admin",
    summary="Revoke a user's API token",
)
async def revoke_user_token(request: web.Request) -> web.Response:
    path = parse_path(request, UserTokenPath)
    try:
        token = await request.app[API_TOKENS].revoke(path.token_id, user_id=path.user_id)
    except TokenNotFoundError:
        raise NotFound(f"no token {path.token_id} of user {path.user_id}") from None
    await audit(request, "revoke", "api_token", token.id, {"user_id": path.user_id})
    return json_response(TokenOut.of(token))


audit_router = ApiRouter(tag="audit")


@audit_router.get(
    "/api/v1/audit",
    roles=POLICY["audit:read"],
    query=AuditQuery,
    response=Page[AuditOut],
    summary="The audit log, newest first",
)
async def list_audit(request: web.Request) -> web.Response:
    """Who viewed or changed what. Filters: actor, action (view, create, update, delete,
    login, login_failed, logout, password, revoke, ...), entity type/id, period [since, until)."""
    q = parse_query(request, AuditQuery)
    items, total = await request.app[AUDIT].list(
        actor_user_id=q.actor_user_id,
        action=q.action,
        entity_type=q.entity_type,
        entity_id=q.entity_id,
        since=q.since,
        until=q.until,
        limit=q.limit,
        offset=q.offset,
    )
    return json_response(
        Page[AuditOut](
            items=[AuditOut.of(e) for e in items], total=total, limit=q.limit, offset=q.offset
        )
    )


def _redacted(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if "password" not in k}


# ------------------------------------------------------------------------------ HTML sign-in

pages = ApiRouter(tag="pages", scope=None, in_schema=False)

_TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "title": "热线坐席 · 登录",
        "username": "用户名",
        "password": "密码",
        "submit": "登录",
        "language": "语言",
        "invalid": "用户名或密码错误，或账号已停用。",
        "csrf": "页面已过期，请重新登录。",
        "rate": "登录失败次数过多，请 {minutes} 分钟后再试。",
    },
    "en": {
        "title": "Hotline · Sign in",
        "username": "Username",
        "password": "Password",
        "submit": "Sign in",
        "language": "Language",
        "invalid": "Wrong username or password, or the account is disabled.",
        "csrf": "The page expired; please sign in again.",
        "rate": "Too many failed sign-ins; try again in {minutes} minutes.",
    },
}


def _login_page(
    request: web.Request,
    *,
    lang: Language,
    next_path: str,
    username: str = "",
    error: str = "",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    text = _TEXT[lang]
    csrf = secrets.token_urlsafe(32)
    page = Template(LOGIN_HTML.read_text(encoding="utf-8")).substitute(
        lang=lang,
        title=html.escape(text["title"]),
        error=html.escape(error),
        error_hidden="" if error else "hidden",
        csrf_token=csrf,
        next=html.escape(next_path, quote=True),
        next_q=html.escape(quote(next_path, safe="/"), quote=True),
        username=html.escape(username, quote=True),
        username_focus="" if username else "autofocus",
        password_focus="autofocus" if username else "",
        username_label=html.escape(text["username"]),
        password_label=html.escape(text["password"]),
        submit=html.escape(text["submit"]),
        language_label=html.escape(text["language"]),
    )
    resp = web.Response(
        text=page,
        content_type="text/html",
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        path="/login",
        httponly=True,
        secure=cookie_secure(request),
        samesite="Strict",
        max_age=3600,
    )
    return resp


def _next_param(value: object) -> str:
    return value if isinstance(value, str) and safe_next(value, "admin") == value else ""


@pages.get(
    "/login", roles=None, summary="Sign-in page", response_content_type="text/html", page=True
)
async def login_page(request: web.Request) -> web.Response:
    lang = negotiate_language(request.query.get("lang"), request.headers.get("Accept-Language"))
    return _login_page(request, lang=lang, next_path=_next_param(request.query.get("next")))


@pages.post("/login", roles=None, summary="Sign-in form post", page=True)
async def login_form(request: web.Request) -> web.Response:
    form = await request.post()
    lang = negotiate_language(str(form.get("lang", "")), request.headers.get("Accept-Language"))
    next_path = _next_param(form.get("next"))
    username = form.get("username")
    password = form.get("password")
    username = username[:64] if isinstance(username, str) else ""
    password = password[:MAX_PASSWORD] if isinstance(password, str) else ""
    sent = form.get("csrf_token")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if (
        not isinstance(sent, str)
        or not expected
        or not secrets.compare_digest(sent.encode(), expected.encode())
    ):
        return _login_page(
            request,
            lang=lang,
            next_path=next_path,
            username=username,
            error=_TEXT[lang]["csrf"],
            status=403,
        )
    try:
        principal, new = await sign_in(request, username, password)
    except TooManyRequests as exc:
        minutes = max(1, (exc.retry_after + 59) // 60)
        return _login_page(
            request,
            lang=lang,
            next_path=next_path,
            username=username,
            error=_TEXT[lang]["rate"].format(minutes=minutes),
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except InvalidCredentials:
        return _login_page(
            request,
            lang=lang,
            next_path=next_path,
            username=username,
            error=_TEXT[lang]["invalid"],
            status=401,
        )
    resp = web.HTTPSeeOther(safe_next(next_path or None, principal.role))
    set_session_cookie(resp, request, new)
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise resp


@pages.post("/logout", roles=POLICY["self"], summary="Sign-out form post", page=True)
async def logout_form(request: web.Request) -> web.Response:
    await sign_out(request, require_principal(request))
    resp = web.HTTPSeeOther("/login")
    clear_session_cookie(resp, request)
    raise resp
