"""The database as the running server sees it: up or down, and brought up in the background.

Telephony fails open, so the server starts and routes callers whether or not the database is
reachable. `Database` holds the engine and a session factory (neither connects when created);
`start()` makes one attempt in the foreground (migrations, then the `on_ready` hooks) and, when
the database is unreachable, keeps retrying in the background with capped exponential backoff
and jitter, logging each change of state once (not each try). Migrations run until they succeed
once; after an outage later on, a `SELECT 1` is enough.

While the database is down (or not migrated yet), the session factory refuses at once with
`DatabaseUnavailable` instead of trying to connect: the IVR's lookups fail open immediately and
the web API answers 503 `database_unavailable` (callcenter.web.middlewares). A failure noticed
at run time (`mark_down`, from the health check or a write) switches back to retrying.

`DeferredCallLog` and `DeferredIvrRecorder` hold the call records and IVR steps of calls that
end during an outage (bounded; the latest record of each call) and write them when the database
is back (a `HeldWrites` each); what comes in behind a write in progress is queued the same way
and written in batches as soon as that write is done. With a `Spool` what they hold during an
outage is on disk too, so a server stopped during an outage writes it at its next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcenter.calls.model import CallbackRequest, CallRecord, IvrStep
from callcenter.db.engine import create_engine
from callcenter.db.migrate import upgrade_database
from callcenter.db.spool import Spool
from callcenter.ivr.model import IvrRecorder

__all__ = [
    "Backoff",
    "Database",
    "DatabaseUnavailable",
    "DeferredCallLog",
    "DeferredIvrRecorder",
    "GatedSessionFactory",
    "HeldWrites",
    "is_database_down",
]

log = logging.getLogger(__name__)

ReadyHook = Callable[[], Awaitable[None]]
K = TypeVar("K")
T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database is down or not migrated yet; the same request may work later."""


def _driver_connection_errors() -> tuple[type[BaseException], ...]:
    try:
        from asyncpg import exceptions as pg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return ()
    return (pg.PostgresConnectionError, pg.CannotConnectNowError)


# What an unreachable, restarting or unopenable database raises through SQLAlchemy: asyncpg's
# connect errors come through unwrapped (OSError, its own classes), SQLite's as OperationalError.
_DOWN: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    *_driver_connection_errors(),
)
# OSErrors that only a network peer produces (a plain OSError may be a file, say a recording)
_NETWORK_DOWN = (ConnectionError, socket.gaierror)


def is_database_down(exc: BaseException, *, strict: bool = False) -> bool:
    """True if `exc` says the database cannot be reached (rather than a bad query). Any
    OSError counts (TimeoutError too) unless `strict`: for code that did other I/O as well,
    only refused/reset connections and name lookups do."""
    if isinstance(exc, _DOWN):
        return True
    if isinstance(exc, OSError):
        return not strict or isinstance(exc, _NETWORK_DOWN)
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays: uniform in [cap/2, cap], cap = min(maximum, initial * 2**attempt)."""

    initial: float = 0.5
    maximum: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("need 0 < initial <= maximum")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        cap = min(self.maximum, self.initial * (2.0 ** min(attempt, 60)))
        return cap / 2.0 + rand() * cap / 2.0


class _Gate(Protocol):
    @property
    def available(self) -> bool: ...

    @property
    def reason(self) -> str: ...


class GatedSessionFactory(async_sessionmaker[AsyncSession]):
    """An async_sessionmaker that raises DatabaseUnavailable while the gate is closed, so
    callers fail fast instead of each trying (and waiting) to connect."""

    def __init__(self, engine: AsyncEngine, *, gate: _Gate) -> None:
        super().__init__(engine, expire_on_commit=False)
        self._gate = gate

    def __call__(self, **local_kw: Any) -> AsyncSession:
        if not self._gate.available:
            raise DatabaseUnavailable(f"database unavailable: {self._gate.reason}")
        return super().__call__(**local_kw)


class Database:
    """Engine + session factory + availability. Start with `start()`, stop with `close()`."""

    def __init__(
        self,
        url: str | URL,
        *,
        retry: Backoff | None = None,
        migrate: Callable[[str | URL], Awaitable[None]] = upgrade_database,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`migrate` brings the schema up to date (default: the Alembic migrations)."""
        self._url = url
        self._retry = retry or Backoff()
        self._migrate = migrate
        self._rand = rand
        self.engine = create_engine(url)
        self.sessions = GatedSessionFactory(self.engine, gate=self)
        self._available = False
        self._reason = "not started"
        self._down_since: float | None = None
        self._migrated = False
        self._hooks: list[ReadyHook] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.attempts = 0  # failed attempts since the database was last available
        self.outages = 0

    @property
    def available(self) -> bool:
        return self._available

    @property
    def reason(self) -> str:
        """Why the database is unavailable ("" when it is available)."""
        return "" if self._available else self._reason

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def on_ready(self, hook: ReadyHook) -> None:
        """Run `hook` each time the database becomes available (after the migrations)."""
        self._hooks.append(hook)

    async def start(self) -> bool:
        """One attempt now; on failure, log it and keep retrying in the background. Returns
        whether the database is available."""
        try:
            await self._attempt()
        except Exception as exc:
            if not is_database_down(exc):
                log.exception("database: start-up failed")
            self._went_down(exc, at_start=True)
            return False
        return self._available

    async def wait_until_ready(self) -> None:
        """Wait until the database is available (migrated, hooks run)."""
        while not self._available:
            self._ready.clear()
            await self._ready.wait()

    def mark_down(self, exc: BaseException) -> None:
        """A use of the database failed because it is unreachable: retry in the background."""
        if self._available and not self._closed:
            self._went_down(exc, at_start=False)

    async def ping(self) -> None:
        """SELECT 1 now (for the health check); a failure marks the database down and raises."""
        if not self._available:
            raise DatabaseUnavailable(self._reason)
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            if is_database_down(exc):
                self.mark_down(exc)
            raise

    def status(self) -> dict[str, Any]:
        """For the health check's info."""
        info: dict[str, Any] = {"dialect": self.dialect, "outages": self.outages}
        if not self._available:
            info["attempts"] = self.attempts
            if self._down_since is not None:
                info["down_seconds"] = round(time.monotonic() - self._down_since, 1)
        return info

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engine.dispose()

    # -- internals -------------------------------------------------------------------------------

    async def _attempt(self) -> None:
        if not self._migrated:
            await self._migrate(self._url)
            self._migrated = True
        else:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        # a pooled connection from before the outage is dead; start afresh
        await self.engine.dispose()
        self._available = True
        self._reason = ""
        for hook in self._hooks:
            try:
                await hook()
            except Exception as exc:
                if is_database_down(exc) or not self._available:
                    self._available = False
                    raise
                log.exception("database: a start-up task failed (the database is up)")
        if self._available:
            self._ready.set()

    def _went_down(self, exc: BaseException, *, at_start: bool) -> None:
        was_known = not self._available and self._down_since is not None
        self._available = False
        self._reason = _describe(exc, migrated=self._migrated)
        if not was_known:
            self._down_since = time.monotonic()
            self.outages += 1
            self.attempts = 1
            if at_start:
                log.warning(
                    "database unavailable at start-up (%s); starting anyway: callers are "
                    "routed, call records are held, the web API answers 503; retrying in the "
                    "background",
                    self._reason,
                )
            else:
                log.warning("database unavailable (%s); retrying in the background", self._reason)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._retry_loop(), name="database-retry"
            )

    async def _retry_loop(self) -> None:
        last_kind = self._reason.split(":", 1)[0]
        while not self._closed:
            await asyncio.sleep(self._retry.delay(self.attempts - 1, self._rand))
            try:
                await self._attempt()
            except Exception as exc:
                self.attempts += 1
                self._available = False
                self._reason = _describe(exc, migrated=self._migrated)
                kind = self._reason.split(":", 1)[0]
                if kind != last_kind:  # a different failure (say refused -> bad password)
                    log.warning(
                        "database still unavailable, now: %s",
                        self._reason,
                        exc_info=None if is_database_down(exc) else exc,
                    )
                    last_kind = kind
                else:
                    log.debug("database: attempt %d failed: %s", self.attempts, self._reason)
                continue
            if self._available:
                down = time.monotonic() - (self._down_since or time.monotonic())
                log.info("database available again after %.1fs (%d attempts)", down, self.attempts)
                self._down_since = None
                self.attempts = 0
                return


def _describe(exc: BaseException, *, migrated: bool) -> str:
    """One line: what failed. Connection errors name their kind; others say they are not."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc) or "unavailable"
    inner: BaseException = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
    text_ = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    detail = f"{type(inner).__name__}: {text_}" if text_ else type(inner).__name__
    if is_database_down(exc) or is_database_down(inner):
        return detail
    step = "check" if migrated else "migration"
    return f"{step} failed: {detail}"


class Availability(Protocol):
    """What the held writers need of Database."""

    @property
    def available(self) -> bool: ...

    def mark_down(self, exc: BaseException) -> None: ...


class HeldWrites(Generic[K, T]):
    """Idempotent writes (upserts, insert-or-ignore) that wait for the database.

    A write while the database is unavailable, or one that fails because it is unreachable
    (which marks it down), is held: one item per `key` (a newer one replaces the older in its
    place in line), at most `limit` (beyond that an item is dropped with an error log).
    `flush()` (an `on_ready` hook) writes the held items oldest first, in batches, and any
    write that comes in meanwhile queues behind them. A write that comes in while the database
    is up but another write or a flush is in progress (sessions ending together) is queued the
    same way, without waiting, and a flush of its own writes the queue in batches once the
    write in progress is done. Other errors (a bad item) propagate to the writer as before; in
    a flush, the batch is retried item by item and only the bad item is dropped. With a
    `spool`, items held while the database is down are appended to its file as well (what was
    queued while it was up goes in too once it is down, or at shutdown), the items found there
    at start are held (to be written by the first flush), and the file is removed once a flush
    has written everything; the writes being idempotent, an item written but still in the file
    is merely written again.
    """

    def __init__(
        self,
        *,
        write: Callable[[Sequence[T]], Awaitable[None]],
        key: Callable[[T], K],
        database: Availability,
        what: str,
        limit: int,
        batch: int = 1000,
        write_timeout: float = 5.0,
        spool: Spool[T] | None = None,
    ) -> None:
        """`what` names the items in log lines. `write_timeout` bounds a direct write, so a
        hanging database means "held" rather than the caller's own timeout dropping them."""
        if limit < 1 or batch < 1:
            raise ValueError("limit and batch must be at least 1")
        self._spool = spool
        # something held is not in the spool (a write to it failed, or it was queued while the
        # database was up): the next spool write rewrites the whole file
        self._spool_partial = False
        self._flusher: asyncio.Task[None] | None = None
        self._write = write
        self._key = key
        self._database = database
        self._what = what
        self._limit = limit
        self._batch = batch
        self._write_timeout = write_timeout
        self._held: dict[K, T] = {}
        self._lock = asyncio.Lock()
        self.dropped = 0
        self.deferred = 0  # items held at some point
        self.flushed = 0
        if spool is not None:
            found = spool.load()
            self._hold(found)
            if found:
                log.warning(
                    "%s: %d held in %s by an earlier run; written once the database is up",
                    what,
                    len(self._held),
                    spool.path,
                )

    @property
    def held(self) -> int:
        return len(self._held)

    async def submit(self, items: Sequence[T]) -> None:
        # never wait behind a flush: the caller's own timeout would drop the items
        if self._held or not self._database.available or self._lock.locked():
            held = self._hold(items)
            if self._database.available:  # behind a write or a flush in progress
                if held and self._spool is not None:
                    self._spool_partial = True
                self._flush_soon()
            else:
                await self._spool_held(held)
            return
        async with self._lock:
            try:
                async with asyncio.timeout(self._write_timeout):
                    await self._write(items)
            except asyncio.CancelledError:
                # the writer is stopping (server shutdown) or gave up waiting: whether or not
                # the write got through, the items are kept for close() or the next flush
                self.keep(items)
                self._flush_soon()
                raise
            except Exception as exc:
                if not is_database_down(exc):
                    raise
                self._database.mark_down(exc)
                held = self._hold(items)
            else:
                return
        await self._spool_held(held)

    def keep(self, items: Sequence[T]) -> None:
        """Hold `items` without writing them now (what a stopping writer could not hand over
        in time): the next flush writes them, or `close()` does (or spools them)."""
        if self._hold(items) and self._spool is not None:
            self._spool_partial = True

    async def flush(self) -> None:
        """Write what is held, oldest first; on a connection failure keep the rest held and
        raise (the database is retried)."""
        async with self._lock:
            # each batch bounded: a database that hangs right after coming back is down again
            total = await self._write_held(batch_timeout=self._write_timeout)
            if total:
                log.info("%s: %d held during the outage written", self._what, total)

    async def _write_held(self, *, batch_timeout: float | None) -> int:
        """With the lock: `flush()`'s writes, each batch within `batch_timeout` (which counts as
        the database being down). Returns how many items were held at the start."""
        total = len(self._held)
        while self._held:
            batch = list(self._held.values())[: self._batch]
            try:
                async with asyncio.timeout(batch_timeout):
                    await self._write(batch)
            except Exception as exc:
                if is_database_down(exc):
                    raise
                await self._write_one_by_one(batch)
            for item in batch:
                key = self._key(item)
                # a newer item under the same key that came in meanwhile stays held
                if self._held.get(key) is item:
                    del self._held[key]
            self.flushed += len(batch)
        self._spool_partial = False  # nothing held: nothing missing from the spool
        if self._spool is not None and self._spool.lines:
            await self._spool_forget()
        return total

    async def close(self) -> None:
        """Last try to write what is held; what cannot be written is kept in the spool or
        logged as lost."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(flusher, self._write_timeout)
        if self._held and self._database.available:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._write_timeout):
                    await self.flush()
        if self._held and self._spool_partial:
            await self._spool_held([])
        if self._held and self._spool is not None and not self._spool_partial:
            log.warning(
                "%s: %d not saved yet (database unavailable at shutdown); kept in %s for the "
                "next start",
                self._what,
                len(self._held),
                self._spool.path,
            )
        elif self._held:
            keys = ", ".join(str(k) for k in list(self._held)[:50])
            log.error(
                "%s: %d not saved (database unavailable at shutdown): %s",
                self._what,
                len(self._held),
                keys,
            )

    async def _write_one_by_one(self, batch: Sequence[T]) -> None:
        """An item the database refuses must not block the others behind it forever."""
        for item in batch:
            try:
                await self._write([item])
            except Exception as exc:
                if is_database_down(exc):
                    raise
                self.dropped += 1
                log.error("%s: held %s could not be written: %r", self._what, self._key(item), exc)

    def _flush_soon(self) -> None:
        """Write what is queued from a task of its own, after the write in progress."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_queued(), name=f"{self._what} flush"
            )

    async def _flush_queued(self) -> None:
        # again while something came in during the last await of a pass (it found this task
        # still running, so no other flush was started for it)
        while self._held:
            async with self._lock:
                if not self._database.available:  # gone down: held for the on_ready flush
                    await self._spool_held([])
                    return
                try:
                    # bounded like a direct write: a hanging database is one that is down
                    await self._write_held(batch_timeout=self._write_timeout)
                except Exception as exc:
                    if not is_database_down(exc):
                        log.exception("%s: writing what was queued failed", self._what)
                        return
                    self._database.mark_down(exc)
                    await self._spool_held([])  # an outage now: the queue goes to the spool
                    return

    async def _spool_held(self, items: list[T]) -> None:
        """Append `items` (just held) to the spool; the whole file is rewritten instead when
        it lacks something held, or to compact it (the latest of each)."""
        spool = self._spool
        if spool is None or not (items or (self._spool_partial and self._held)):
            return
        try:
            if self._spool_partial or spool.lines + len(items) > 2 * len(self._held) + 1000:
                # cleared before the wait: an item held meanwhile sets it again
                self._spool_partial = False
                await spool.rewrite(list(self._held.values()))
            else:
                await spool.append(items)
        except asyncio.CancelledError:  # the caller gave up waiting for the disk
            self._spool_partial = True
            raise
        except OSError as exc:
            self._spool_partial = True
            log.error(
                "%s: could not write %s (%s); held in memory only", self._what, spool.path, exc
            )

    async def _spool_forget(self) -> None:
        """After a flush: the file keeps only what is still held (nothing, usually)."""
        spool = self._spool
        assert spool is not None
        try:
            self._spool_partial = False  # cleared before the wait: an item held meanwhile sets it
            if self._held:
                await spool.rewrite(list(self._held.values()))
            else:
                await spool.remove()
        except OSError as exc:
            self._spool_partial = bool(self._held)  # the rewrite of what is held failed
            log.error("%s: could not update %s (%s)", self._what, spool.path, exc)

    def _hold(self, items: Sequence[T]) -> list[T]:
        """Hold `items`; returns those now held (not dropped)."""
        held: list[T] = []
        for item in items:
            key = self._key(item)
            if key in self._held or len(self._held) < self._limit:
                self._held[key] = item  # a replaced item keeps its place in line
                held.append(item)
            else:
                self.dropped += 1
                log.error(
                    "%s: %d held while the database is down; %s not saved",
                    self._what,
                    len(self._held),
                    key,
                )
            self.deferred += 1
        return held


class CallLog(Protocol):
    async def save_calls(self, records: Sequence[CallRecord]) -> None: ...


class DeferredCallLog(HeldWrites[str, CallRecord]):
    """The pipeline's call log: call records (an upsert, the latest of each call) are held while
    the database is down and written when it is back."""

    def __init__(
        self,
        *,
        call_log: CallLog,
        database: Availability,
        limit: int = 50_000,
        batch: int = 1000,
        write_timeout: float = 5.0,
        spool: Spool[CallRecord] | None = None,
    ) -> None:
        """`write_timeout` is below the pipeline's own save timeout (10 s), which would drop."""
        super().__init__(
            write=call_log.save_calls,
            key=_call_key,
            database=database,
            what="call log",
            limit=limit,
            batch=batch,
            write_timeout=write_timeout,
            spool=spool,
        )

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        await self.submit(records)


class DeferredIvrRecorder(HeldWrites[tuple[str, int], IvrStep]):
    """The IVR runner's recorder: the steps of sessions that end while the database is down
    (stored insert-or-ignore by call and seq) are held and written when it is back. Callback
    requests go straight through: the caller is told whether the request was taken.

    `on_written(steps)` is called after each successful write of steps (a session's, or held
    ones flushed after an outage), never for steps only held or spooled. It must not block;
    an error it raises is logged and ignored (the write stands)."""

    def __init__(
        self,
        *,
        recorder: IvrRecorder,
        database: Availability,
        limit: int = 200_000,
        batch: int = 2000,
        write_timeout: float = 1.5,
        spool: Spool[IvrStep] | None = None,
        on_written: Callable[[Sequence[IvrStep]], None] | None = None,
    ) -> None:
        """`write_timeout`: below the runner's bound on recording a session's steps."""
        super().__init__(
            write=self._write_steps,
            key=_step_key,
            database=database,
            what="IVR steps",
            limit=limit,
            batch=batch,
            write_timeout=write_timeout,
            spool=spool,
        )
        self._recorder = recorder
        self.on_written = on_written

    async def record_steps(self, steps: Sequence[IvrStep]) -> None:
        await self.submit(steps)

    async def _write_steps(self, steps: Sequence[IvrStep]) -> None:
        await self._recorder.record_steps(steps)
        hook = self.on_written
        if hook is not None:
            try:
                hook(steps)
            except Exception:
                log.exception("IVR steps: the hook after a write failed")

    async def record_callback(self, req: CallbackRequest) -> None:
        await self._recorder.record_callback(req)


def _call_key(record: CallRecord) -> str:
    return record.uniqueid


def _step_key(step: IvrStep) -> tuple[str, int]:
    return (step.call_uniqueid, step.seq)
