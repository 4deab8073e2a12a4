"""Demo users: one per role, the agents linked to the emulator's queue members PJSIP/1001..1008.

Every demo user has the same, printed password (`DEMO_PASSWORD`): this is demo data only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.db.seed import DEMO_AGENTS
from callcenter.users.model import SKILLS, Language, Role
from callcenter.users.repository import DuplicateUserError, UserRepository

__all__ = ["DEMO_PASSWORD", "DEMO_USERS", "DemoUser", "demo_users_text", "seed_demo_users"]

DEMO_PASSWORD = "demo-pass-2026"
SPECIALIST_INTERFACE = "PJSIP/1003"  # the complaint specialist sits in the complaints group


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    display_name: str
    role: Role
    group: str | None = None
    skills: tuple[str, ...] = ()
    agent_interface: str | None = None
    language: Language = "zh-CN"


def _agent_users() -> list[DemoUser]:
    users = []
    for agent in DEMO_AGENTS:
        extension = agent.interface.rsplit("/", 1)[-1]
        specialist = agent.interface == SPECIALIST_INTERFACE
        skills = tuple(dict.fromkeys(s for s in agent.skills if s in SKILLS))
        users.append(
            DemoUser(
                username=f"specialist{extension}" if specialist else f"agent{extension}",
                display_name=agent.name,
                role="specialist" if specialist else "agent",
                group=agent.group,
                skills=skills,
                agent_interface=agent.interface,
                language="en" if "english" in agent.skills else "zh-CN",
            )
        )
    return users


DEMO_USERS: tuple[DemoUser, ...] = (
    *_agent_users(),
    DemoUser("qa", "质检 QA", "qa"),
    DemoUser("supervisor", "班长 Supervisor", "supervisor"),
    DemoUser("admin", "管理员 Admin", "admin", language="en"),
)


async def seed_demo_users(
    session_factory: async_sessionmaker[AsyncSession], *, password: str = DEMO_PASSWORD
) -> int:
    """Create the demo users that do not exist yet; returns how many were created."""
    repo = UserRepository(session_factory=session_factory)
    created = 0
    for user in DEMO_USERS:
        if await repo.get_by_username(user.username) is not None:
            continue
        try:
            await repo.create(
                username=user.username,
                password=password,
                role=user.role,
                display_name=user.display_name,
                group=user.group,
                skills=user.skills,
                agent_interface=user.agent_interface,
                language=user.language,
            )
        except DuplicateUserError:
            continue  # e.g. an operator already linked that interface to another user
        created += 1
    return created


def demo_users_text(password: str = DEMO_PASSWORD) -> str:
    """The sign-in table printed when the demo starts."""
    lines = [f"demo users (password for all: {password}):"]
    for user in DEMO_USERS:
        where = f" {user.agent_interface} {user.group}" if user.agent_interface else ""
        lines.append(f"  {user.username:<16} {user.role:<10}{where}  {user.display_name}")
    return "\n".join(lines)
