"""WebSocket fan-out: every message published on the bus channels the hub follows goes to every
connected browser as one JSON text frame `{"channel": ..., "payload": ...}`.

Memory is bounded: each client has a fixed-size outbox; a client too slow to keep up is
disconnected (close code 1013, try again later) rather than buffered without limit. On shutdown
`close()` sends every client a close frame (1001, going away) so browsers reconnect cleanly.

Every close is bounded (`close_socket`): a peer that stopped reading (a frozen tab, TCP window
zero) would block a close frame for ever, so past `close_timeout` its connection is aborted.
The sessions behind the open sockets are re-checked every `recheck_interval` seconds and at
once for a user when `SessionRecheck.poke()` says theirs may have ended: a signed-out or
disabled user's socket is closed with 4401. One loop per hub/service does it for all its
sockets (bounded concurrency), so an idle socket holds no task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from callcenter.bus.base import Bus, Payload

log = logging.getLogger(__name__)

# Rewrites a payload for one kind of viewer (e.g. masks caller numbers); applied once per
# broadcast per distinct function, however many clients share it.
Redactor = Callable[[Payload], Payload]

CLOSE_TIMEOUT = 3.0  # seconds a close frame may take before the connection is aborted
RECHECK_INTERVAL = 20.0  # seconds between two checks of an open socket's session
RECHECK_CONCURRENCY = 4  # session checks (database queries) in flight at once per loop
CHECK_TIMEOUT = 5.0  # seconds one session check may take; past that it counts as failed
SESSION_ENDED = 4401  # close code: the session is gone (signed out, expired, user disabled)

# Re-checks an open socket's session: None while it may stay open, else the close code.
SessionCheck = Callable[[], Awaitable[int | None]]
# Closes a socket whose session check returned a close code: (code, reason).
SessionClose = Callable[[int, bytes], Awaitable[None]]


class Closable(Protocol):
    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...


async def close_socket(
    ws: Closable,
    *,
    code: int,
    message: bytes,
    abort: Callable[[], None] | None,
    bound: float = CLOSE_TIMEOUT,
) -> None:
    """Send a close frame within `bound` seconds, else `abort()` the connection: a peer that
    stopped reading would block the close frame (and whoever awaits it) for ever."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), bound)
    except TimeoutError:
        log.warning("websocket close timed out after %.1fs; aborting the connection", bound)
        if abort is not None:
            abort()
    except asyncio.CancelledError:  # given up on (shutdown): close() alone would keep flushing
        if abort is not None:
            abort()
        raise
    except Exception as exc:
        log.debug("websocket close failed: %r", exc)
        if abort is not None:
            abort()


def transport_aborter(request: web.Request) -> Callable[[], None]:
    """Drops the request's connection at once, unsent data included (close() would flush)."""

    def abort() -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    return abort


async def finish_tasks(tasks: set[asyncio.Task[Any]], bound: float) -> None:
    """Wait up to `bound` seconds for `tasks`, then cancel and await what is left."""
    pending = set(tasks)
    if pending:
        _, pending = await asyncio.wait(pending, timeout=bound)
    for task in pending:
        task.cancel()
    if pending:
        log.warning("%d websocket task(s) still running at shutdown; cancelled", len(pending))
        await asyncio.gather(*pending, return_exceptions=True)


class Watched:
    """One open socket under `SessionRecheck`: whose it is, how to check and close it."""

    __slots__ = ("check", "checking", "close", "ended", "user_id")

    def __init__(self, user_id: int, check: SessionCheck, close: SessionClose) -> None:
        self.user_id = user_id
        self.check = check
        self.close = close
        self.ended = False  # closed by a check, or gone: no further check
        self.checking = 0  # checks of this socket under way (a poke's and a sweep's may overlap)


class SessionRecheck:
    """Re-checks the sessions of a hub's (or service's) open sockets: all of them every
    `interval` seconds, in one loop that runs only while sockets are watched, and a user's at
    once on `poke` (a sign-out or a disabled user handled by this process). At most
    `concurrency` checks run at a time, sweeps and pokes together. A socket whose check returns
    a close code is closed with it, once; a failing check (database down) or one without an
    answer within `check_timeout` keeps the socket: the next one decides. A sweep skips a
    socket whose check (a poke's) is still under way; a poke for a user whose earlier poke has
    not started checking yet adds nothing."""

    def __init__(
        self,
        *,
        interval: float = RECHECK_INTERVAL,
        concurrency: int = RECHECK_CONCURRENCY,
        check_timeout: float = CHECK_TIMEOUT,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._interval = interval
        self._concurrency = concurrency
        self._check_timeout = check_timeout
        self._slots = asyncio.Semaphore(concurrency)  # shared by sweeps and pokes
        self._poked: set[int | None] = set()  # users (None: everyone) whose poke is pending
        self._watched: dict[Watched, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._pokes: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def interval(self) -> float:
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = seconds
        self._wake.set()  # the loop re-arms its timer with the new interval

    @property
    def watching(self) -> int:
        return len(self._watched)

    def watch(self, user_id: int, check: SessionCheck, close: SessionClose) -> Watched:
        """Re-check `user_id`'s socket with `check` until `unwatch`; `close` it with the code
        a check returns. Starts the loop if it is not running."""
        watched = Watched(user_id, check, close)
        if self._closed:
            watched.ended = True
            return watched
        self._watched[watched] = None
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        return watched

    def unwatch(self, watched: Watched) -> None:
        """The socket is gone (or being closed): no further check. Idempotent."""
        watched.ended = True
        self._watched.pop(watched, None)
        if not self._watched:
            self._wake.set()  # the loop ends rather than sleep on for nothing

    def poke(self, user_id: int | None = None) -> None:
        """Re-check the sockets of `user_id`, or of everyone when None, now."""
        if self._closed or user_id in self._poked:
            return  # that pending poke's checks all start after this call: they do it
        batch = [w for w in self._watched if user_id is None or w.user_id == user_id]
        if not batch:
            return
        self._poked.add(user_id)
        task = asyncio.get_running_loop().create_task(self._check(batch, poked=(user_id,)))
        self._pokes.add(task)
        task.add_done_callback(self._pokes.discard)

    async def close(self) -> None:
        """Stop checking: the loop and the checks under way are cancelled. Idempotent."""
        self._closed = True
        tasks = [*self._pokes, *([self._loop_task] if self._loop_task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while self._watched:
                delay = last + self._interval - loop.time()
                if delay > 0:
                    self._wake.clear()
                    timer = loop.call_later(delay, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                    continue
                last = loop.time()
                await self._check(list(self._watched), poked=None)
        finally:
            self._loop_task = None

    async def _check(self, batch: list[Watched], *, poked: tuple[int | None] | None) -> None:
        """Check `batch`: a sweep's (`poked` None) or the poke of `poked[0]`'s (its pending
        mark ends once its first check starts)."""
        pending = iter(batch)  # shared by the workers: each socket is checked once
        failures = 0
        first_failure: Exception | None = None
        bound = self._check_timeout
        sweep = poked is None

        def started() -> None:
            nonlocal poked
            if poked is not None:
                self._poked.discard(poked[0])
                poked = None

        async def worker() -> None:
            nonlocal failures, first_failure
            for watched in pending:
                if watched.ended or (sweep and watched.checking):
                    continue  # a sweep leaves a socket whose check is under way to that check
                async with self._slots:
                    if watched.ended or (sweep and watched.checking):
                        continue
                    started()
                    watched.checking += 1
                    try:
                        async with asyncio.timeout(bound):
                            code = await watched.check()
                    except TimeoutError:
                        failures += 1
                        if first_failure is None:
                            first_failure = TimeoutError(f"no answer within {bound}s")
                        continue
                    except Exception as exc:
                        failures += 1
                        if first_failure is None:
                            first_failure = exc
                        continue
                    finally:
                        watched.checking -= 1
                if code is None or watched.ended:
                    continue
                self.unwatch(watched)
                reason = b"session ended" if code == SESSION_ENDED else b"not allowed any more"
                try:
                    await watched.close(code, reason)
                except Exception:  # one socket's failure must not stop the others' checks
                    log.exception("closing a websocket whose session ended failed")

        workers = min(self._concurrency, len(batch))
        try:
            if workers <= 1:
                await worker()
            else:
                await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            started()  # no check started (all ended): the poke is not pending any more
        if failures:
            log.warning(
                "%d websocket session check(s) failed (%s); keeping those sockets for now",
                failures,
                first_failure,
            )


def encode(channel: str, payload: Payload) -> str:
    return json.dumps(
        {"channel": channel, "payload": payload},
        ensure_ascii=False,
        default=str,
        separators=(",", ":"),
    )


async def follow_bus(
    bus: Bus,
    channels: Sequence[str],
    deliver: Callable[[str, Payload], None],
    *,
    subscribed: asyncio.Event,
    stopping: Callable[[], bool],
    what: str,
) -> None:
    """Hand every message on `channels` to `deliver` until cancelled or the subscription ends
    while `stopping()`. `subscribed` is set once messages can no longer be missed. A broken
    backend is retried with backoff (0.5 s doubling up to 10 s)."""
    backoff = 0.5
    while not stopping():
        try:
            async with bus.subscribe(*channels) as messages:
                subscribed.set()
                backoff = 0.5
                async for channel, payload in messages:
                    deliver(channel, payload)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: bus subscription failed; retrying in %.1fs", what, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[str]
    redact: Redactor | None = None
    dropped: bool = False
    abort: Callable[[], None] | None = None


class WebSocketHub:
    """Follows `channels` on the bus (`run()`) and serves `/ws` (`handle()`)."""

    def __init__(
        self,
        *,
        bus: Bus,
        channels: Sequence[str],
        outbox_size: int = 256,
        heartbeat: float | None = 20.0,
        close_timeout: float = CLOSE_TIMEOUT,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        self._bus = bus
        self._channels = tuple(channels)
        self._outbox_size = outbox_size
        self._heartbeat = heartbeat
        self._close_timeout = close_timeout
        self.recheck = SessionRecheck(interval=recheck_interval)
        self._clients: set[_Client] = set()
        self._closing = False
        self._subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def recheck_interval(self) -> float:
        return self.recheck.interval

    @recheck_interval.setter
    def recheck_interval(self, seconds: float) -> None:
        self.recheck.interval = seconds

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    async def wait_subscribed(self) -> None:
        """Returns once `run()` is subscribed: from then on no published message is missed."""
        await self._subscribed.wait()

    async def run(self) -> None:
        """Forward bus messages to clients until cancelled. A broken backend is retried."""
        await follow_bus(
            self._bus,
            self._channels,
            self.broadcast,
            subscribed=self._subscribed,
            stopping=lambda: self._closing,
            what="websocket hub",
        )

    def broadcast(self, channel: str, payload: Payload) -> None:
        texts: dict[Redactor | None, str] = {}
        for client in list(self._clients):
            if client.dropped:
                continue
            text = texts.get(client.redact)
            if text is None:
                shown = payload if client.redact is None else client.redact(payload)
                text = texts[client.redact] = encode(channel, shown)
            try:
                client.outbox.put_nowait(text)
            except asyncio.QueueFull:
                client.dropped = True
                self._clients.discard(client)
                log.warning("websocket client too slow, disconnecting it")
                self._spawn(self._close(client, WSCloseCode.TRY_AGAIN_LATER, b"too slow"))

    async def handle(
        self,
        request: web.Request,
        *,
        redact: Redactor | None = None,
        check: SessionCheck | None = None,
        user_id: int = 0,
    ) -> web.WebSocketResponse:
        """The `/ws` handler. `redact`, if given, rewrites every payload this client gets;
        `check`, if given, re-checks the session of `user_id` while the socket is open
        (see `SessionRecheck`)."""
        ws = web.WebSocketResponse(heartbeat=self._heartbeat)
        await ws.prepare(request)
        abort = transport_aborter(request)
        if self._closing:
            await close_socket(
                ws,
                code=WSCloseCode.GOING_AWAY,
                message=b"server shutdown",
                abort=abort,
                bound=self._close_timeout,
            )
            return ws
        client = _Client(
            ws=ws, outbox=asyncio.Queue(maxsize=self._outbox_size), redact=redact, abort=abort
        )
        self._clients.add(client)
        writer = asyncio.create_task(self._write_loop(client))
        watched: Watched | None = None
        if check is not None:

            async def end(code: int, reason: bytes) -> None:
                self._clients.discard(client)
                client.dropped = True
                await self._close(client, code, reason)

            watched = self.recheck.watch(user_id, check, end)
        try:
            async for msg in ws:
                # Clients have nothing to say yet; a text "ping" gets a pong for liveness checks.
                if msg.type is WSMsgType.TEXT and msg.data == "ping":
                    with contextlib.suppress(asyncio.QueueFull):
                        client.outbox.put_nowait(json.dumps({"channel": "hub", "payload": "pong"}))
        finally:
            self._clients.discard(client)
            if watched is not None:
                self.recheck.unwatch(watched)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write_loop(self, client: _Client) -> None:
        while True:
            text = await client.outbox.get()
            if client.ws.closed:
                return
            try:
                await client.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _close(self, client: _Client, code: int, message: bytes) -> None:
        await close_socket(
            client.ws,
            code=code,
            message=message,
            abort=client.abort,
            bound=self._close_timeout,
        )

    async def close(self) -> None:
        """Close every client with 1001 (going away) and refuse new ones. Idempotent. Bounded:
        a client whose close frame cannot go out within `close_timeout` is aborted, and
        whatever close is still running after that is cancelled."""
        self._closing = True
        await self.recheck.close()
        for client in list(self._clients):
            self._spawn(self._close(client, WSCloseCode.GOING_AWAY, b"server shutdown"))
        await finish_tasks(self._tasks, self._close_timeout + 1.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
