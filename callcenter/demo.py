"""`callcenter demo` and `callcenter pbxsim`: the whole server against the built-in emulator.

The demo runs the real server (`create_app`) with a SQLite call log, the in-process bus, our
FastAGI server and the emulator's AMI server on ephemeral loopback ports, and a stream of
simulated callers. Its summary (`--exit`) is computed from OUR call log in the database - the
point is to show that the server tracked every call - never from the emulator's counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from aiohttp import web

from callcenter.app import AGENT_TRACKER, CALL_TRACKER, PIPELINE, SESSIONS, create_app, start_site
from callcenter.app import install_stop_signals as _install_stop_signals
from callcenter.calls.model import CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.config import Settings
from callcenter.db.engine import create_engine, create_session_factory
from callcenter.db.migrate import upgrade_database
from callcenter.db.seed import DEMO_AGENTS, DEMO_QUEUES, seed_demo_data
from callcenter.ivr.calendar import BusinessCalendar, always_open
from callcenter.ivr.loader import CALENDAR_FILE, FlowLoadError, load_calendar
from callcenter.ivr.model import is_dtmf_key
from callcenter.pbxsim.agi_client import AgiUrl
from callcenter.pbxsim.callers import CallerMix
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig
from callcenter.pbxsim.pbx import RealClock
from callcenter.pbxsim.queues import AgentProfile, QueueConfig
from callcenter.pbxsim.traffic import TrafficGenerator, run_calls
from callcenter.web.keys import CALL_REPOSITORY

log = logging.getLogger(__name__)

# Load: eight agents talking ~2 minutes each take about 4 calls a minute.
DEMO_RATE_PER_MINUTE = 3.0  # simulated calls per simulated minute in the endless demo
DEMO_INTERVAL = 12.0  # simulated seconds between call arrivals with --calls
DEMO_CONCURRENCY = 25  # at most this many simulated calls at once with --calls
PAGE = 500
REPO_FLOWS = Path(__file__).resolve().parents[1] / "ivr_flows"
SETTLE_TIMEOUT = 60.0  # real seconds to wait for the last events after the last call ended


@dataclass(frozen=True, slots=True)
class DemoOptions:
    calls: int | None = None
    exit_when_done: bool = False
    json_output: bool = False
    speed: float = 1.0
    web: bool = True
    web_port: int | None = None
    database_url: str | None = None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class PbxsimOptions:
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    agi_url: str = "agi://127.0.0.1:4573/hotline"
    username: str = "callcenter"
    secret: str = "callcenter"
    calls: int | None = None
    speed: float = 1.0
    seed: int = 0
    recordings: Path | None = None
    channelvars: tuple[str, ...] = ()  # manager.conf channelvars


class DemoIncomplete(RuntimeError):
    """The call log did not account for every simulated call."""


# ------------------------------------------------------------------------------ emulator setup


def demo_settings(settings: Settings, options: DemoOptions) -> Settings:
    """The demo's settings: loopback, ephemeral FastAGI port, SQLite unless told otherwise."""
    url = options.database_url or settings.database_url.get_secret_value()
    update: dict[str, Any] = {
        "database_url": url,
        "redis_url": None,
        "agi_host": "127.0.0.1",
        "agi_port": 0,
        "ami_username": "callcenter",
        "ami_secret": secrets.token_hex(16),
        "ami_reconnect_min": 0.2,
        "ami_reconnect_max": 2.0,
    }
    if options.web_port is not None:
        update["web_port"] = options.web_port
    if not Path(settings.flows_dir).is_dir() and REPO_FLOWS.is_dir():
        update["flows_dir"] = REPO_FLOWS  # `callcenter demo` run outside the checkout
    return Settings.model_validate({**settings.model_dump(), **update})


def emulator_config(
    settings: Settings, *, agi_host: str, agi_port: int, speed: float, seed: int
) -> EmulatorConfig:
    """The emulated PBX of the demo: the queues and agents of the demo data, recordings on."""
    members: dict[str, list[str]] = {q.name: [] for q in DEMO_QUEUES}
    for agent in DEMO_AGENTS:
        queues = {agent.group, settings.operator_queue}
        if "all-round" in agent.skills:  # all-round agents also take the general queue
            queues.add(settings.default_queue)
        for queue in sorted(queues):
            members.setdefault(queue, []).append(agent.interface)
    return EmulatorConfig(
        ami_users={settings.ami_username: settings.ami_secret.get_secret_value()},
        agi_host=agi_host,
        agi_port=agi_port,
        agi_script="hotline",
        default_queue=settings.default_queue,
        queues=[
            QueueConfig(q.name, strategy="ringall" if q.strategy == "ringall" else "rrmemory")
            for q in DEMO_QUEUES
        ],
        agents=[
            AgentProfile(
                a.interface,
                a.name,
                voice="en" if a.name.isascii() else "zh",
                greeting="Hello, how can I help you?"
                if a.name.isascii()
                else "您好，请问有什么可以帮您",
                goodbye="Goodbye" if a.name.isascii() else "再见",
            )
            for a in DEMO_AGENTS
        ],
        members=members,
        speed=speed,
        seed=seed,
        recordings_dir=settings.recordings_dir,
        tz=ZoneInfo(settings.timezone),
    )


def open_moment(calendar: BusinessCalendar, now: datetime, zone: ZoneInfo) -> datetime:
    """`now` if the hotline is open then, else 10:00 local on the next open day (so the demo's
    callers reach the menu rather than the after-hours message)."""
    if calendar.is_open(now):
        return now
    today = now.astimezone(zone).date()
    for offset in range(1, 60):
        day: date = today + timedelta(days=offset)
        candidate = datetime.combine(day, time(10, 0), tzinfo=zone)
        if calendar.is_open(candidate):
            return candidate
    return now


async def latest_call_start(settings: Settings) -> datetime | None:
    """When the newest call in the log started (None for an empty log); migrates first."""
    url = settings.database_url.get_secret_value()
    await upgrade_database(url)
    engine = create_engine(url)
    try:
        repo = CallRepository(session_factory=create_session_factory(engine))
        newest = await repo.list_calls(limit=1)
    finally:
        await engine.dispose()
    return newest[0].started_at if newest else None  # aware: the column type sees to it


def _calendar(settings: Settings) -> BusinessCalendar:
    path = Path(settings.flows_dir) / CALENDAR_FILE
    try:
        return load_calendar(path) if path.is_file() else always_open(settings.timezone)
    except FlowLoadError:
        return always_open(settings.timezone)


# ------------------------------------------------------------------------------ the demo


async def demo(settings: Settings, options: DemoOptions, *, out: TextIO) -> int:
    settings = demo_settings(settings, options)
    zone = ZoneInfo(settings.timezone)
    # The emulated clock starts when the hotline is open, and after every call already in the
    # log: a second demo run on the same database must not reuse the first run's times (nor
    # its Uniqueids, which the emulator derives from the clock).
    latest = await latest_call_start(settings)
    not_before = max(datetime.now(UTC), latest + timedelta(minutes=10)) if latest else None
    start = open_moment(_calendar(settings), not_before or datetime.now(UTC), zone)
    clock = RealClock(speed=options.speed, start=start.timestamp())
    emulators: list[Emulator] = []

    def now() -> datetime:
        return datetime.fromtimestamp(clock.time(), UTC)

    def make_emulator(agi_host: str, agi_port: int) -> Emulator:
        cfg = emulator_config(
            settings, agi_host=agi_host, agi_port=agi_port, speed=options.speed, seed=options.seed
        )
        emu = Emulator(config=cfg, clock=clock)
        emulators.append(emu)
        return emu

    app = create_app(settings, emulator=make_emulator, clock=now)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await seed_demo_data(app[SESSIONS])
        if options.web:
            try:
                port = await start_site(runner, settings.web_host, settings.web_port)
            except OSError as exc:
                log.error(
                    "demo: cannot listen on %s:%s (%s); try --port",
                    settings.web_host,
                    settings.web_port,
                    exc,
                )
                return 1
            log.info("demo: live page on http://%s:%s/", settings.web_host, port)
            if not options.json_output:
                print(f"callcenter demo: live page on http://{settings.web_host}:{port}/", file=out)
        emu = emulators[0]
        log.info(
            "demo: %s, speed x%g, emulated clock starts %s",
            settings.database_url_display,
            options.speed,
            start.astimezone(zone).isoformat(timespec="minutes"),
        )
        stop = asyncio.Event()
        _install_stop_signals(stop)
        if options.calls is not None:
            t0 = now()
            calls = asyncio.ensure_future(
                run_calls(
                    emu,
                    options.calls,
                    seed=options.seed,
                    mix=CallerMix(menu_keys="1234"),
                    concurrency=DEMO_CONCURRENCY,
                    interval=DEMO_INTERVAL,
                )
            )
            if not await _until_done_or_stopped(calls, stop):
                return 130
            await emu.wait_recordings()
            await settle(app, expected=options.calls, since=t0)
            if options.exit_when_done:
                summary = await demo_summary(app, since=t0, until=now(), settings=settings)
                print(_render(summary, as_json=options.json_output), file=out)
                return 0
            log.info("demo: %d calls done; the page stays up until Ctrl-C", options.calls)
            await stop.wait()
            return 0
        traffic = TrafficGenerator(
            emu,
            rate_per_minute=DEMO_RATE_PER_MINUTE,
            seed=options.seed,
            mix=CallerMix(menu_keys="1234"),
        )
        traffic.start()
        try:
            await stop.wait()
        finally:
            await traffic.stop()
        return 0
    except DemoIncomplete as exc:
        log.error("demo: %s", exc)
        return 1
    finally:
        await runner.cleanup()


async def _until_done_or_stopped(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for `work`; False (and `work` cancelled) if `stop` is set first."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not work.done():
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return False
    work.result()  # re-raise what went wrong
    return True


async def settle(app: web.Application, *, expected: int, since: datetime) -> None:
    """Wait until the call log holds `expected` ended calls started since `since` and nothing is
    in flight (events travel emulator -> AMI socket -> client -> pipeline -> database)."""
    repo = app[CALL_REPOSITORY]
    pipeline = app[PIPELINE]
    tracker = app[CALL_TRACKER]
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while True:
                await pipeline.drain()
                logged = await repo.count_calls(since=since - timedelta(seconds=1))
                if logged >= expected and len(tracker) == 0 and pipeline.pending == 0:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise DemoIncomplete(
            f"after {SETTLE_TIMEOUT:g}s the call log has {await repo.count_calls(since=since)} "
            f"of {expected} calls and {len(tracker)} still in progress"
        ) from None


async def demo_summary(
    app: web.Application, *, since: datetime, until: datetime, settings: Settings
) -> dict[str, Any]:
    """The demo's figures, from the call log in the database."""
    repo = app[CALL_REPOSITORY]
    s = await repo.summary(since - timedelta(seconds=1), until + timedelta(seconds=1))
    calls = await _all_calls(repo, since=since - timedelta(seconds=1))
    recordings_dir = Path(settings.recordings_dir)
    files = [c.recording_file for c in calls if c.recording_file]
    on_disk = sum(1 for f in files if (recordings_dir / Path(f).name).is_file())
    target = settings.answer_target_seconds
    agents_now = app[AGENT_TRACKER].agents()
    return {
        "calls": s["calls"],
        "answered": s["answered"],
        "abandoned": s["abandoned"],
        "abandoned_in_ivr": s["abandoned_in_ivr"],
        "abandoned_in_queue": s["abandoned_in_queue"],
        "ivr_choices": _ivr_choices(calls),
        "queued": s["queued"],
        "recordings": s["recordings"],
        "recording_files": on_disk,
        f"answered_within_{target}s": s["answered_within_target"],
        "service_level": _round(s["service_level"]),
        "avg_wait": _round(s["avg_wait_seconds"]),
        "avg_talk": _round(s["avg_talk_seconds"]),
        "callbacks": s["callbacks"],
        "by_queue": {
            q: {k: _round(v) if isinstance(v, float) else v for k, v in stats.items()}
            for q, stats in sorted(s["by_queue"].items())
        },
        "by_agent": dict(sorted(s["by_agent"].items())),
        "agents": len(agents_now),
        "database": settings.database_url_display,
        "recordings_dir": str(recordings_dir),
    }


async def _all_calls(repo: CallRepository, *, since: datetime) -> list[CallRecord]:
    calls: list[CallRecord] = []
    while True:
        page = await repo.list_calls(since=since, limit=PAGE, offset=len(calls))
        calls.extend(page)
        if len(page) < PAGE:
            return calls


def _ivr_choices(calls: list[CallRecord]) -> dict[str, int]:
    """Menu choices per call: the IVR_CHOICE the tracker recorded, else the last key in the
    call's IVR path (CALLCENTER_IVR_PATH), as the call log holds them."""
    counts: Counter[str] = Counter()
    for call in calls:
        choice = call.ivr_choice
        if choice is None:
            keys = [step for step in call.ivr_path if is_dtmf_key(step)]
            choice = keys[-1] if keys else None
        if choice is not None:
            counts[choice] += 1
    return dict(sorted(counts.items()))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _render(summary: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(summary, ensure_ascii=False, sort_keys=False)
    within = next(k for k in summary if k.startswith("answered_within_"))
    lines = [
        f"calls:      {summary['calls']}",
        f"answered:   {summary['answered']} (within "
        f"{within.removeprefix('answered_within_').removesuffix('s')} s: {summary[within]})",
        f"abandoned:  {summary['abandoned']} (in IVR {summary['abandoned_in_ivr']}, in queue "
        f"{summary['abandoned_in_queue']})",
        f"avg wait:   {summary['avg_wait']} s, avg talk {summary['avg_talk']} s",
        f"recordings: {summary['recordings']} ({summary['recording_files']} files in "
        f"{summary['recordings_dir']})",
        "IVR choices: "
        + (", ".join(f"{k}={v}" for k, v in summary["ivr_choices"].items()) or "none"),
        "by queue:   "
        + (
            ", ".join(f"{q} {v['answered']}/{v['calls']}" for q, v in summary["by_queue"].items())
            or "none"
        ),
        f"call log:   {summary['database']}",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ pbxsim


async def pbxsim(options: PbxsimOptions, *, out: TextIO | None = None) -> int:
    """The emulator alone: an AMI server for any client, its dialplan calling `agi_url`."""
    out = out or sys.stdout
    url = AgiUrl.parse(options.agi_url)
    # the hotline's queues and agents, as in the demo, so `callcenter serve` can pair with it
    settings = Settings(
        ami_username=options.username,
        ami_secret=options.secret,
        recordings_dir=options.recordings or Path("recordings"),
    )
    cfg = emulator_config(
        settings, agi_host=url.host, agi_port=url.port, speed=options.speed, seed=options.seed
    )
    cfg.ami_host = options.ami_host
    cfg.ami_port = options.ami_port
    cfg.agi_script = url.script or "hotline"
    cfg.channelvars = options.channelvars
    if options.recordings is None:
        cfg.recordings_dir = None
    async with Emulator(config=cfg) as emu:
        host, port = emu.ami_address
        print(
            f"pbxsim: AMI on {host}:{port} (user {options.username}), "
            f"dialplan AGI {options.agi_url}",
            file=out,
        )
        if options.calls is not None:
            print(await run_calls(emu, options.calls, seed=options.seed), file=out)
            return 0
        stop = asyncio.Event()
        _install_stop_signals(stop)
        traffic = TrafficGenerator(emu, rate_per_minute=DEMO_RATE_PER_MINUTE, seed=options.seed)
        traffic.start()
        try:
            await stop.wait()
        finally:
            await traffic.stop()
    return 0
