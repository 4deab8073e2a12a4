"""The `callcenter` command: serve, demo, pbxsim, db upgrade, flows check|prompts, users, tokens,
version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from callcenter import __version__
from callcenter.config import Settings, load_settings

log = logging.getLogger("callcenter")

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found problems (flows check) or failed
EXIT_CONFIG = 2  # bad arguments or configuration; never started

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def setup_logging(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """The one logging setup: plain lines on stderr. Secrets never reach it: Settings keeps
    them as SecretStr and URLs are logged through `Settings.database_url_display`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp logs every request at INFO: useful in serve, noise in the demo at high speed
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # alembic announces every plugin and migration step at INFO
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


# --------------------------------------------------------------------------------- event loop


class EventLoopUnavailable(RuntimeError):
    """CALLCENTER_EVENT_LOOP=uvloop, but uvloop cannot be imported."""


def loop_factory(choice: str) -> tuple[str, LoopFactory | None]:
    """(name, factory) for the `event_loop` setting; factory None = asyncio's default loop.

    `auto` takes uvloop when it is importable (it is not on Windows), else asyncio."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                f"event_loop=uvloop but uvloop is not importable: {exc}"
            ) from exc
        return "asyncio", None
    return f"uvloop {getattr(uvloop, '__version__', '?')}", uvloop.new_event_loop


def run_with_loop(settings: Settings, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a long-lived command's coroutine on the configured event loop, logging which one."""
    name, factory = loop_factory(settings.event_loop)

    async def logged() -> int:
        loop = asyncio.get_running_loop()
        log.info("event loop: %s (%s.%s)", name, type(loop).__module__, type(loop).__qualname__)
        return await main()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(logged())


# --------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callcenter",
        description="Hotline server for Asterisk: FastAGI IVR, AMI call tracking, call log, web.",
    )
    # the global options are accepted before and after the sub-command
    common = argparse.ArgumentParser(add_help=False)
    for target, default in ((parser, None), (common, argparse.SUPPRESS)):
        target.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            default=default,
            help="TOML settings file (also CALLCENTER_CONFIG); environment variables override it",
        )
        target.add_argument(
            "--log-level", metavar="LEVEL", default=default, help="DEBUG, INFO, WARNING, ERROR"
        )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "serve",
        parents=[common],
        help="run against a real Asterisk (AMI client + FastAGI + web)",
    )

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run everything against the built-in Asterisk emulator with simulated calls",
    )
    demo.add_argument(
        "--calls", type=_positive_int, metavar="N", help="simulate N calls (default: endless)"
    )
    demo.add_argument(
        "--exit", action="store_true", help="exit when the N calls are done (needs --calls)"
    )
    demo.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object (with --exit)"
    )
    demo.add_argument(
        "--speed",
        type=_positive_float,
        metavar="X",
        help="emulator clock speed-up (default 5, 50 with --exit)",
    )
    demo.add_argument("--port", type=_port, metavar="PORT", help="web port (default web_port)")
    demo.add_argument(
        "--no-web", action="store_true", help="no web server (the default with --exit)"
    )
    demo.add_argument(
        "--database-url",
        metavar="URL",
        help="call log database (default sqlite:///./data/callcenter.db)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed for the simulated callers")

    pbxsim = sub.add_parser(
        "pbxsim", parents=[common], help="run the Asterisk emulator alone (AMI server + callers)"
    )
    pbxsim.add_argument("--ami-host", default="127.0.0.1", help="AMI listen address")
    pbxsim.add_argument("--ami-port", type=_port, default=5038, help="AMI listen port (0: any)")
    pbxsim.add_argument(
        "--agi", default="agi://127.0.0.1:4573/hotline", metavar="URL", help="FastAGI server URL"
    )
    pbxsim.add_argument("--username", default="callcenter", help="AMI user name")
    pbxsim.add_argument("--secret", default="callcenter", help="AMI secret")
    pbxsim.add_argument("--calls", type=_positive_int, metavar="N", help="simulate N calls")
    pbxsim.add_argument("--speed", type=_positive_float, default=1.0, metavar="X")
    pbxsim.add_argument("--seed", type=int, default=0)
    pbxsim.add_argument(
        "--recordings", type=Path, metavar="DIR", help="write call recordings (WAV) here"
    )
    pbxsim.add_argument(
        "--channelvars",
        type=_channelvars,
        default=(),
        metavar="A,B",
        help="channel variables every channel event carries as ChanVariable (manager.conf)",
    )

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    db_sub.add_parser("upgrade", parents=[common], help="apply the migrations to database_url")

    flows = sub.add_parser("flows", help="IVR flow files")
    flows_sub = flows.add_subparsers(dest="flows_command", metavar="FLOWS_COMMAND", required=True)
    check = flows_sub.add_parser(
        "check",
        parents=[common],
        help="validate flow files; prints file:line: node: message, exits 1 on errors",
    )
    check.add_argument("dir", nargs="?", type=Path, help="flows directory (default flows_dir)")
    prompts = flows_sub.add_parser(
        "prompts",
        parents=[common],
        help="speak the words of prompts.yaml into the WAV files the flows play (placeholders "
        "for recorded prompts; espeak-ng and sox)",
    )
    prompts.add_argument("dir", nargs="?", type=Path, help="flows directory (default flows_dir)")
    prompts.add_argument(
        "--out",
        type=Path,
        default=Path("sounds"),
        metavar="DIR",
        help="laid out like Asterisk's sounds directory: DIR/zh/hotline/welcome.wav (default "
        "./sounds)",
    )
    prompts.add_argument(
        "--force", action="store_true", help="replace files already there (recorded prompts)"
    )

    from callcenter.users.cli import add_user_commands

    add_user_commands(sub, common)

    sub.add_parser("version", help="print the version")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _channelvars(text: str) -> tuple[str, ...]:
    from callcenter.pbxsim.pbx import parse_channelvars

    try:
        return tuple(parse_channelvars(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


# --------------------------------------------------------------------------------- commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"callcenter {__version__}")
        return EXIT_OK
    if args.command == "demo" and args.exit and args.calls is None:
        parser.error("demo --exit needs --calls N")
    if args.command == "demo" and args.json and not args.exit:
        parser.error("demo --json needs --exit")

    overrides: dict[str, Any] = {}
    if args.log_level:
        overrides["log_level"] = args.log_level
    try:
        settings = load_settings(args.config, **overrides)
    except ValidationError as exc:
        # field names and reasons only: the rejected values may be secrets
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        print(f"callcenter: bad configuration:\n{problems}", file=sys.stderr)
        return EXIT_CONFIG
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"callcenter: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level)

    try:
        if args.command == "flows" and args.flows_command == "prompts":
            return cmd_flows_prompts(args.dir or settings.flows_dir, args.out, force=args.force)
        if args.command == "flows":
            return cmd_flows_check(args.dir or settings.flows_dir)
        if args.command == "db":
            return asyncio.run(cmd_db_upgrade(settings))
        if args.command == "serve":
            return cmd_serve(settings)
        if args.command == "demo":
            return cmd_demo(settings, args)
        if args.command == "pbxsim":
            return cmd_pbxsim(settings, args)
        if args.command in ("users", "tokens"):
            from callcenter.users.cli import run_user_command

            return asyncio.run(run_user_command(settings, args))
    except KeyboardInterrupt:
        return 130
    except EventLoopUnavailable as exc:
        print(f"callcenter: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    parser.error(f"unknown command {args.command!r}")
    return EXIT_CONFIG  # pragma: no cover - parser.error exits


def cmd_flows_check(directory: Path, *, out: TextIO | None = None) -> int:
    from callcenter.ivr.loader import check_flows, flow_files

    out = out or sys.stdout
    errors = check_flows(directory)
    for err in errors:
        print(err, file=out)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return EXIT_FAILED
    count = len(flow_files(directory))
    print(f"{directory}: {count} flow file(s) OK", file=out)
    return EXIT_OK


def cmd_flows_prompts(
    directory: Path, out_dir: Path, *, force: bool = False, out: TextIO | None = None
) -> int:
    from callcenter.ivr.loader import (
        PROMPTS_FILE,
        FlowLoadError,
        check_flows,
        flow_files,
        load_flow,
        load_prompt_texts,
    )
    from callcenter.ivr.prompts import plan_prompts, write_prompts
    from callcenter.speech import SpeechError, Synthesizer

    out = out or sys.stdout
    problems = [str(err) for err in check_flows(directory)]
    texts_file = directory / PROMPTS_FILE
    if not problems and not texts_file.is_file():
        problems.append(f"{texts_file}: no such file (the words of the prompts)")
    if not problems:
        try:
            texts = load_prompt_texts(texts_file)
            audio, problems = plan_prompts([load_flow(p) for p in flow_files(directory)], texts)
        except FlowLoadError as exc:  # changed since the check
            problems = [str(err) for err in exc.errors]
    if problems:
        for problem in problems:
            print(problem, file=out)
        print(f"{len(problems)} problem(s); no prompt written", file=sys.stderr)
        return EXIT_FAILED
    try:
        written, kept = write_prompts(audio, out_dir, Synthesizer(), texts, force=force)
    except (SpeechError, OSError, ValueError) as exc:
        print(f"callcenter: prompts not all written to {out_dir}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{out_dir}: {len(written)} prompt file(s) written, {len(kept)} kept as they were"
        + (" (--force replaces them)" if kept else ""),
        file=out,
    )
    return EXIT_OK


async def cmd_db_upgrade(settings: Settings) -> int:
    from callcenter.db.migrate import current_revision, upgrade_database

    url = settings.database_url.get_secret_value()
    log.info("migrating %s", settings.database_url_display)
    await upgrade_database(url)
    log.info("database at revision %s", await current_revision(url))
    return EXIT_OK


def cmd_serve(settings: Settings) -> int:
    from callcenter.app import serve

    return run_with_loop(settings, lambda: serve(settings))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from callcenter.demo import DemoOptions, demo

    options = DemoOptions(
        calls=args.calls,
        exit_when_done=args.exit,
        json_output=args.json,
        speed=args.speed if args.speed is not None else (50.0 if args.exit else 5.0),
        # --exit runs without the web page unless a --port asks for it
        web=not args.no_web and (not args.exit or args.port is not None),
        web_port=args.port,
        database_url=args.database_url,
        seed=args.seed,
    )
    if options.web:
        from callcenter.users.seed import demo_users_text

        print(demo_users_text(), flush=True)
    return run_with_loop(settings, lambda: demo(settings, options, out=sys.stdout))


def cmd_pbxsim(settings: Settings, args: argparse.Namespace) -> int:
    from callcenter.demo import PbxsimOptions, pbxsim

    options = PbxsimOptions(
        ami_host=args.ami_host,
        ami_port=args.ami_port,
        agi_url=args.agi,
        username=args.username,
        secret=args.secret,
        calls=args.calls,
        speed=args.speed,
        seed=args.seed,
        recordings=args.recordings,
        channelvars=args.channelvars,
    )
    return run_with_loop(settings, lambda: pbxsim(options))
