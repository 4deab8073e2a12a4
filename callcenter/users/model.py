"""Users, roles, the one role policy table, and the signed-in principal.

`POLICY` is the single answer to "which role may do what": every route declares its roles from
it (`roles=POLICY["customers:read"]`), the role-matrix test checks the running app against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

Role = Literal["agent", "specialist", "qa", "supervisor", "admin"]
Language = Literal["zh-CN", "en"]

ROLES: Final[tuple[Role, ...]] = ("agent", "specialist", "qa", "supervisor", "admin")
LANGUAGES: Final[tuple[Language, ...]] = ("zh-CN", "en")
GROUPS: Final[tuple[str, ...]] = ("bookings", "complaints", "general", "technical")
SKILLS: Final[tuple[str, ...]] = ("technical", "product", "all-round")

# API token scopes: "<resource>:<read|write>" plus "users:admin". A token acts for its owner,
# limited to the owner's role AND its scopes.
SCOPES: Final[tuple[str, ...]] = (
    "calls:read",
    "customers:read",
    "customers:write",
    "tickets:read",
    "tickets:write",
    "users:admin",
    "audit:read",
)

_ALL: frozenset[Role] = frozenset(ROLES)
_FRONT: frozenset[Role] = frozenset({"agent", "specialist"})
_MANAGE: frozenset[Role] = frozenset({"supervisor", "admin"})

# permission -> roles allowed. One table; routes take their `roles` from here.
POLICY: Final[Mapping[str, frozenset[Role]]] = {
    # live wall board (/, /ws live events), call log, agents and queues
    "live:view": frozenset({"qa", "supervisor", "admin"}),
    "calls:read": _ALL,
    # the agent console and its own screen-pops, state changes, dispositions
    "console:use": _FRONT | _MANAGE,
    # customer archive
    "customers:read": _ALL,
    "customers:write": _FRONT | _MANAGE,
    # bookings and complaints ("tickets")
    "tickets:read": _ALL,
    "tickets:write": _FRONT | _MANAGE,
    "tickets:supervise": _MANAGE,
    # users and API tokens of others, audit log
    "users:admin": frozenset({"admin"}),
    "users:read": _MANAGE,
    "audit:read": _MANAGE,
    # own profile, own password, own API tokens
    "self": _ALL,
}

# Roles that see full phone numbers; the others see them masked (privacy duty, domain.md).
FULL_NUMBER_ROLES: Final[frozenset[Role]] = _FRONT | _MANAGE


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making this request: a signed-in user (session cookie) or an API token's owner.

    `token_id` is None for a browser session; for a token, `scopes` limits what it may do on
    top of the owner's role.
    """

    user_id: int
    username: str
    display_name: str
    role: Role
    group: str | None = None
    agent_interface: str | None = None
    language: Language = "zh-CN"
    token_id: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    session_id: str | None = None
    csrf_token: str | None = None

    @property
    def via_token(self) -> bool:
        return self.token_id is not None


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    group: str | None
    skills: tuple[str, ...]
    agent_interface: str | None
    language: Language
    disabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor_user_id: int | None
    actor_token_id: int | None
    action: str
    entity_type: str
    entity_id: str | None
    details: Mapping[str, object]
    ip: str | None
