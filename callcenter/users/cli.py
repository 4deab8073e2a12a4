"""`callcenter users ...` and `callcenter tokens ...`: manage sign-ins from the shell.

Passwords are read from a prompt (getpass, asked twice) or one line of stdin with
--password-stdin; `--password VALUE` exists for scripts but puts the password in the process
list and shell history.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TextIO

from callcenter.config import Settings
from callcenter.users.model import GROUPS, LANGUAGES, ROLES, SCOPES, SKILLS
from callcenter.users.repository import (
    AuditRepository,
    DuplicateUserError,
    TokenNotFoundError,
    TokenRepository,
    UserRepository,
)

EXIT_OK = 0
EXIT_FAILED = 1


class CliError(Exception):
    """A problem to print (without a traceback) and exit 1."""


def add_user_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    users = sub.add_parser("users", help="sign-in users: add, passwd, disable, enable, list")
    users_sub = users.add_subparsers(dest="users_command", metavar="USERS_COMMAND", required=True)

    add = users_sub.add_parser("add", parents=[common], help="create a user")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", dest="display_name", help="display name (default: username)")
    add.add_argument("--group", choices=GROUPS)
    add.add_argument("--skill", dest="skills", action="append", choices=SKILLS, default=[])
    add.add_argument("--interface", dest="agent_interface", help="queue member, e.g. PJSIP/1001")
    add.add_argument("--language", choices=LANGUAGES, default="zh-CN")
    _password_options(add)

    passwd = users_sub.add_parser(
        "passwd", parents=[common], help="set a user's password (ends their sessions)"
    )
    passwd.add_argument("username")
    _password_options(passwd)

    for name, text in (
        ("disable", "disable a user (ends their sessions; tokens stop working)"),
        ("enable", "enable a disabled user"),
    ):
        cmd = users_sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("username")

    lst = users_sub.add_parser("list", parents=[common], help="list users")
    lst.add_argument("--role", choices=ROLES)

    tokens = sub.add_parser("tokens", help="API tokens: create, list, revoke")
    tokens_sub = tokens.add_subparsers(
        dest="tokens_command", metavar="TOKENS_COMMAND", required=True
    )
    create = tokens_sub.add_parser(
        "create", parents=[common], help="create a token for a user; prints it once"
    )
    create.add_argument("username")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--scope", dest="scopes", action="append", choices=SCOPES, required=True)
    create.add_argument("--expires-days", type=int, metavar="N", help="valid for N days")
    tlist = tokens_sub.add_parser("list", parents=[common], help="list tokens")
    tlist.add_argument("username", nargs="?")
    revoke = tokens_sub.add_parser("revoke", parents=[common], help="revoke a token by id")
    revoke.add_argument("token_id", type=int)


def _password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from one stdin line"
    )
    group.add_argument(
        "--password", help="the password itself (for scripts; visible in the process list)"
    )


def read_password(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    if args.password is not None:
        password: str = args.password
        return password
    stdin = stdin or sys.stdin
    if args.password_stdin:
        line = stdin.readline()
        return line.rstrip("\r\n")
    if not stdin.isatty():
        raise CliError("no terminal to ask for the password: use --password-stdin")
    first = prompt("Password: ")
    if prompt("Password again: ") != first:
        raise CliError("the passwords differ")
    return first


async def run_user_command(
    settings: Settings,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> int:
    """Run one `users`/`tokens` command; the database is migrated first."""
    from callcenter.db.engine import create_engine, create_session_factory
    from callcenter.db.migrate import upgrade_database

    out = out or sys.stdout
    url = settings.database_url.get_secret_value()
    await upgrade_database(url)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    users = UserRepository(session_factory=sessions)
    tokens = TokenRepository(session_factory=sessions)
    audit = AuditRepository(session_factory=sessions)
    try:
        if args.command == "users":
            return await _users(args, users, audit, out, stdin, prompt)
        return await _tokens(args, users, tokens, audit, out)
    except CliError as exc:
        print(f"callcenter: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (DuplicateUserError, ValueError) as exc:
        print(f"callcenter: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await engine.dispose()


async def _user_id(users: UserRepository, username: str) -> int:
    user = await users.get_by_username(username)
    if user is None:
        raise CliError(f"no user {username!r}")
    return user.id


async def _users(
    args: argparse.Namespace,
    users: UserRepository,
    audit: AuditRepository,
    out: TextIO,
    stdin: TextIO | None,
    prompt: Callable[[str], str],
) -> int:
    cmd = args.users_command
    via = {"via": "cli"}
    if cmd == "add":
        password = read_password(args, stdin=stdin, prompt=prompt)
        user = await users.create(
            username=args.username,
            password=password,
            role=args.role,
            display_name=args.display_name,
            group=args.group,
            skills=args.skills,
            agent_interface=args.agent_interface,
            language=args.language,
        )
        await audit.record(None, "create", "user", user.id, {**via, "role": user.role})
        print(f"created user {user.username} ({user.role}), id {user.id}", file=out)
    elif cmd == "passwd":
        user_id = await _user_id(users, args.username)
        await users.set_password(user_id, read_password(args, stdin=stdin, prompt=prompt))
        await audit.record(None, "password", "user", user_id, via)
        print(f"password of {args.username.lower()} changed; their sessions ended", file=out)
    elif cmd in ("disable", "enable"):
        user_id = await _user_id(users, args.username)
        await users.update(user_id, disabled=cmd == "disable")
        await audit.record(None, "update", "user", user_id, {**via, "disabled": cmd == "disable"})
        print(f"{args.username.lower()} {cmd}d", file=out)
    elif cmd == "list":
        items, _ = await users.list(role=args.role, limit=10_000)
        for u in items:
            state = "disabled" if u.disabled else "active"
            where = f" {u.agent_interface}" if u.agent_interface else ""
            group = f" {u.group}" if u.group else ""
            print(
                f"{u.id:>4} {u.username:<20} {u.role:<10} {state:<8}{group}{where}"
                f"  {u.display_name}",
                file=out,
            )
    return EXIT_OK


async def _tokens(
    args: argparse.Namespace,
    users: UserRepository,
    tokens: TokenRepository,
    audit: AuditRepository,
    out: TextIO,
) -> int:
    cmd = args.tokens_command
    if cmd == "create":
        user_id = await _user_id(users, args.username)
        expires = None
        if args.expires_days is not None:
            if args.expires_days < 1:
                raise CliError("--expires-days must be at least 1")
            expires = tokens.now() + timedelta(days=args.expires_days)
        token, secret = await tokens.create(
            user_id, name=args.name, scopes=args.scopes, expires_at=expires
        )
        await audit.record(
            None, "create", "api_token", token.id, {"via": "cli", "scopes": list(token.scopes)}
        )
        print(
            f"token {token.id} for {args.username.lower()} ({', '.join(token.scopes)}):", file=out
        )
        print(secret, file=out)
        print("store it now: it is not shown again", file=sys.stderr)
    elif cmd == "list":
        owner = await _user_id(users, args.username) if args.username else None
        for t in await tokens.list(user_id=owner):
            state = "revoked" if t.revoked_at else "active"
            until = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
            print(
                f"{t.id:>4} user {t.user_id:<4} {t.prefix}... {state:<7} expires {until} "
                f"{','.join(t.scopes)}  {t.name}",
                file=out,
            )
    elif cmd == "revoke":
        try:
            token = await tokens.revoke(args.token_id)
        except TokenNotFoundError:
            raise CliError(f"no token {args.token_id}") from None
        await audit.record(None, "revoke", "api_token", token.id, {"via": "cli"})
        print(f"token {token.id} revoked", file=out)
    return EXIT_OK
