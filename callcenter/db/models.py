"""SQLAlchemy tables: the call log, IVR steps, callback requests, queues, agents, customers,
users/sessions/API tokens/audit log, bookings, complaints, case timeline, dispositions.

Every timestamp column is `UTCDateTime`: aware datetimes go in, aware UTC datetimes come out, on
SQLite (which has no time zones) and PostgreSQL (timestamptz) alike. Naive datetimes are refused.
The migrations in migrations/versions must produce exactly this schema (a test compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    FromClause,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from callcenter.timeutil import require_aware

__all__ = [
    "AGENT_GROUPS",
    "BOOKING_STATUSES",
    "CALLBACK_STATUSES",
    "CASE_TYPES",
    "COMPLAINT_SEVERITIES",
    "COMPLAINT_STATUSES",
    "CUSTOMER_TIERS",
    "FIRST_RESPONSE_PENDING",
    "RESOLUTION_PENDING",
    "USER_LANGUAGES",
    "USER_ROLES",
    "AgentRow",
    "ApiTokenRow",
    "AuditLogRow",
    "Base",
    "BookingRow",
    "CallRow",
    "CallbackRequestRow",
    "CaseEventRow",
    "ComplaintCallRow",
    "ComplaintRow",
    "CustomerNumberRow",
    "CustomerRow",
    "DispositionRow",
    "IvrStepRow",
    "QueueRow",
    "UTCDateTime",
    "UserRow",
    "WebSessionRow",
    "check_lengths",
    "utcnow",
]

AGENT_GROUPS = ("bookings", "complaints", "general", "technical", "operator")
CUSTOMER_TIERS = ("key", "normal")
CALLBACK_STATUSES = ("pending", "done", "cancelled")
USER_ROLES = ("agent", "specialist", "qa", "supervisor", "admin")
USER_LANGUAGES = ("zh-CN", "en")
BOOKING_STATUSES = ("new", "confirmed", "fulfilled", "cancelled")
COMPLAINT_SEVERITIES = ("low", "medium", "high", "critical")
COMPLAINT_STATUSES = ("open", "investigating", "escalated", "resolved", "closed")
CASE_TYPES = ("complaint", "booking", "customer")
# complaints whose deadline is still being watched (the breach checker's partial indexes)
FIRST_RESPONSE_PENDING = "first_response_breached_at IS NULL AND first_responded_at IS NULL"
RESOLUTION_PENDING = "resolution_breached_at IS NULL AND status NOT IN ('resolved', 'closed')"

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Asterisk's AST_MAX_UNIQUEID is 150 characters.
UNIQUEID_LEN = 150


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_lengths(table: FromClause, values: Mapping[str, Any]) -> None:
    """Refuse text longer than its column, with a clear ValueError (PostgreSQL would reject it
    with a driver error, SQLite would silently keep it)."""
    for column in table.columns:
        value = values.get(column.name)
        length = getattr(column.type, "length", None)
        if isinstance(value, str) and isinstance(length, int) and len(value) > length:
            raise ValueError(
                f"{column.table.name}.{column.name} is {len(value)} characters, at most {length}"
            )


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC; requires aware datetimes, returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = require_aware("a timestamp column", value).astimezone(UTC)
        # SQLite's DATETIME text has no zone: store the UTC wall-clock time.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CallRow(Base):
    """The call log: one row per call, keyed by the Uniqueid of its first channel."""

    __tablename__ = "calls"

    uniqueid: Mapped[str] = mapped_column(String(UNIQUEID_LEN), primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(UNIQUEID_LEN), index=True)
    channel: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    caller_number: Mapped[str] = mapped_column(String(80), default="")
    # normalise_number(caller_number): lets the log be searched by any way of writing a number
    caller_number_normalised: Mapped[str] = mapped_column(String(32), default="", index=True)
    caller_name: Mapped[str] = mapped_column(String(255), default="")
    dialed_number: Mapped[str] = mapped_column(String(80), default="")
    direction: Mapped[str] = mapped_column(String(16), default="inbound")
    ivr_path: Mapped[list[str]] = mapped_column(JSON, default=list)
    ivr_choice: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(80))
    queue_priority: Mapped[int | None] = mapped_column(Integer)
    queue_joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queue_left_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    agent: Mapped[str | None] = mapped_column(String(128))
    agent_interface: Mapped[str | None] = mapped_column(String(128))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    abandoned: Mapped[bool] = mapped_column(Boolean, default=False)
    abandon_stage: Mapped[str | None] = mapped_column(String(16))
    abandon_after_seconds: Mapped[float | None] = mapped_column(Float)
    transfers: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_cause_text: Mapped[str | None] = mapped_column(String(128))
    recording_file: Mapped[str | None] = mapped_column(String(512))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)  # every queue joined, in order
    agents: Mapped[list[str]] = mapped_column(JSON, default=list)  # every member who answered
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)  # first seen mid-call
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint(_in_list("direction", ("inbound", "outbound")), name="direction"),
        Index("ix_calls_queue_started_at", "queue", "started_at"),
        Index("ix_calls_agent_started_at", "agent", "started_at"),
        Index("ix_calls_agent_interface_started_at", "agent_interface", "started_at"),
        # the calls still open (few): what a resync's sweep of calls gone while we were away reads
        Index(
            "ix_calls_open_started_at",
            "started_at",
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
    )


class IvrStepRow(Base):
    """One step a caller took in the IVR; (call_uniqueid, seq) is unique."""

    __tablename__ = "ivr_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # no foreign key: steps are written while the call is live, the call row at its end
    call_uniqueid: Mapped[str] = mapped_column(String(UNIQUEID_LEN))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    node: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    input: Mapped[str | None] = mapped_column(String(128))
    result: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (UniqueConstraint("call_uniqueid", "seq", name="uq_ivr_steps_call_seq"),)


class CallbackRequestRow(Base):
    """A caller asked to be called back; one request per call."""

    __tablename__ = "callback_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_uniqueid: Mapped[str] = mapped_column(String(UNIQUEID_LEN), unique=True)
    number_raw: Mapped[str] = mapped_column(String(80))
    number: Mapped[str] = mapped_column(String(32), index=True)  # normalised
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    queue: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (CheckConstraint(_in_list("status", CALLBACK_STATUSES), name="status"),)


class QueueRow(Base):
    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    group: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(32), default="ringall")
    service_level_seconds: Mapped[int] = mapped_column(Integer, default=60)
    default_priority: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(String(255), default="")

    __table_args__ = (CheckConstraint(_in_list('"group"', AGENT_GROUPS), name="group"),)


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    interface: Mapped[str] = mapped_column(String(128), unique=True)  # e.g. PJSIP/1001
    group: Mapped[str] = mapped_column(String(32), index=True)
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (CheckConstraint(_in_list('"group"', AGENT_GROUPS), name="group"),)


class CustomerRow(Base):
    """The customer archive (客户档案)."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    company: Mapped[str | None] = mapped_column(String(255))
    tier: Mapped[str] = mapped_column(String(16), default="normal")
    credit_grade: Mapped[str | None] = mapped_column(String(8))
    notes: Mapped[str] = mapped_column(Text, default="")
    preferred_language: Mapped[str | None] = mapped_column(String(16))
    do_not_call: Mapped[bool] = mapped_column(Boolean, default=False)
    # an unknown caller's record, opened from a call, that an agent still has to complete
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    # key customers' named contact (an agent). No ON DELETE action: SQLite adds this column with
    # ALTER TABLE and does not report the action back, so the migration check could not match it.
    contact_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    numbers: Mapped[list[CustomerNumberRow]] = relationship(
        back_populates="customer",
        cascade="all, delete-orphan",
        order_by="CustomerNumberRow.id",
        lazy="selectin",
    )

    __table_args__ = (
        CheckConstraint(_in_list("tier", CUSTOMER_TIERS), name="tier"),
        # search by any part of a name or company (ILIKE '%...%'): a trigram GIN index on
        # PostgreSQL (pg_trgm); SQLite ignores the postgresql_* options and builds a b-tree
        Index(
            "ix_customers_name_company",
            "name",
            "company",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops", "company": "gin_trgm_ops"},
        ),
    )


class CustomerNumberRow(Base):
    __tablename__ = "customer_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    raw: Mapped[str] = mapped_column(String(80))
    normalised: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    customer: Mapped[CustomerRow] = relationship(back_populates="numbers")


class UserRow(Base):
    """People who sign in: agents, complaint specialists, QA, supervisors, admins."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lowercase
    display_name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), index=True)
    group: Mapped[str | None] = mapped_column(String(32), index=True)
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    agent_interface: Mapped[str | None] = mapped_column(String(128), unique=True)  # PJSIP/1001
    language: Mapped[str] = mapped_column(String(8), default="zh-CN")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint(_in_list("role", USER_ROLES), name="role"),
        CheckConstraint(_in_list('"group"', AGENT_GROUPS), name="group"),
        CheckConstraint(_in_list("language", USER_LANGUAGES), name="language"),
    )


class WebSessionRow(Base):
    """A signed-in browser; the id is the sha256 hex of the cookie token."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))


class ApiTokenRow(Base):
    """An integration's token: scoped, revocable, stored as its sha256 hex."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, shown in lists
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditLogRow(Base):
    """Who viewed or changed what. No foreign keys: the record outlives users and tokens."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor_token_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32), index=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id", "at"),)


class BookingRow(Base):
    """A booking/order taken by phone (预订, 电话订单; urgent = 紧急定单)."""

    __tablename__ = "bookings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    call_uniqueid: Mapped[str | None] = mapped_column(String(UNIQUEID_LEN), index=True)
    item: Mapped[str] = mapped_column(String(255))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime())
    for_whom: Mapped[str] = mapped_column(String(255), default="")
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="new")
    notes: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=0)  # optimistic concurrency
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it)

    __table_args__ = (
        CheckConstraint(_in_list("status", BOOKING_STATUSES), name="status"),
        # list pages: newest first, optionally by status / creator
        Index("ix_bookings_created_at_id", "created_at", "id"),
        Index("ix_bookings_status_created_at", "status", "created_at", "id"),
        Index("ix_bookings_created_by_created_at", "created_by", "created_at", "id"),
    )


class ComplaintRow(Base):
    """A complaint (投诉), owned by the first agent who takes it (首问负责制)."""

    __tablename__ = "complaints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16), default="medium")
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    first_response_due: Mapped[datetime] = mapped_column(UTCDateTime())
    resolution_due: Mapped[datetime] = mapped_column(UTCDateTime())
    first_responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    customer_informed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(64))
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    first_response_breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution_breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # bumped by every change: a writer that read an older version retries (SQLite has no
    # SELECT ... FOR UPDATE, so two agents could otherwise both "take" one complaint)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it)

    __table_args__ = (
        CheckConstraint(_in_list("severity", COMPLAINT_SEVERITIES), name="severity"),
        CheckConstraint(_in_list("status", COMPLAINT_STATUSES), name="status"),
        CheckConstraint("reopen_count >= 0", name="reopen_count"),
        # list pages: newest first, optionally by status / owner / creator / category. On
        # PostgreSQL the newest-first index also carries what an agent's view filters on, so
        # counting that view is an index-only scan (SQLite ignores postgresql_include)
        Index(
            "ix_complaints_created_at_id",
            "created_at",
            "id",
            postgresql_include=["owner_id", "created_by"],
        ),
        Index("ix_complaints_status_created_at", "status", "created_at", "id"),
        Index("ix_complaints_owner_id_created_at", "owner_id", "created_at", "id"),
        Index("ix_complaints_created_by_created_at", "created_by", "created_at", "id"),
        Index("ix_complaints_category_created_at", "category", "created_at", "id"),
        # the breach checker: partial indexes hold only deadlines not yet met nor notified
        Index(
            "ix_complaints_first_response_pending",
            "first_response_due",
            postgresql_where=text(FIRST_RESPONSE_PENDING),
            sqlite_where=text(FIRST_RESPONSE_PENDING),
        ),
        Index(
            "ix_complaints_resolution_pending",
            "resolution_due",
            postgresql_where=text(RESOLUTION_PENDING),
            sqlite_where=text(RESOLUTION_PENDING),
        ),
    )


class ComplaintCallRow(Base):
    """The calls a complaint was raised or discussed on."""

    __tablename__ = "complaint_calls"

    complaint_id: Mapped[int] = mapped_column(
        ForeignKey("complaints.id", ondelete="CASCADE"), primary_key=True
    )
    # no foreign key: a complaint can be filed while the call is live, before its log row exists
    call_uniqueid: Mapped[str] = mapped_column(String(UNIQUEID_LEN), primary_key=True, index=True)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CaseEventRow(Base):
    """The tracking sheet: every action on a case, with who, when, before and after."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_type: Mapped[str] = mapped_column(String(16))
    case_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)  # None = the system (breaches)
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    after: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        CheckConstraint(_in_list("case_type", CASE_TYPES), name="case_type"),
        Index("ix_case_events_case", "case_type", "case_id", "at", "id"),
    )


class DispositionRow(Base):
    """What a call was about and how it ended, filed by the agent who handled it."""

    __tablename__ = "dispositions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_uniqueid: Mapped[str] = mapped_column(String(UNIQUEID_LEN))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("call_uniqueid", "user_id", name="uq_dispositions_call_user"),
    )
