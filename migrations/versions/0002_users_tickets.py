"""users, sessions, API tokens, audit log; bookings, complaints, case timeline, dispositions;
customers gain provisional + contact_user_id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GROUPS_CHECK = "\"group\" IN ('bookings', 'complaints', 'general', 'technical', 'operator')"
ROLES_CHECK = "role IN ('agent', 'specialist', 'qa', 'supervisor', 'admin')"
CONTACT_FK = "fk_customers_contact_user_id_users"


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    # stored in UTC: timestamptz on PostgreSQL, UTC wall-clock text on SQLite
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Integer(), autoincrement=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("group", sa.String(32), nullable=True),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("agent_interface", sa.String(128), nullable=True),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(ROLES_CHECK, name=op.f("ck_users_role")),
        sa.CheckConstraint(GROUPS_CHECK, name=op.f("ck_users_group")),
        sa.CheckConstraint("language IN ('zh-CN', 'en')", name=op.f("ck_users_language")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
        sa.UniqueConstraint("agent_interface", name=op.f("uq_users_agent_interface")),
    )
    op.create_index("ix_users_role", "users", ["role"])
    op.create_index("ix_users_group", "users", ["group"])

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(128), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("last_seen_at"),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_web_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])

    op.create_table(
        "api_tokens",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    op.create_table(
        "audit_log",
        _id(),
        _ts("at"),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor_token_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_user_id", "audit_log", ["actor_user_id"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_entity", "audit_log", ["entity_type", "entity_id", "at"])

    # customers: new columns. No batch rebuild on SQLite: dropping the old table with foreign keys
    # enforced would cascade-delete customer_numbers; SQLite can ADD COLUMN ... REFERENCES.
    op.add_column(
        "customers",
        sa.Column("provisional", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE customers ADD COLUMN contact_user_id INTEGER CONSTRAINT {CONTACT_FK} "
            "REFERENCES users (id)"
        )
    else:
        op.add_column("customers", sa.Column("contact_user_id", sa.Integer(), nullable=True))
        op.create_foreign_key(CONTACT_FK, "customers", "users", ["contact_user_id"], ["id"])

    op.create_table(
        "bookings",
        _id(),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("call_uniqueid", sa.String(150), nullable=True),
        sa.Column("item", sa.String(255), nullable=False),
        _ts("scheduled_for", nullable=True),
        sa.Column("for_whom", sa.String(255), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(
            "status IN ('new', 'confirmed', 'fulfilled', 'cancelled')",
            name=op.f("ck_bookings_status"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_bookings_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_bookings_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index("ix_bookings_customer_id", "bookings", ["customer_id"])
    op.create_index("ix_bookings_call_uniqueid", "bookings", ["call_uniqueid"])
    op.create_index("ix_bookings_created_at_id", "bookings", ["created_at", "id"])
    op.create_index("ix_bookings_status_created_at", "bookings", ["status", "created_at", "id"])
    op.create_index(
        "ix_bookings_created_by_created_at", "bookings", ["created_by", "created_at", "id"]
    )

    op.create_table(
        "complaints",
        _id(),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        _ts("first_response_due"),
        _ts("resolution_due"),
        _ts("first_responded_at", nullable=True),
        _ts("resolved_at", nullable=True),
        _ts("closed_at", nullable=True),
        _ts("customer_informed_at", nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        _ts("first_response_breached_at", nullable=True),
        _ts("resolution_breached_at", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(
            "severity IN ('low', 'medium', 'high', 'critical')",
            name=op.f("ck_complaints_severity"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'investigating', 'escalated', 'resolved', 'closed')",
            name=op.f("ck_complaints_status"),
        ),
        sa.CheckConstraint("reopen_count >= 0", name=op.f("ck_complaints_reopen_count")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_complaints_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_complaints_owner_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_complaints_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaints")),
    )
    op.create_index("ix_complaints_customer_id", "complaints", ["customer_id"])
    op.create_index("ix_complaints_created_at_id", "complaints", ["created_at", "id"])
    for column in ("status", "owner_id", "created_by", "category"):
        op.create_index(
            f"ix_complaints_{column}_created_at", "complaints", [column, "created_at", "id"]
        )
    first_pending = "first_response_breached_at IS NULL AND first_responded_at IS NULL"
    resolution_pending = "resolution_breached_at IS NULL AND status NOT IN ('resolved', 'closed')"
    op.create_index(
        "ix_complaints_first_response_pending",
        "complaints",
        ["first_response_due"],
        postgresql_where=sa.text(first_pending),
        sqlite_where=sa.text(first_pending),
    )
    op.create_index(
        "ix_complaints_resolution_pending",
        "complaints",
        ["resolution_due"],
        postgresql_where=sa.text(resolution_pending),
        sqlite_where=sa.text(resolution_pending),
    )

    op.create_table(
        "complaint_calls",
        sa.Column("complaint_id", sa.Integer(), nullable=False),
        sa.Column("call_uniqueid", sa.String(150), nullable=False),
        _ts("linked_at"),
        sa.ForeignKeyConstraint(
            ["complaint_id"],
            ["complaints.id"],
            name=op.f("fk_complaint_calls_complaint_id_complaints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("complaint_id", "call_uniqueid", name=op.f("pk_complaint_calls")),
    )
    op.create_index("ix_complaint_calls_call_uniqueid", "complaint_calls", ["call_uniqueid"])

    op.create_table(
        "case_events",
        _id(),
        sa.Column("case_type", sa.String(16), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "case_type IN ('complaint', 'booking', 'customer')",
            name=op.f("ck_case_events_case_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    op.create_index("ix_case_events_case", "case_events", ["case_type", "case_id", "at", "id"])

    op.create_table(
        "dispositions",
        _id(),
        sa.Column("call_uniqueid", sa.String(150), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_dispositions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispositions")),
        sa.UniqueConstraint("call_uniqueid", "user_id", name="uq_dispositions_call_user"),
    )
    op.create_index("ix_dispositions_user_id", "dispositions", ["user_id"])
    op.create_index("ix_dispositions_created_at", "dispositions", ["created_at"])


def downgrade() -> None:
    op.drop_table("dispositions")
    op.drop_table("case_events")
    op.drop_table("complaint_calls")
    op.drop_table("complaints")
    op.drop_table("bookings")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a plain column; the inline foreign key goes with it
        op.execute("ALTER TABLE customers DROP COLUMN contact_user_id")
    else:
        op.drop_constraint(CONTACT_FK, "customers", type_="foreignkey")
        op.drop_column("customers", "contact_user_id")
    op.execute("ALTER TABLE customers DROP COLUMN provisional")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
    op.drop_table("web_sessions")
    op.drop_table("users")
