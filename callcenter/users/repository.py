"""Storage of users, browser sessions, API tokens and the audit log.

Secrets are stored hashed: passwords with argon2id, session cookies and API tokens as sha256 hex
(they are long random strings, so a fast hash is enough and makes lookup by hash possible).
Argon2 runs in a worker thread so a sign-in does not stall the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.db.engine import LIKE_ESCAPE, contains_pattern
from callcenter.db.models import Base, check_lengths
from callcenter.users.model import (
    GROUPS,
    LANGUAGES,
    SKILLS,
    ApiToken,
    AuditEntry,
    Language,
    Principal,
    User,
)
from callcenter.users.service import (
    INTERFACE_RE,
    Passwords,
    check_role,
    check_scopes,
    new_api_token,
    new_csrf_token,
    new_session_token,
    normalise_username,
    sha256_hex,
)

__all__ = [
    "AuditRepository",
    "DuplicateUserError",
    "NewSession",
    "SessionRepository",
    "TokenNotFoundError",
    "TokenRepository",
    "UserNotFoundError",
    "UserRepository",
    "utc_now",
]

Clock = Callable[[], datetime]
# how often last_seen_at / last_used_at are written at most (sliding expiry needs no more)
TOUCH_EVERY = timedelta(seconds=60)
MAX_DISPLAY_NAME = 128
MAX_DETAILS_CHARS = 4000


async def _cursor(session: AsyncSession, statement: Any) -> CursorResult[Any]:
    """execute() of an INSERT/UPDATE/DELETE: a CursorResult (rowcount, inserted key)."""
    return cast(CursorResult[Any], await session.execute(statement))


def utc_now() -> datetime:
    return datetime.now(UTC)


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


class UserNotFoundError(LookupError):
    pass


class DuplicateUserError(ValueError):
    """The username or the agent interface is taken."""


class TokenNotFoundError(LookupError):
    pass


def _user(row: Mapping[Any, Any]) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        role=check_role(row["role"]),
        group=row["group"],
        skills=tuple(row["skills"] or ()),
        agent_interface=row["agent_interface"],
        language=_language(row["language"]),
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _language(value: str | None) -> Language:
    for known in LANGUAGES:
        if value == known:
            return known
    return "zh-CN"


def _check_profile(
    *,
    display_name: str | None = None,
    group: str | None = None,
    skills: Collection[str] | None = None,
    agent_interface: str | None = None,
    language: str | None = None,
) -> None:
    if display_name is not None and not (0 < len(display_name.strip()) <= MAX_DISPLAY_NAME):
        raise ValueError(f"display name: 1 to {MAX_DISPLAY_NAME} characters")
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; one of {', '.join(GROUPS)}")
    if skills is not None:
        unknown = sorted(set(skills) - set(SKILLS))
        if unknown:
            raise ValueError(f"unknown skill(s) {', '.join(unknown)}; known: {', '.join(SKILLS)}")
    if agent_interface is not None and not INTERFACE_RE.match(agent_interface):
        raise ValueError("agent interface looks like TECH/resource, e.g. PJSIP/1001")
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"language: one of {', '.join(LANGUAGES)}")


class UserRepository:
    """Users and their passwords."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        passwords: Passwords | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = session_factory
        self._passwords = passwords or Passwords()
        self._clock = clock

    async def create(
        self,
        *,
        username: str,
        password: str,
        role: str,
        display_name: str | None = None,
        group: str | None = None,
        skills: Collection[str] = (),
        agent_interface: str | None = None,
        language: str = "zh-CN",
        disabled: bool = False,
    ) -> User:
        """A new user. ValueError for bad fields, DuplicateUserError when the username or the
        agent interface is taken."""
        name = normalise_username(username)
        role = check_role(role)
        display = (display_name or name).strip()
        _check_profile(
            display_name=display,
            group=group,
            skills=skills,
            agent_interface=agent_interface,
            language=language,
        )
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        now = self._clock()
        values: dict[str, Any] = {
            "username": name,
            "display_name": display,
            "password_hash": password_hash,
            "role": role,
            "group": group,
            "skills": sorted(set(skills)),
            "agent_interface": agent_interface,
            "language": language,
            "disabled": disabled,
            "created_at": now,
            "updated_at": now,
        }
        users = _table("users")
        check_lengths(users, values)
        async with self._sessions() as session:
            if await self._taken(session, name, agent_interface, None):
                raise DuplicateUserError(self._taken_message(name, agent_interface))
            try:
                result = await _cursor(session, users.insert().values(values))
                await session.commit()
            except IntegrityError:
                raise DuplicateUserError(self._taken_message(name, agent_interface)) from None
            pk = result.inserted_primary_key
            user_id = int(pk[0]) if pk else 0
        user = await self.get(user_id)
        if user is None:  # pragma: no cover - just inserted
            raise UserNotFoundError(str(user_id))
        return user

    @staticmethod
    def _taken_message(username: str, interface: str | None) -> str:
        return (
            f"username {username!r}"
            + (f" or agent interface {interface!r}" if interface else "")
            + " is already taken"
        )

    @staticmethod
    async def _taken(
        session: AsyncSession, username: str | None, interface: str | None, exclude_id: int | None
    ) -> bool:
        users = _table("users")
        conds = []
        if username is not None:
            conds.append(users.c.username == username)
        if interface is not None:
            conds.append(users.c.agent_interface == interface)
        if not conds:
            return False
        query = select(func.count()).select_from(users).where(or_(*conds))
        if exclude_id is not None:
            query = query.where(users.c.id != exclude_id)
        return bool((await session.execute(query)).scalar_one())

    async def get(self, user_id: int) -> User | None:
        users = _table("users")
        async with self._sessions() as session:
            row = (await session.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row._mapping) if row else None

    async def get_by_username(self, username: str) -> User | None:
        users = _table("users")
        name = username.strip().lower()
        async with self._sessions() as session:
            row = (await session.execute(select(users).where(users.c.username == name))).first()
        return _user(row._mapping) if row else None

    async def list(
        self,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        search: str | None = None,
        group: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[User], int]:
        users = _table("users")
        conds = []
        if role is not None:
            conds.append(users.c.role == role)
        if disabled is not None:
            conds.append(users.c.disabled == disabled)
        if group is not None:
            conds.append(users.c.group == group)
        if search:
            pattern = contains_pattern(search.lower())
            conds.append(
                or_(
                    users.c.username.like(pattern, escape=LIKE_ESCAPE),
                    func.lower(users.c.display_name).like(pattern, escape=LIKE_ESCAPE),
                )
            )
        async with self._sessions() as session:
            total = (
                await session.execute(select(func.count()).select_from(users).where(*conds))
            ).scalar_one()
            rows = (
                await session.execute(
                    select(users).where(*conds).order_by(users.c.id).limit(limit).offset(offset)
                )
            ).all()
        return [_user(r._mapping) for r in rows], int(total)

    async def update(self, user_id: int, **changes: Any) -> User:
        """Change profile fields: display_name, role, group, skills, agent_interface,
        language, disabled. Disabling a user ends their sessions."""
        allowed = {
            "display_name",
            "role",
            "group",
            "skills",
            "agent_interface",
            "language",
            "disabled",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        values = dict(changes)
        if "role" in values:
            values["role"] = check_role(values["role"])
        if "skills" in values:
            values["skills"] = sorted(set(values["skills"] or ()))
        _check_profile(
            display_name=values.get("display_name"),
            group=values.get("group"),
            skills=values.get("skills"),
            agent_interface=values.get("agent_interface"),
            language=values.get("language"),
        )
        users = _table("users")
        check_lengths(users, values)
        values["updated_at"] = self._clock()
        async with self._sessions() as session:
            if values.get("agent_interface") and await self._taken(
                session, None, values["agent_interface"], user_id
            ):
                raise DuplicateUserError(
                    f"agent interface {values['agent_interface']!r} is already taken"
                )
            try:
                result = await _cursor(
                    session, update(users).where(users.c.id == user_id).values(values)
                )
            except IntegrityError:
                raise DuplicateUserError("agent interface is already taken") from None
            if result.rowcount == 0:
                raise UserNotFoundError(f"no user with id {user_id}")
            if values.get("disabled"):
                await _end_sessions(session, user_id)
            await session.commit()
        user = await self.get(user_id)
        if user is None:  # pragma: no cover - just updated
            raise UserNotFoundError(f"no user with id {user_id}")
        return user

    async def set_password(
        self, user_id: int, password: str, *, keep_session: str | None = None
    ) -> None:
        """Replace the password; every session of the user except `keep_session` ends."""
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        users = _table("users")
        async with self._sessions() as session:
            result = await _cursor(
                session,
                update(users)
                .where(users.c.id == user_id)
                .values(password_hash=password_hash, updated_at=self._clock()),
            )
            if result.rowcount == 0:
                raise UserNotFoundError(f"no user with id {user_id}")
            await _end_sessions(session, user_id, keep=keep_session)
            await session.commit()

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user when the password matches and the user is enabled, else None. Upgrades
        the stored hash when the hashing parameters changed."""
        users = _table("users")
        name = username.strip().lower()
        async with self._sessions() as session:
            row = (await session.execute(select(users).where(users.c.username == name))).first()
        if row is None:
            await asyncio.to_thread(self._passwords.dummy_verify, password)
            return None
        stored = row._mapping["password_hash"]
        ok, rehash = await asyncio.to_thread(self._passwords.verify, stored, password)
        if not ok or row._mapping["disabled"]:
            return None
        if rehash:
            new_hash = await asyncio.to_thread(self._passwords.hash, password)
            async with self._sessions() as session:
                await session.execute(
                    update(users)
                    .where(users.c.id == row._mapping["id"], users.c.password_hash == stored)
                    .values(password_hash=new_hash)
                )
                await session.commit()
        return _user(row._mapping)

    async def password_hash(self, user_id: int) -> str | None:
        users = _table("users")
        async with self._sessions() as session:
            value = (
                await session.execute(select(users.c.password_hash).where(users.c.id == user_id))
            ).scalar_one_or_none()
        return None if value is None else str(value)

    async def check_password(self, user_id: int, password: str) -> bool:
        stored = await self.password_hash(user_id)
        if stored is None:
            return False
        ok, _ = await asyncio.to_thread(self._passwords.verify, stored, password)
        return ok


async def _end_sessions(session: AsyncSession, user_id: int, keep: str | None = None) -> None:
    web_sessions = _table("web_sessions")
    query = web_sessions.delete().where(web_sessions.c.user_id == user_id)
    if keep is not None:
        query = query.where(web_sessions.c.id != keep)
    await session.execute(query)


def _principal(user: Mapping[Any, Any], **extra: Any) -> Principal:
    return Principal(
        user_id=user["id"],
        username=user["username"],
        display_name=user["display_name"],
        role=check_role(user["role"]),
        group=user["group"],
        agent_interface=user["agent_interface"],
        language=_language(user["language"]),
        **extra,
    )


@dataclass(frozen=True, slots=True)
class NewSession:
    """A created session: `cookie` goes to the browser (only its sha256 is stored)."""

    cookie: str
    session_id: str
    csrf_token: str
    expires_at: datetime


class SessionRepository:
    """Browser sessions: an absolute lifetime plus a sliding idle timeout."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        max_age: timedelta = timedelta(hours=12),
        idle_timeout: timedelta = timedelta(hours=2),
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = session_factory
        self._max_age = max_age
        self._idle = idle_timeout
        self._clock = clock

    async def create(self, user_id: int, *, ip: str | None, user_agent: str | None) -> NewSession:
        secret = new_session_token()
        csrf = new_csrf_token()
        now = self._clock()
        expires = now + self._max_age
        web_sessions = _table("web_sessions")
        async with self._sessions() as session:
            await session.execute(
                web_sessions.insert().values(
                    id=secret.digest,
                    user_id=user_id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=expires,
                    last_seen_at=now,
                    ip=(ip or "")[:64] or None,
                    user_agent=(user_agent or "")[:255] or None,
                )
            )
            await session.commit()
        return NewSession(secret.plaintext, secret.digest, csrf, expires)

    async def resolve(self, cookie: str) -> Principal | None:
        """The principal of a live session cookie; None when unknown, expired, idle too
        long or the user is disabled. Slides the idle timeout."""
        if not cookie or len(cookie) > 128:
            return None
        session_id = sha256_hex(cookie)
        web_sessions = _table("web_sessions")
        users = _table("users")
        now = self._clock()
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        web_sessions.c.csrf_token,
                        web_sessions.c.expires_at,
                        web_sessions.c.last_seen_at,
                        users,
                    )
                    .join(users, users.c.id == web_sessions.c.user_id)
                    .where(web_sessions.c.id == session_id)
                )
            ).first()
            if row is None:
                return None
            data = row._mapping
            if (
                data["disabled"]
                or data["expires_at"] <= now
                or data["last_seen_at"] + self._idle <= now
            ):
                await session.execute(web_sessions.delete().where(web_sessions.c.id == session_id))
                await session.commit()
                return None
            if now - data["last_seen_at"] >= TOUCH_EVERY:
                await session.execute(
                    update(web_sessions)
                    .where(web_sessions.c.id == session_id)
                    .values(last_seen_at=now)
                )
                await session.commit()
        return _principal(data, session_id=session_id, csrf_token=data["csrf_token"])

    async def delete(self, session_id: str) -> None:
        web_sessions = _table("web_sessions")
        async with self._sessions() as session:
            await session.execute(web_sessions.delete().where(web_sessions.c.id == session_id))
            await session.commit()

    async def purge_expired(self) -> int:
        """Delete sessions past their lifetime or idle timeout; returns how many."""
        now = self._clock()
        web_sessions = _table("web_sessions")
        async with self._sessions() as session:
            result = await _cursor(
                session,
                web_sessions.delete().where(
                    or_(
                        web_sessions.c.expires_at <= now,
                        web_sessions.c.last_seen_at <= now - self._idle,
                    )
                ),
            )
            await session.commit()
        return int(result.rowcount or 0)

    async def count_for_user(self, user_id: int) -> int:
        web_sessions = _table("web_sessions")
        async with self._sessions() as session:
            value = (
                await session.execute(
                    select(func.count())
                    .select_from(web_sessions)
                    .where(web_sessions.c.user_id == user_id)
                )
            ).scalar_one()
        return int(value)


def _token(row: Mapping[Any, Any]) -> ApiToken:
    return ApiToken(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"] or ()),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class TokenRepository:
    """API tokens: `cc_` + 43 random characters, shown once, stored as sha256."""

    def __init__(
        self, *, session_factory: async_sessionmaker[AsyncSession], clock: Clock = utc_now
    ) -> None:
        self._sessions = session_factory
        self._clock = clock

    async def create(
        self,
        user_id: int,
        *,
        name: str,
        scopes: Collection[str],
        expires_at: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token for `user_id`; returns it and its plaintext (never stored)."""
        name = name.strip()
        if not 0 < len(name) <= 80:
            raise ValueError("token name: 1 to 80 characters")
        checked = check_scopes(scopes)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires_at must be in the future")
        secret = new_api_token()
        tokens = _table("api_tokens")
        users = _table("users")
        async with self._sessions() as session:
            exists = (
                await session.execute(select(users.c.id).where(users.c.id == user_id))
            ).first()
            if exists is None:
                raise UserNotFoundError(f"no user with id {user_id}")
            result = await _cursor(
                session,
                tokens.insert().values(
                    user_id=user_id,
                    name=name,
                    prefix=secret.prefix,
                    token_hash=secret.digest,
                    scopes=list(checked),
                    created_at=now,
                    expires_at=expires_at,
                ),
            )
            await session.commit()
            pk = result.inserted_primary_key
        token = await self.get(int(pk[0]) if pk else 0)
        if token is None:  # pragma: no cover - just inserted
            raise TokenNotFoundError("token vanished")
        return token, secret.plaintext

    def now(self) -> datetime:
        return self._clock()

    async def get(self, token_id: int) -> ApiToken | None:
        tokens = _table("api_tokens")
        async with self._sessions() as session:
            row = (await session.execute(select(tokens).where(tokens.c.id == token_id))).first()
        return _token(row._mapping) if row else None

    async def list(self, *, user_id: int | None = None) -> list[ApiToken]:
        tokens = _table("api_tokens")
        query = select(tokens).order_by(tokens.c.id)
        if user_id is not None:
            query = query.where(tokens.c.user_id == user_id)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [_token(r._mapping) for r in rows]

    async def revoke(self, token_id: int, *, user_id: int | None = None) -> ApiToken:
        """Revoke (idempotent). With `user_id`, only that user's token (TokenNotFoundError
        otherwise)."""
        tokens = _table("api_tokens")
        query = update(tokens).where(tokens.c.id == token_id)
        if user_id is not None:
            query = query.where(tokens.c.user_id == user_id)
        async with self._sessions() as session:
            result = await _cursor(
                session, query.where(tokens.c.revoked_at.is_(None)).values(revoked_at=self._clock())
            )
            await session.commit()
        token = await self.get(token_id)
        if token is None or (user_id is not None and token.user_id != user_id):
            raise TokenNotFoundError(f"no token with id {token_id}")
        del result
        return token

    async def resolve(self, plaintext: str) -> Principal | None:
        """The principal of a valid token (known, not revoked, not expired, owner enabled)."""
        if not plaintext or len(plaintext) > 128:
            return None
        tokens = _table("api_tokens")
        users = _table("users")
        now = self._clock()
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        tokens.c.id.label("token_id"),
                        tokens.c.scopes,
                        tokens.c.expires_at,
                        tokens.c.revoked_at,
                        tokens.c.last_used_at,
                        users,
                    )
                    .join(users, users.c.id == tokens.c.user_id)
                    .where(tokens.c.token_hash == sha256_hex(plaintext))
                )
            ).first()
            if row is None:
                return None
            data = row._mapping
            if (
                data["disabled"]
                or data["revoked_at"] is not None
                or (data["expires_at"] is not None and data["expires_at"] <= now)
            ):
                return None
            last = data["last_used_at"]
            if last is None or now - last >= TOUCH_EVERY:
                await session.execute(
                    update(tokens).where(tokens.c.id == data["token_id"]).values(last_used_at=now)
                )
                await session.commit()
        return _principal(data, token_id=data["token_id"], scopes=frozenset(data["scopes"] or ()))


def _audit(row: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        actor_user_id=row["actor_user_id"],
        actor_token_id=row["actor_token_id"],
        action=row["action"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        details=dict(row["details"] or {}),
        ip=row["ip"],
    )


class AuditRepository:
    """Who viewed or changed what. `record` never raises for a bad `details` value: it is
    stored as text; the audit trail must not break the action it records."""

    def __init__(
        self, *, session_factory: async_sessionmaker[AsyncSession], clock: Clock = utc_now
    ) -> None:
        self._sessions = session_factory
        self._clock = clock

    async def record(
        self,
        principal: Principal | None,
        action: str,
        entity_type: str,
        entity_id: str | int | None = None,
        details: Mapping[str, Any] | None = None,
        *,
        ip: str | None = None,
        actor_user_id: int | None = None,
    ) -> None:
        audit = _table("audit_log")
        values = {
            "at": self._clock(),
            "actor_user_id": principal.user_id if principal else actor_user_id,
            "actor_token_id": principal.token_id if principal else None,
            "action": action[:32],
            "entity_type": entity_type[:32],
            "entity_id": None if entity_id is None else str(entity_id)[:64],
            "details": _plain(details or {}),
            "ip": (ip or "")[:64] or None,
        }
        async with self._sessions() as session:
            await session.execute(audit.insert().values(values))
            await session.commit()

    async def list(
        self,
        *,
        actor_user_id: int | None = None,
        action: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[AuditEntry], int]:
        """Newest first."""
        audit = _table("audit_log")
        conds = []
        if actor_user_id is not None:
            conds.append(audit.c.actor_user_id == actor_user_id)
        if action is not None:
            conds.append(audit.c.action == action)
        if entity_type is not None:
            conds.append(audit.c.entity_type == entity_type)
        if entity_id is not None:
            conds.append(audit.c.entity_id == entity_id)
        if since is not None:
            conds.append(audit.c.at >= since)
        if until is not None:
            conds.append(audit.c.at < until)
        async with self._sessions() as session:
            total = (
                await session.execute(select(func.count()).select_from(audit).where(*conds))
            ).scalar_one()
            rows = (
                await session.execute(
                    select(audit)
                    .where(*conds)
                    .order_by(audit.c.at.desc(), audit.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return [_audit(r._mapping) for r in rows], int(total)


def _plain(details: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe details, bounded in size."""
    out: dict[str, Any] = {}
    size = 0
    for key, value in details.items():
        if isinstance(value, str | int | float | bool) or value is None:
            plain: Any = value
        elif isinstance(value, Sequence) and not isinstance(value, bytes):
            plain = [v if isinstance(v, str | int | float | bool) else str(v) for v in value]
        elif isinstance(value, Mapping):
            plain = _plain(value)
        else:
            plain = str(value)
        size += len(str(key)) + len(str(plain))
        if size > MAX_DETAILS_CHARS:
            out["truncated"] = True
            break
        out[str(key)] = plain
    return out
