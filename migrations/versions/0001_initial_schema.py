"""initial schema: call log, IVR steps, callback requests, queues, agents, customers

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GROUPS_CHECK = "\"group\" IN ('bookings', 'complaints', 'general', 'technical', 'operator')"


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    # stored in UTC: timestamptz on PostgreSQL, UTC wall-clock text on SQLite
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("uniqueid", sa.String(150), nullable=False),
        sa.Column("linkedid", sa.String(150), nullable=False),
        sa.Column("channel", sa.String(255), nullable=False),
        _ts("started_at"),
        sa.Column("caller_number", sa.String(80), nullable=False),
        sa.Column("caller_number_normalised", sa.String(32), nullable=False),
        sa.Column("caller_name", sa.String(255), nullable=False),
        sa.Column("dialed_number", sa.String(80), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("ivr_path", sa.JSON(), nullable=False),
        sa.Column("ivr_choice", sa.String(64), nullable=True),
        sa.Column("queue", sa.String(80), nullable=True),
        sa.Column("queue_priority", sa.Integer(), nullable=True),
        _ts("queue_joined_at", nullable=True),
        _ts("queue_left_at", nullable=True),
        sa.Column("agent", sa.String(128), nullable=True),
        sa.Column("agent_interface", sa.String(128), nullable=True),
        _ts("answered_at", nullable=True),
        _ts("ended_at", nullable=True),
        sa.Column("wait_seconds", sa.Float(), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("abandoned", sa.Boolean(), nullable=False),
        sa.Column("abandon_stage", sa.String(16), nullable=True),
        sa.Column("abandon_after_seconds", sa.Float(), nullable=True),
        sa.Column("transfers", sa.JSON(), nullable=False),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        sa.Column("hangup_cause_text", sa.String(128), nullable=True),
        sa.Column("recording_file", sa.String(512), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("agents", sa.JSON(), nullable=False),
        sa.Column("adopted", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("direction IN ('inbound', 'outbound')", name=op.f("ck_calls_direction")),
        sa.PrimaryKeyConstraint("uniqueid", name=op.f("pk_calls")),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_linkedid", "calls", ["linkedid"])
    op.create_index("ix_calls_caller_number_normalised", "calls", ["caller_number_normalised"])
    op.create_index("ix_calls_queue_started_at", "calls", ["queue", "started_at"])
    op.create_index("ix_calls_agent_started_at", "calls", ["agent", "started_at"])
    op.create_index(
        "ix_calls_agent_interface_started_at", "calls", ["agent_interface", "started_at"]
    )

    op.create_table(
        "ivr_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_uniqueid", sa.String(150), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("input", sa.String(128), nullable=True),
        sa.Column("result", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ivr_steps")),
        sa.UniqueConstraint("call_uniqueid", "seq", name="uq_ivr_steps_call_seq"),
    )
    op.create_index("ix_ivr_steps_at", "ivr_steps", ["at"])

    op.create_table(
        "callback_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_uniqueid", sa.String(150), nullable=False),
        sa.Column("number_raw", sa.String(80), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        _ts("requested_at"),
        sa.Column("queue", sa.String(80), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        _ts("updated_at"),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'cancelled')", name=op.f("ck_callback_requests_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_requests")),
        sa.UniqueConstraint("call_uniqueid", name=op.f("uq_callback_requests_call_uniqueid")),
    )
    op.create_index("ix_callback_requests_number", "callback_requests", ["number"])
    op.create_index("ix_callback_requests_requested_at", "callback_requests", ["requested_at"])
    op.create_index("ix_callback_requests_status", "callback_requests", ["status"])

    op.create_table(
        "queues",
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("group", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("service_level_seconds", sa.Integer(), nullable=False),
        sa.Column("default_priority", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.CheckConstraint(GROUPS_CHECK, name=op.f("ck_queues_group")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queues")),
    )

    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("interface", sa.String(128), nullable=False),
        sa.Column("group", sa.String(32), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(GROUPS_CHECK, name=op.f("ck_agents_group")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("interface", name=op.f("uq_agents_interface")),
        sa.UniqueConstraint("name", name=op.f("uq_agents_name")),
    )
    op.create_index("ix_agents_group", "agents", ["group"])

    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("company", sa.String(255), nullable=True),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("credit_grade", sa.String(8), nullable=True),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("preferred_language", sa.String(16), nullable=True),
        sa.Column("do_not_call", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("tier IN ('key', 'normal')", name=op.f("ck_customers_tier")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
    )
    op.create_index("ix_customers_name", "customers", ["name"])

    op.create_table(
        "customer_numbers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("raw", sa.String(80), nullable=False),
        sa.Column("normalised", sa.String(32), nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_numbers_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_numbers")),
        sa.UniqueConstraint("normalised", name=op.f("uq_customer_numbers_normalised")),
    )
    op.create_index("ix_customer_numbers_customer_id", "customer_numbers", ["customer_id"])


def downgrade() -> None:
    op.drop_table("customer_numbers")
    op.drop_table("customers")
    op.drop_table("agents")
    op.drop_table("queues")
    op.drop_table("callback_requests")
    op.drop_table("ivr_steps")
    op.drop_table("calls")
