"""search indexes: customers by any part of name/company (trigram GIN on PostgreSQL, b-tree on
SQLite); on PostgreSQL the newest-first complaints index also covers an agent's view

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CUSTOMER_SEARCH = "ix_customers_name_company"  # replaces ix_customers_name (0001)
TRIGRAM_OPS = {"name": "gin_trgm_ops", "company": "gin_trgm_ops"}
NEWEST = "ix_complaints_created_at_id"
AGENT_VIEW = ["owner_id", "created_by"]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # pg_trgm ships with PostgreSQL (contrib) and is a trusted extension: the database
        # owner or any role with CREATE on the database may install it
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.drop_index("ix_customers_name", table_name="customers")
    op.create_index(
        CUSTOMER_SEARCH,
        "customers",
        ["name", "company"],
        postgresql_using="gin",
        postgresql_ops=TRIGRAM_OPS,
    )
    if postgresql:
        # INCLUDE is PostgreSQL-only: SQLite keeps its (created_at, id) index as it is
        op.drop_index(NEWEST, table_name="complaints")
        op.create_index(NEWEST, "complaints", ["created_at", "id"], postgresql_include=AGENT_VIEW)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(NEWEST, table_name="complaints")
        op.create_index(NEWEST, "complaints", ["created_at", "id"])
    op.drop_index(CUSTOMER_SEARCH, table_name="customers")
    op.create_index("ix_customers_name", "customers", ["name"])
    # pg_trgm stays installed: other objects in the database may use it
