"""`callcenter users ...` / `callcenter tokens ...` against a real SQLite file, and the demo
users seed."""

from __future__ import annotations

import argparse
import asyncio
import io

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.cli import main
from callcenter.db.engine import create_engine, create_session_factory
from callcenter.db.migrate import upgrade_database
from callcenter.db.seed import DEMO_AGENTS
from callcenter.users.cli import CliError, read_password
from callcenter.users.model import ROLES
from callcenter.users.repository import AuditRepository, TokenRepository, UserRepository
from callcenter.users.seed import DEMO_PASSWORD, DEMO_USERS, demo_users_text, seed_demo_users


def run(
    argv: list[str],
    db: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", db)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


async def _repos(
    db: str,
) -> tuple[UserRepository, TokenRepository, AuditRepository, AsyncEngine]:
    engine = create_engine(db)
    sessions = create_session_factory(engine)
    return (
        UserRepository(session_factory=sessions),
        TokenRepository(session_factory=sessions),
        AuditRepository(session_factory=sessions),
        engine,
    )


def test_users_add_passwd_disable_list_and_tokens(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(
        [
            "users",
            "add",
            "Zhang.Wei",
            "--role",
            "specialist",
            "--name",
            "张伟",
            "--group",
            "complaints",
            "--skill",
            "all-round",
            "--interface",
            "PJSIP/1003",
            "--password-stdin",
        ],
        sqlite_url,
        capsys,
        monkeypatch,
        stdin="first-pass-1\n",
    )
    assert code == 0 and "created user zhang.wei (specialist)" in out

    code, _, err = run(
        ["users", "add", "zhang.wei", "--role", "qa", "--password", "another-1"],
        sqlite_url,
        capsys,
        monkeypatch,
    )
    assert code == 1 and "already taken" in err and "Traceback" not in err
    code, _, err = run(["users", "add", "nopw", "--role", "qa"], sqlite_url, capsys, monkeypatch)
    assert code == 1 and "--password-stdin" in err  # no terminal to prompt on
    code, _, err = run(
        ["users", "add", "shorty", "--role", "qa", "--password-stdin"],
        sqlite_url,
        capsys,
        monkeypatch,
        stdin="short\n",
    )
    assert code == 1 and "at least 8" in err

    code, out, _ = run(
        ["users", "passwd", "ZHANG.WEI", "--password-stdin"],
        sqlite_url,
        capsys,
        monkeypatch,
        stdin="second-pass-2\n",
    )
    assert code == 0 and "password of zhang.wei changed" in out
    code, _, err = run(
        ["users", "passwd", "ghost", "--password", "whatever-1"], sqlite_url, capsys, monkeypatch
    )
    assert code == 1 and "no user 'ghost'" in err

    code, out, err = run(
        ["tokens", "create", "zhang.wei", "--name", "crm", "--scope", "tickets:read"],
        sqlite_url,
        capsys,
        monkeypatch,
    )
    assert code == 0 and "not shown again" in err
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("cc_")

    async def check_token(active: bool) -> None:
        _, tokens, _, engine = await _repos(sqlite_url)
        principal = await tokens.resolve(secret)
        assert (principal is not None) is active
        if principal is not None:
            assert principal.username == "zhang.wei" and principal.scopes == {"tickets:read"}
        await engine.dispose()

    asyncio.run(check_token(True))
    code, out, _ = run(["tokens", "list"], sqlite_url, capsys, monkeypatch)
    assert code == 0 and secret[:8] in out and secret not in out and "active" in out

    code, out, _ = run(["users", "disable", "zhang.wei"], sqlite_url, capsys, monkeypatch)
    assert code == 0 and "disabled" in out
    asyncio.run(check_token(False))  # a disabled user's tokens stop working
    code, out, _ = run(["users", "list"], sqlite_url, capsys, monkeypatch)
    assert "zhang.wei" in out and "disabled" in out and "PJSIP/1003" in out
    code, out, _ = run(["users", "enable", "zhang.wei"], sqlite_url, capsys, monkeypatch)
    asyncio.run(check_token(True))
    code, out, _ = run(["tokens", "revoke", "1"], sqlite_url, capsys, monkeypatch)
    assert code == 0 and "revoked" in out
    asyncio.run(check_token(False))
    code, _, err = run(["tokens", "revoke", "99"], sqlite_url, capsys, monkeypatch)
    assert code == 1 and "no token 99" in err

    async def check_state() -> None:
        users, _, audit, engine = await _repos(sqlite_url)
        assert await users.authenticate("zhang.wei", "second-pass-2") is not None
        assert await users.authenticate("zhang.wei", "first-pass-1") is None
        entries, total = await audit.list(limit=100)
        assert total == 6  # user create, password, token create, disable, enable, revoke
        assert {e.action for e in entries} == {"create", "password", "update", "revoke"}
        assert all(e.details.get("via") == "cli" for e in entries)
        await engine.dispose()

    asyncio.run(check_state())


def test_password_prompt_asks_twice() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    args = argparse.Namespace(password=None, password_stdin=False)
    answers = iter(["pw-123456", "pw-123456"])
    assert read_password(args, stdin=Tty(), prompt=lambda _: next(answers)) == "pw-123456"
    answers = iter(["pw-123456", "pw-654321"])
    with pytest.raises(CliError, match="differ"):
        read_password(args, stdin=Tty(), prompt=lambda _: next(answers))


async def test_demo_users_one_per_role_linked_to_the_agents(sqlite_url: str) -> None:
    assert {u.role for u in DEMO_USERS} == set(ROLES)
    linked = {u.agent_interface: u for u in DEMO_USERS if u.agent_interface}
    assert set(linked) == {a.interface for a in DEMO_AGENTS}
    for agent in DEMO_AGENTS:
        assert linked[agent.interface].group == agent.group
    specialists = [u for u in DEMO_USERS if u.role == "specialist"]
    assert specialists and all(u.group == "complaints" for u in specialists)

    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        sessions = create_session_factory(engine)
        assert await seed_demo_users(sessions) == len(DEMO_USERS)
        assert await seed_demo_users(sessions) == 0  # idempotent
        users = UserRepository(session_factory=sessions)
        for demo in DEMO_USERS:
            user = await users.authenticate(demo.username, DEMO_PASSWORD)
            assert user is not None and user.role == demo.role
            assert user.agent_interface == demo.agent_interface
    finally:
        await engine.dispose()
    text = demo_users_text()
    assert DEMO_PASSWORD in text and all(u.username in text for u in DEMO_USERS)


def test_cli_help_lists_the_user_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["users", "--help"])
    out = capsys.readouterr().out
    for cmd in ("add", "passwd", "disable", "enable", "list"):
        assert cmd in out
