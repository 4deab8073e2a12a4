"""The one composition root: `create_app(settings)` wires every part into an aiohttp Application.

Nothing is created at import time. Each resource and background loop is a cleanup context,
started in dependency order and stopped in reverse:

  database   engine + repositories; migrations when reachable  (health: db)
  bus        in-process or Redis                           (health: bus)
  pipeline   CallTracker + AgentStateTracker, consumer, call-log writer, ticker
  hub        WebSocket fan-out from the bus
  agi        flow registry (hot reload) + IVR runner + FastAGI server
  emulator   only in the demo: the Asterisk emulator, its AGI pointed at our FastAGI port
  ami        AMI client feeding the pipeline               (health: ami)

Telephony fails open: the server starts, answers FastAGI and tracks calls whatever the state of
the database and Redis. A database that is down at start-up (or later) is retried in the
background with backoff (callcenter.db.availability). Meanwhile customer lookups fail open to
the normal priority; the call records and IVR steps of finished calls are held (bounded) and
written once it is back (migrations first); a callback request cannot be taken (the flow's
on_fail branch runs); /healthz reports db down with the reason; API calls and pages that need
it answer 503 `database_unavailable`. The bus drops messages while Redis is down and
resubscribes. The AMI client reconnects forever - except on refused credentials, which stop
the server with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcenter.agents.notifier import AgentNotifier
from callcenter.agents.service import AgentStateTracker
from callcenter.asterisk.agi import AgiServer
from callcenter.asterisk.ami import AmiClient
from callcenter.asterisk.errors import AmiConnectError, AmiError, AmiLoginError
from callcenter.asterisk.events import SUBSCRIBED_EVENTS, is_tracked_variable
from callcenter.bus.base import Bus
from callcenter.bus.factory import make_bus
from callcenter.bus.keys import AGENTS, CALLBACKS, CALLS, QUEUES, SYSTEM
from callcenter.calls.model import call_record_from_json, ivr_step_from_json
from callcenter.calls.notifier import CallNotifier
from callcenter.calls.repository import CallRepository
from callcenter.calls.service import CallTracker
from callcenter.config import Settings
from callcenter.console.notifier import SCREEN_POPS, console_runtime
from callcenter.customers.repository import (
    CustomerHistory,
    CustomerLookupAdapter,
    CustomerRepository,
)
from callcenter.db.availability import (
    Backoff,
    Database,
    DatabaseUnavailable,
    DeferredCallLog,
    DeferredIvrRecorder,
)
from callcenter.db.spool import Spool
from callcenter.ivr.runner import FLUSH_TIMEOUTS, IvrRunner
from callcenter.ivr.service import FlowRegistry
from callcenter.pipeline import EventPipeline, cancel_and_wait
from callcenter.tickets.notifier import TICKETS as TICKETS_CHANNEL
from callcenter.tickets.notifier import BreachChecker, TicketNotifier
from callcenter.tickets.repository import TicketRepository
from callcenter.users.repository import utc_now
from callcenter.web.api import PRINCIPAL
from callcenter.web.auth import auth_middleware, install_auth
from callcenter.web.hub import WebSocketHub
from callcenter.web.keys import (
    CALL_REPOSITORY,
    CLOCK,
    CUSTOMER_HISTORY,
    CUSTOMERS,
    HEALTH_CHECKS,
    HUB,
    LIVE_AGENTS,
    LIVE_CALLS,
    SETTINGS,
    TICKET_NOTIFIER,
    TICKETS,
    WEB_SESSIONS,
    Clock,
    ComponentHealth,
)
from callcenter.web.middlewares import error_middleware
from callcenter.web.routes import setup_routes

log = logging.getLogger(__name__)

DATABASE = web.AppKey("database", Database)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey[async_sessionmaker[AsyncSession]]("sessions")
# the pipeline's call log: holds finished calls while the database is down
CALL_LOG = web.AppKey("call_log", DeferredCallLog)
# the IVR's recorder: holds the steps of sessions that end while the database is down
IVR_RECORDER = web.AppKey("ivr_recorder", DeferredIvrRecorder)
BUS = web.AppKey[Bus]("bus")
CALL_TRACKER = web.AppKey("call_tracker", CallTracker)
AGENT_TRACKER = web.AppKey("agent_tracker", AgentStateTracker)
PIPELINE = web.AppKey("pipeline", EventPipeline)
FLOWS = web.AppKey("flows", FlowRegistry)
IVR = web.AppKey("ivr", IvrRunner)
AGI_SERVER = web.AppKey("agi_server", AgiServer)
AMI = web.AppKey("ami", AmiClient)
# set by the emulator context (demo): where the AMI client connects instead of settings
AMI_ADDRESS = web.AppKey[tuple[str, int]]("ami_address")
# resolves with a reason when the AMI client stopped for good (refused login): serve exits
AMI_FATAL = web.AppKey[asyncio.Future[str]]("ami_fatal")

HUB_CHANNELS = (CALLS, AGENTS, QUEUES, CALLBACKS, SYSTEM, TICKETS_CHANNEL)
# how often missed complaint deadlines are looked for (each breach is notified once)
BREACH_CHECK_SECONDS = 60.0


class EmbeddedPbx(Protocol):
    """An in-process PBX (the emulator) the app starts and stops itself (the demo)."""

    async def start(self) -> tuple[str, int]:
        """Start; returns the (host, port) of its AMI server."""

    async def stop(self) -> None: ...


# Called with our FastAGI server's (host, port) once it listens; returns the PBX to start.
PbxFactory = Callable[[str, int], EmbeddedPbx]


def create_app(
    settings: Settings,
    *,
    emulator: PbxFactory | None = None,
    clock: Clock | None = None,
    db_retry: Backoff | None = None,
) -> web.Application:
    """The whole server as an aiohttp Application (not started: run it with aiohttp's runners).

    `emulator` (the demo): builds an Asterisk emulator once our FastAGI server listens (its
    dialplan's AGI URL points there); the AMI client connects to the emulator's AMI server
    instead of settings.ami_host/ami_port.
    `clock`: "now" for the trackers and the IVR (default: the wall clock, UTC).
    `db_retry`: delays between attempts to reach the database (default: 0.5 s doubling to 30 s).
    """
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=64 * 1024
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or utc_now
    app[HEALTH_CHECKS] = {}
    app.cleanup_ctx.append(_database_context(db_retry or Backoff()))
    app.cleanup_ctx.append(_bus)
    app.cleanup_ctx.append(_pipeline)
    app.cleanup_ctx.append(_hub)
    app.cleanup_ctx.append(_console)
    app.cleanup_ctx.append(_agi)
    app.cleanup_ctx.append(_tickets)
    if emulator is not None:
        app.cleanup_ctx.append(_emulator_context(emulator))
    app.cleanup_ctx.append(_ami)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(_recheck_sockets)
    setup_routes(app)
    return app


# ------------------------------------------------------------------------------ contexts


def _database_context(retry: Backoff) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        log.info("database: %s", settings.database_url_display)
        # Nothing here connects: the repositories get a session factory that refuses at once
        # (DatabaseUnavailable) until `start()` has reached and migrated the database.
        database = Database(settings.database_url.get_secret_value(), retry=retry)
        sessions = database.sessions
        calls = CallRepository(
            session_factory=sessions, answer_target_seconds=settings.answer_target_seconds
        )
        spool_dir = settings.data_dir / "spool"  # what an outage holds survives a restart
        call_log = DeferredCallLog(
            call_log=calls,
            database=database,
            spool=Spool(spool_dir / "call_log.jsonl", decode=call_record_from_json),
        )
        ivr_recorder = DeferredIvrRecorder(
            recorder=calls,
            database=database,
            spool=Spool(spool_dir / "ivr_steps.jsonl", decode=ivr_step_from_json),
            # below the runner's own bound on a session's write, past which it drops the steps
            write_timeout=settings.lookup_timeout * (FLUSH_TIMEOUTS - 1),
        )
        app[DATABASE] = database
        app[ENGINE] = database.engine
        app[SESSIONS] = sessions
        app[CALL_REPOSITORY] = calls
        app[CALL_LOG] = call_log
        app[IVR_RECORDER] = ivr_recorder
        app[CUSTOMERS] = CustomerRepository(session_factory=sessions)
        install_auth(app, session_factory=sessions, settings=settings)
        web_sessions = app[WEB_SESSIONS]

        async def purge_sessions() -> None:
            await web_sessions.purge_expired()

        database.on_ready(purge_sessions)
        database.on_ready(call_log.flush)
        database.on_ready(ivr_recorder.flush)
        await database.start()  # migrations; if unreachable, retried in the background

        async def check() -> ComponentHealth:
            if database.available:
                await database.ping()
                return ComponentHealth(ok=True, detail=database.dialect)
            return ComponentHealth(
                ok=False, detail=f"unavailable: {database.reason}", info=database.status()
            )

        app[HEALTH_CHECKS]["db"] = check
        try:
            yield
        finally:
            await call_log.close()
            await ivr_recorder.close()
            await database.close()

    return context


async def _bus(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    bus = make_bus(redis_url)
    app[BUS] = bus
    log.info("bus: %s", "redis" if redis_url else "in-process")

    async def check() -> ComponentHealth:
        ping: Callable[[], Any] | None = getattr(bus, "ping", None)
        if ping is None:
            return ComponentHealth(ok=True, detail="in-process")
        ok = bool(await ping())
        return ComponentHealth(ok=ok, detail="redis" if ok else "redis unreachable")

    app[HEALTH_CHECKS]["bus"] = check
    try:
        yield
    finally:
        await bus.close()


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    calls = CallTracker(internal_contexts=app[SETTINGS].internal_contexts)
    agents = AgentStateTracker()
    pipeline = EventPipeline(
        calls=calls,
        agents=agents,
        call_publisher=CallNotifier(bus=app[BUS]),
        agent_publisher=AgentNotifier(bus=app[BUS]),
        call_log=app[CALL_LOG],
        clock=app[CLOCK],
        sweeper=_OpenCallSweeper(
            calls=app[CALL_REPOSITORY], held=app[CALL_LOG], database=app[DATABASE]
        ),
    )
    app[CALL_TRACKER] = calls
    app[AGENT_TRACKER] = agents
    app[LIVE_CALLS] = calls
    app[LIVE_AGENTS] = agents
    app[PIPELINE] = pipeline
    tasks = [
        asyncio.create_task(pipeline.run(), name="event-pipeline"),
        asyncio.create_task(pipeline.write(), name="call-log-writer"),
        asyncio.create_task(pipeline.ticker(), name="event-ticker"),
        asyncio.create_task(pipeline.sweep(), name="call-log-sweep"),
    ]
    try:
        yield
    finally:
        # let what was already received reach the call log before stopping
        try:
            async with asyncio.timeout(5):
                await pipeline.drain()
        except TimeoutError:
            log.warning("shutdown: %d events/records not processed in time", pipeline.pending)
        await cancel_and_wait(*tasks)
        # what the writer had not saved goes to the call log, whose close() writes or spools it
        unsaved = pipeline.take_unsaved()
        if unsaved:
            app[CALL_LOG].keep(unsaved)
            log.warning("shutdown: %d call records handed to the call log unsaved", len(unsaved))


class _OpenCallSweeper:
    """The pipeline's sweeper (calls left open in the call log, gone from the channel list):
    refused at once while the database is down; what the call log holds from an outage or an
    earlier run's spool is written first, so a record held open cannot reopen a row closed."""

    def __init__(self, *, calls: CallRepository, held: DeferredCallLog, database: Database) -> None:
        self._calls = calls
        self._held = held
        self._database = database

    async def close_open_calls(
        self, *, started_before: datetime, ended_at: datetime, keep: Callable[[str], bool]
    ) -> int:
        if not self._database.available:
            raise DatabaseUnavailable(f"database unavailable: {self._database.reason}")
        if self._held.held:
            await self._held.flush()
        return await self._calls.close_open_calls(
            started_before=started_before, ended_at=ended_at, keep=keep
        )


async def _hub(app: web.Application) -> AsyncIterator[None]:
    hub = WebSocketHub(bus=app[BUS], channels=HUB_CHANNELS)
    app[HUB] = hub
    task = asyncio.create_task(hub.run(), name="websocket-hub")
    try:
        async with asyncio.timeout(10):
            await hub.wait_subscribed()
    except TimeoutError:
        log.warning("websocket hub: bus subscription not ready yet; it keeps retrying")
    try:
        yield
    finally:
        await hub.close()
        await cancel_and_wait(task)


async def _close_websockets(app: web.Application) -> None:
    # on_shutdown runs before the server waits for open requests: close WebSockets here; both
    # closes are bounded (a client that stopped reading is aborted), so shutdown goes on
    closes = [app[HUB].close()] if HUB in app else []
    if SCREEN_POPS in app:
        closes.append(app[SCREEN_POPS].close())
    await asyncio.gather(*closes)


# requests that may end sessions (sign-in/out, password, disabled user, revoked token)
_SESSION_CHANGING = ("/api/v1/auth/", "/api/v1/me", "/api/v1/users", "/login", "/logout")


async def _recheck_sockets(request: web.Request, response: web.StreamResponse) -> None:
    """After a request that may have ended sessions, the open WebSockets of that user check
    theirs at once (other processes' sockets notice at their next periodic check)."""
    if request.method in ("GET", "HEAD", "OPTIONS") or not request.path.startswith(
        _SESSION_CHANGING
    ):
        return
    target = request.match_info.get("user_id", "")
    principal = request.get(PRINCIPAL)
    user_id = int(target) if target.isdigit() else principal.user_id if principal else None
    if user_id is None:
        return
    app = request.app
    if HUB in app:
        app[HUB].recheck.poke(user_id)
    if SCREEN_POPS in app:
        app[SCREEN_POPS].recheck.poke(user_id)


async def _console(app: web.Application) -> AsyncIterator[None]:
    # screen-pops (agent console): subscribed before the AMI client starts, so none is missed
    settings = app[SETTINGS]
    async with console_runtime(
        app,
        bus=app[BUS],
        sessions=app[SESSIONS],
        calls=app[CALL_REPOSITORY],
        ami=lambda: app.get(AMI),
        clock=app[CLOCK],
        default_queues=(settings.default_queue,),
        history=lambda: app.get(CUSTOMER_HISTORY),
        lookup_timeout=settings.lookup_timeout,
        recorder=app[IVR_RECORDER],  # its writes announce the IVR steps to the pops
    ):
        yield


async def _agi(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    flows = FlowRegistry(directory=settings.flows_dir, fallback_timezone=settings.timezone)
    flows.start()
    if not flows.names():
        log.error(
            "no valid IVR flow in %s: callers get the dialplan's fallback queue "
            "(run `callcenter flows check`)",
            settings.flows_dir,
        )
    runner = IvrRunner(
        flows=flows,
        customers=CustomerLookupAdapter(repository=app[CUSTOMERS]),
        recorder=app[IVR_RECORDER],
        calendar=None,
        clock=app[CLOCK],
        lookup_timeout=settings.lookup_timeout,
        default_queue=settings.default_queue,
        operator_queue=settings.operator_queue,
    )
    server = AgiServer(
        router=runner,
        operator_queue=settings.operator_queue,
        host=settings.agi_host,
        port=settings.agi_port,
    )
    await server.start()
    app[FLOWS] = flows
    app[IVR] = runner
    app[AGI_SERVER] = server
    try:
        yield
    finally:
        await server.close()
        await flows.stop()


async def _tickets(app: web.Application) -> AsyncIterator[None]:
    # customer archive + bookings/complaints; deadlines use the flows' (hot-reloaded) calendar
    flows = app[FLOWS]
    customers = app[CUSTOMERS]
    tickets = TicketRepository(
        session_factory=app[SESSIONS], calendar=lambda: flows.calendar, clock=app[CLOCK]
    )
    notifier = TicketNotifier(bus=app[BUS])
    app[TICKETS] = tickets
    app[TICKET_NOTIFIER] = notifier
    app[CUSTOMER_HISTORY] = CustomerHistory(
        customers=customers,
        calls=app[CALL_REPOSITORY],
        tickets=tickets,
        session_factory=app[SESSIONS],
    )
    checker = BreachChecker(source=tickets, notifier=notifier, interval=BREACH_CHECK_SECONDS)
    database = app[DATABASE]

    async def check_breaches() -> None:
        await database.wait_until_ready()  # nothing to check before the tables exist
        await checker.run()

    task = asyncio.create_task(check_breaches(), name="complaint-breach-checker")
    try:
        yield
    finally:
        await cancel_and_wait(task)


def _emulator_context(
    factory: PbxFactory,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        agi_host = app[SETTINGS].agi_host
        pbx = factory(
            agi_host if agi_host not in ("", "0.0.0.0", "::") else "127.0.0.1", app[AGI_SERVER].port
        )
        app[AMI_ADDRESS] = await pbx.start()
        log.info("emulator: AMI on %s:%s", *app[AMI_ADDRESS])
        try:
            yield
        finally:
            await pbx.stop()

    return context


async def _ami(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pipeline = app[PIPELINE]
    bus = app[BUS]
    host, port = app.get(AMI_ADDRESS, (settings.ami_host, settings.ami_port))
    fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    app[AMI_FATAL] = fatal

    async def connected() -> None:
        log.info("AMI: logged in to %s:%s as %s", host, port, settings.ami_username)
        await bus.publish(SYSTEM, {"type": "ami.connected", "host": host, "port": port})

    async def disconnected(reason: AmiError) -> None:
        await bus.publish(SYSTEM, {"type": "ami.disconnected", "reason": reason.code})
        if isinstance(reason, AmiLoginError) and not fatal.done():
            fatal.set_result(f"AMI login refused for user {settings.ami_username!r}: {reason}")

    def make_client() -> AmiClient:
        return AmiClient.from_settings(
            settings,
            address=(host, port),
            on_message=pipeline.feed,
            on_messages=pipeline.feed_many,
            only_events=SUBSCRIBED_EVENTS,
            only_variables=is_tracked_variable,
            on_resync=pipeline.resync,
            on_connected=connected,
            on_disconnected=disconnected,
        )

    # First attempt in the foreground, so refused credentials stop start-up with a clear error
    # (AmiLoginError propagates). An unreachable Asterisk is not fatal: keep trying behind.
    client = make_client()
    try:
        async with asyncio.timeout(settings.ami_action_timeout * 2):
            await client.start(wait=True)
    except (AmiConnectError, TimeoutError) as exc:
        log.warning(
            "AMI: Asterisk not reachable at %s:%s (%s); starting anyway, reconnecting in the "
            "background",
            host,
            port,
            exc or "timeout",
        )
        client = make_client()
        await client.start(wait=False)
    app[AMI] = client

    async def check() -> ComponentHealth:
        stats = client.stats()
        return ComponentHealth(
            ok=client.connected,
            detail=client.state if client.failure is None else str(client.failure),
            info={"host": host, "port": port, "reconnects": stats.reconnects},
        )

    app[HEALTH_CHECKS]["ami"] = check
    try:
        yield
    finally:
        await client.close()


# ------------------------------------------------------------------------------ running


async def start_site(runner: web.AppRunner, host: str, port: int) -> int:
    """Start listening; returns the bound port (useful with port 0)."""
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    return int(addresses[-1][1]) if addresses else port


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def serve(settings: Settings) -> int:
    """`callcenter serve`: run until SIGINT/SIGTERM (0) or a fatal AMI error (1)."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()
    except AmiLoginError as exc:
        log.error(
            "AMI login refused for user %r at %s:%s: %s - check CALLCENTER_AMI_USERNAME and "
            "CALLCENTER_AMI_SECRET against manager.conf",
            settings.ami_username,
            settings.ami_host,
            settings.ami_port,
            exc,
        )
        await runner.cleanup()
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    try:
        port = await start_site(runner, settings.web_host, settings.web_port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.web_host, settings.web_port, exc)
        await runner.cleanup()
        return 1
    log.info("web: http://%s:%s/", settings.web_host, port)
    # start-up objects (modules, flows, the app) are never garbage: out of every collection
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    install_stop_signals(stop)
    fatal = app[AMI_FATAL]
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([stopper, fatal], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        log.info("shutting down")
        await runner.cleanup()
    if fatal.done() and not fatal.cancelled():
        log.error("stopped: %s", fatal.result())
        return 1
    return 0
