"""Queues and agents as configured in the database (the demo seeds them; the web app edits them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.db.engine import dialect_insert
from callcenter.db.models import AGENT_GROUPS, AgentRow, QueueRow, utcnow

__all__ = ["AgentGroup", "AgentInfo", "AgentRepository", "QueueInfo"]

AgentGroup = Literal["bookings", "complaints", "general", "technical", "operator"]


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    group: AgentGroup
    strategy: str = "ringall"
    service_level_seconds: int = 60
    default_priority: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    name: str
    interface: str  # e.g. PJSIP/1001
    group: AgentGroup
    skills: tuple[str, ...] = ()  # technical, product, all-round (users.model.SKILLS), ...
    active: bool = True
    id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentRepository:
    """The queues and agents tables. `save_*` are idempotent upserts keyed by queue name and by
    agent interface."""

    def __init__(self, *, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory

    async def save_queue(self, queue: QueueInfo) -> None:
        _check_group(queue.group)
        if not queue.name.strip():
            raise ValueError("a queue needs a name")
        if queue.service_level_seconds <= 0:
            raise ValueError("service_level_seconds must be positive")
        values = {
            "name": queue.name,
            "group": queue.group,
            "strategy": queue.strategy,
            "service_level_seconds": queue.service_level_seconds,
            "default_priority": queue.default_priority,
            "description": queue.description,
        }
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, QueueRow.__table__).values(**values)
            update = {k: stmt.excluded[k] for k in values if k != "name"}
            await session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=update))

    async def get_queue(self, name: str) -> QueueInfo | None:
        async with self._sessions() as session:
            row = await session.get(QueueRow, name)
            return _to_queue(row) if row is not None else None

    async def list_queues(self) -> list[QueueInfo]:
        async with self._sessions() as session:
            rows = await session.scalars(select(QueueRow).order_by(QueueRow.name))
            return [_to_queue(row) for row in rows]

    async def save_agent(self, agent: AgentInfo) -> AgentInfo:
        """Create or update the agent with this interface."""
        _check_group(agent.group)
        if not agent.name.strip() or not agent.interface.strip():
            raise ValueError("an agent needs a name and an interface")
        now = utcnow()
        values = {
            "name": agent.name,
            "interface": agent.interface,
            "group": agent.group,
            "skills": list(agent.skills),
            "active": agent.active,
            "updated_at": now,
        }
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, AgentRow.__table__).values(**values, created_at=now)
            update = {k: stmt.excluded[k] for k in values if k != "interface"}
            taken = (
                await session.scalars(
                    select(AgentRow.interface).where(
                        AgentRow.name == agent.name, AgentRow.interface != agent.interface
                    )
                )
            ).first()
            if taken is not None:
                raise ValueError(f"agent name {agent.name!r} is already used by {taken}")
            await session.execute(
                stmt.on_conflict_do_update(index_elements=["interface"], set_=update)
            )
            row = (
                await session.scalars(
                    select(AgentRow)
                    .where(AgentRow.interface == agent.interface)
                    .execution_options(populate_existing=True)
                )
            ).one()
            return _to_agent(row)

    async def get_agent(self, interface: str) -> AgentInfo | None:
        async with self._sessions() as session:
            row = (
                await session.scalars(select(AgentRow).where(AgentRow.interface == interface))
            ).first()
            return _to_agent(row) if row is not None else None

    async def get_agent_by_name(self, name: str) -> AgentInfo | None:
        async with self._sessions() as session:
            row = (await session.scalars(select(AgentRow).where(AgentRow.name == name))).first()
            return _to_agent(row) if row is not None else None

    async def list_agents(
        self, *, group: AgentGroup | None = None, active: bool | None = None
    ) -> list[AgentInfo]:
        stmt = select(AgentRow).order_by(AgentRow.interface)
        if group is not None:
            stmt = stmt.where(AgentRow.group == group)
        if active is not None:
            stmt = stmt.where(AgentRow.active.is_(active))
        async with self._sessions() as session:
            return [_to_agent(row) for row in await session.scalars(stmt)]

    async def set_active(self, interface: str, active: bool) -> bool:
        """Activate or deactivate an agent; False if there is none with this interface."""
        async with self._sessions() as session, session.begin():
            row = (
                await session.scalars(select(AgentRow).where(AgentRow.interface == interface))
            ).first()
            if row is None:
                return False
            row.active = active
            row.updated_at = utcnow()
            return True


def _check_group(group: str) -> None:
    if group not in AGENT_GROUPS:
        raise ValueError(f"group must be one of {', '.join(AGENT_GROUPS)}, got {group!r}")


def _group(value: str) -> AgentGroup:
    _check_group(value)
    return value  # type: ignore[return-value]


def _to_queue(row: QueueRow) -> QueueInfo:
    return QueueInfo(
        name=row.name,
        group=_group(row.group),
        strategy=row.strategy,
        service_level_seconds=row.service_level_seconds,
        default_priority=row.default_priority,
        description=row.description,
    )


def _to_agent(row: AgentRow) -> AgentInfo:
    return AgentInfo(
        id=row.id,
        name=row.name,
        interface=row.interface,
        group=_group(row.group),
        skills=tuple(str(s) for s in row.skills or ()),
        active=bool(row.active),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
