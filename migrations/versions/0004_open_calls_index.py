"""open calls index: the calls still open (ended_at NULL), by start time, as a partial index,
for the resync's sweep of calls that ended while the server was away

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_CALLS = "ix_calls_open_started_at"


def upgrade() -> None:
    op.create_index(
        OPEN_CALLS,
        "calls",
        ["started_at"],
        postgresql_where=sa.text("ended_at IS NULL"),
        sqlite_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(OPEN_CALLS, table_name="calls")
