"""Searching users treats LIKE wildcards in the search text literally (on both backends)."""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.users.repository import UserRepository
from callcenter.users.service import Passwords


async def test_search_text_with_wildcards_matches_literally(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    users = UserRepository(
        session_factory=session_factory,
        passwords=Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)),
    )
    for name, display in (("li_na", "李娜"), ("lixna", "Li Xna"), ("wang", "王 100% 芳")):
        await users.create(
            username=name, password="pass-word-1", role="agent", display_name=display
        )
    found, total = await users.list(search="li_n")
    assert [u.username for u in found] == ["li_na"] and total == 1
    found, total = await users.list(search="100%")
    assert [u.username for u in found] == ["wang"] and total == 1
    found, total = await users.list(search="LI")
    assert {u.username for u in found} == {"li_na", "lixna"} and total == 2
