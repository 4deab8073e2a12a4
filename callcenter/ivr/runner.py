"""IvrRunner: drives the pure engine over one FastAGI connection (the I/O edge of the IVR).

Fails open: customer lookups and recorder calls are bounded by ``lookup_timeout``; a failure or
timeout is logged and the call goes on (unknown customer / step not recorded). Steps are kept in
order while the caller is in the IVR and persisted when the session ends, after the socket has
been closed, so a slow recorder never delays a caller or holds an Asterisk channel (the flush
gives up after ``FLUSH_TIMEOUTS`` lookup timeouts). Callback requests are recorded at once,
because the caller is told whether it worked. A caller hanging up at any node ends the session
with a final step whose result is ``"hangup"``. A session cancelled by a server shutdown ends
with a ``"shutdown"`` step and first tries, within ``shutdown_grace``, to leave the caller the
default queue (Asterisk returns to the dialplan with AGISTATUS=SUCCESS when the socket closes).
Caller-supplied text in a step is cut to its ``ivr_steps`` column.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime
from typing import cast

from callcenter.asterisk.agi import (
    AgiCommandError,
    AgiConnection,
    AgiError,
    AgiHandler,
    AgiHangup,
    AgiReply,
)
from callcenter.calls.model import CallbackRequest, IvrStep
from callcenter.db.models import IvrStepRow
from callcenter.deadlines import FixedTimeout
from callcenter.ivr.calendar import BusinessCalendar
from callcenter.ivr.engine import (
    HUNG_UP,
    Ack,
    Command,
    Digits,
    GetData,
    Hangup,
    HoursCheck,
    Lookup,
    LookupResult,
    Outcome,
    Play,
    RecordCallback,
    Reply,
    SayDigits,
    SetVar,
    Step,
    WaitDigit,
    run_flow,
)
from callcenter.ivr.model import CustomerLookup, Flow, IvrRecorder
from callcenter.ivr.service import FlowRegistry

log = logging.getLogger(__name__)

FLUSH_TIMEOUTS = 4
_ACK = Ack()  # replies are immutable: share the common ones
_NO_DIGITS = Digits()


def _column_length(name: str) -> int:
    length = getattr(IvrStepRow.__table__.c[name].type, "length", None)
    if not isinstance(length, int):
        raise TypeError(f"ivr_steps.{name} has no length")
    return length


# Steps carry caller-supplied text (caller ID, digits, values built from them): cut to the
# columns, or the repository refuses the whole session's path.
_INPUT_LEN = _column_length("input")
_RESULT_LEN = _column_length("result")


class IvrRunner:
    """Runs flows over AGI connections. Use ``resolve`` as the AGI server's router."""

    def __init__(
        self,
        *,
        flows: FlowRegistry,
        customers: CustomerLookup,
        recorder: IvrRecorder,
        calendar: BusinessCalendar | None,
        clock: Callable[[], datetime],
        lookup_timeout: float,
        default_queue: str,
        operator_queue: str,
        default_flow: str = "hotline",
        shutdown_grace: float | None = None,
    ) -> None:
        """``shutdown_grace`` bounds what a session cancelled by a shutdown still does on its
        channel (waiting for the command in flight, setting the default queue); the default
        is ``lookup_timeout``."""
        self._flows = flows
        self._customers = customers
        self._recorder = recorder
        self._calendar = calendar
        self._clock = clock
        self._lookup_timeout = lookup_timeout
        self._lookup_bound = FixedTimeout(lookup_timeout)
        self._flush_bound = FixedTimeout(lookup_timeout * FLUSH_TIMEOUTS)
        self._default_queue = default_queue
        self._operator_queue = operator_queue
        self._default_flow = default_flow
        self._shutdown_grace = lookup_timeout if shutdown_grace is None else shutdown_grace
        self.calls_completed = 0
        self.calls_failed = 0
        self._handlers: dict[str, tuple[Flow, AgiHandler]] = {}

    def resolve(self, script: str | None) -> AgiHandler | None:
        """AgiRouter: the flow named by the script path (the default flow when there is none)."""
        flow = self._flows.get(script if script is not None else self._default_flow)
        if flow is None:
            return None
        cached = self._handlers.get(flow.name)
        if cached is not None and cached[0] is flow:
            return cached[1]

        def handler(conn: AgiConnection) -> Awaitable[None]:
            return cast(Awaitable[None], self.run(conn, flow))

        self._handlers[flow.name] = (flow, handler)  # one per flow, replaced on reload
        return handler

    async def run(self, conn: AgiConnection, flow: Flow) -> Outcome | None:
        """Run ``flow`` for one call and close the connection. Returns the engine's outcome.

        AGI commands are driven from the connection's reply callbacks (``_FlowSession``); this
        coroutine only waits for the end of the flow and runs what may block: the customer
        lookup and recording a callback request (each bounded by ``lookup_timeout``).
        """
        env = conn.env
        uniqueid = env.uniqueid
        task = asyncio.current_task()
        calendar = self._calendar if self._calendar is not None else self._flows.calendar
        engine = run_flow(
            flow,
            calendar=calendar,
            caller=env.callerid,
            default_queue=self._default_queue,
            operator_queue=self._operator_queue,
            variables={
                "UNIQUEID": uniqueid,
                "CALLER_NAME": env.calleridname or "",
                "DNID": env.dnid or "",
            },
            language=env.query.get("lang"),
        )
        loop = task.get_loop() if task is not None else asyncio.get_running_loop()
        session = _FlowSession(self, conn, engine, flow.start, loop)
        outcome: Outcome | None = None
        try:
            session.drive(None)
            while True:
                if not session.finished and session.effect is None:
                    await session.wait()
                if session.finished:
                    break
                effect = session.effect
                session.effect = None
                if type(effect) is Lookup:
                    session.drive(await self._lookup(conn, effect.number, task))
                elif type(effect) is RecordCallback:
                    session.drive(await self._record_callback(conn, effect, task))
            if session.error is not None:
                raise session.error
            outcome = session.outcome
            self.calls_completed += 1
        except asyncio.CancelledError:
            # The server is stopping (AgiServer.close() cancels the sessions and waits for them).
            session.stop()
            if not session.finished or session.error is not None:
                session.seq += 1
                session.steps.append(
                    (session.seq, self._clock(), session.last_node, "shutdown", None, "shutdown")
                )
                await self._shutdown_fail_open(conn, session)
            raise
        except Exception:
            self.calls_failed += 1
            log.exception("ivr %s: flow %s failed; failing open", uniqueid, flow.name)
            session.seq += 1
            session.steps.append(
                (session.seq, self._clock(), session.last_node, "error", None, "error")
            )
            if not conn.dead and not conn.closed:
                with contextlib.suppress(Exception):
                    await conn.set_variable("IVR_QUEUE", self._default_queue)
        finally:
            session.stop()
            engine.close()
            await conn.close()
            await self._flush(uniqueid, [IvrStep(uniqueid, *step) for step in session.steps], task)
        if outcome is not None and log.isEnabledFor(logging.INFO):
            log.info(
                "ivr %s: %s via %s -> %s %s",
                uniqueid,
                outcome.kind,
                ",".join(outcome.path),
                outcome.queue or "-",
                f"prio {outcome.priority}" if outcome.kind == "queue" else "",
            )
        return outcome

    @staticmethod
    def _bounded(
        bound: FixedTimeout, task: asyncio.Task[object] | None
    ) -> contextlib.AbstractAsyncContextManager[object]:
        return bound.bound(task) if task is not None else asyncio.timeout(bound.delay)

    async def _flush(
        self, uniqueid: str, steps: list[IvrStep], task: asyncio.Task[object] | None
    ) -> None:
        """Persist the steps (one write); a failure is logged, the flush time is bounded."""
        try:
            async with self._bounded(self._flush_bound, task):
                await self._recorder.record_steps(steps)
        except TimeoutError:
            log.warning("ivr %s: recording the IVR path took too long; gave up", uniqueid)
        except Exception as exc:
            log.warning("ivr %s: %d IVR steps not recorded: %r", uniqueid, len(steps), exc)

    async def _shutdown_fail_open(self, conn: AgiConnection, session: _FlowSession) -> None:
        """Leave a live caller the default queue before the socket closes: the dialplan sees
        AGISTATUS=SUCCESS. Bounded by ``shutdown_grace``, never raises."""
        uniqueid = conn.env.uniqueid
        try:
            async with asyncio.timeout(self._shutdown_grace):
                if session.in_flight and not conn.dead and not conn.closed:
                    # res_agi reads the next command only once the running one has replied.
                    await session.wait()
                if conn.dead or conn.closed:
                    return
                await conn.set_variable("IVR_QUEUE", self._default_queue)
        except TimeoutError:
            log.warning(
                "ivr %s: server stopping; no time left to send the caller to %s",
                uniqueid,
                self._default_queue,
            )
        except AgiError as exc:
            log.info("ivr %s: server stopping; channel gone: %s", uniqueid, exc)
        else:
            log.info(
                "ivr %s: server stopping; caller sent to queue %s", uniqueid, self._default_queue
            )

    async def _lookup(
        self, conn: AgiConnection, number: str, task: asyncio.Task[object] | None
    ) -> LookupResult:
        try:
            async with self._bounded(self._lookup_bound, task):
                customer = await self._customers.lookup(number)
        except Exception as exc:
            log.warning(
                "ivr %s: customer lookup for %s failed (%r); treating as unknown",
                conn.env.uniqueid,
                number,
                exc,
            )
            return LookupResult(None, failed=True)
        return LookupResult(customer)

    async def _record_callback(
        self, conn: AgiConnection, cmd: RecordCallback, task: asyncio.Task[object] | None
    ) -> Ack:
        req = CallbackRequest(
            call_uniqueid=conn.env.uniqueid,
            number=cmd.number,
            requested_at=self._clock(),
            queue=cmd.queue,
            note=cmd.note,
        )
        try:
            async with self._bounded(self._lookup_bound, task):
                await self._recorder.record_callback(req)
        except Exception as exc:
            log.error("ivr %s: could not record callback request: %r", conn.env.uniqueid, exc)
            return Ack(False)
        return Ack()


def _ignore_reply(reply: AgiReply | None, exc: Exception | None) -> None:
    """The reply callback of a stopped session (a reply may still come: it is not awaited)."""


class _FlowSession:
    """One call's engine, driven from the AGI reply callbacks: a reply is turned into the
    engine's reply, the engine is resumed and the next command is written, all within the
    socket's read callback (no future and no task step per command; commands still go out one
    at a time, each after the previous reply). Steps are recorded as the engine yields them.
    A lookup or callback request is left in ``effect`` for ``IvrRunner.run`` to perform; the
    end of the flow (``finished``, with ``outcome`` or ``error``) wakes it too. ``in_flight``
    is true while a command waits for its reply; once stopped, that reply only wakes ``wait()``.
    """

    __slots__ = (
        "_conn",
        "_engine",
        "_failed_playback",
        "_loop",
        "_on_playback",
        "_on_set",
        "_runner",
        "_stopped",
        "_uniqueid",
        "_wake",
        "effect",
        "error",
        "finished",
        "in_flight",
        "last_node",
        "outcome",
        "seq",
        "steps",
    )

    def __init__(
        self,
        runner: IvrRunner,
        conn: AgiConnection,
        engine: Generator[Command, Reply, Outcome],
        start: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._runner = runner
        self._loop = loop
        self._on_playback = self._playback_reply  # bound once, not per command
        self._on_set = self._set_reply
        self._conn = conn
        self._engine = engine
        self._uniqueid = conn.env.uniqueid
        self._wake: asyncio.Future[None] | None = None
        self._stopped = False
        self._failed_playback: AgiReply | None = None  # the -1 a CHANNEL STATUS is checking
        # IvrStep fields after call_uniqueid: plain tuples while the call lasts (the collector
        # skips tuples of strings and datetimes), IvrStep objects for the recorder at the end
        self.steps: list[tuple[int, datetime, str, str, str | None, str | None]] = []
        self.seq = 0
        self.last_node = start
        self.effect: Lookup | RecordCallback | None = None
        self.finished = False
        self.in_flight = False
        self.outcome: Outcome | None = None
        self.error: Exception | None = None

    def wait(self) -> asyncio.Future[None]:
        """Resolved when an effect is due or the flow has ended (once stopped: when the reply
        to the command in flight has come)."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._wake = fut
        return fut

    def stop(self) -> None:
        """No more driving (the session is over or cancelled)."""
        self._stopped = True
        self._wake = None
        # the callbacks bound at the start refer back to the session: break that cycle, so
        # the session is freed by reference counting, not left to the cyclic collector
        self._on_playback = self._on_set = _ignore_reply

    def _wakeup(self) -> None:
        fut = self._wake
        if fut is not None:
            self._wake = None
            if not fut.done():
                fut.set_result(None)

    def _end(self, outcome: Outcome | None, error: Exception | None) -> None:
        self.finished = True
        self.outcome = outcome
        self.error = error
        self._wakeup()

    def drive(self, reply: Reply) -> None:
        """Send ``reply`` into the engine and go on until a command is in flight, an effect is
        due or the flow has ended. Never raises (it runs in the socket's read callback)."""
        if self._stopped or self.finished:
            return
        send = self._engine.send
        conn = self._conn
        try:
            while True:
                cmd = send(reply)
                kind = type(cmd)
                if kind is Step:
                    assert isinstance(cmd, Step)
                    self.seq += 1
                    self.last_node = cmd.node
                    text, result = cmd.input, cmd.result
                    if text is not None and len(text) > _INPUT_LEN:
                        text = text[:_INPUT_LEN]
                    if result is not None and len(result) > _RESULT_LEN:
                        result = result[:_RESULT_LEN]
                    self.steps.append(
                        (self.seq, self._runner._clock(), cmd.node, cmd.kind, text, result)
                    )
                    reply = _ACK
                    continue
                try:
                    # The two commands of nearly every step first.
                    if kind is Play:
                        assert isinstance(cmd, Play)
                        conn.submit(self._on_playback, "STREAM FILE", cmd.file, cmd.escape_digits)
                        self.in_flight = True
                        return
                    if kind is SetVar:
                        assert isinstance(cmd, SetVar)
                        conn.submit(self._on_set, "SET VARIABLE", cmd.name, cmd.value)
                        self.in_flight = True
                        return
                    if kind is SayDigits:
                        assert isinstance(cmd, SayDigits)
                        conn.submit(self._on_playback, "SAY DIGITS", cmd.digits, "")
                        self.in_flight = True
                        return
                    if kind is GetData:
                        assert isinstance(cmd, GetData)
                        conn.submit(
                            self._get_data_reply,
                            "GET DATA",
                            cmd.file,
                            str(cmd.timeout_ms),
                            str(cmd.max_digits),
                        )
                        self.in_flight = True
                        return
                    if kind is WaitDigit:
                        assert isinstance(cmd, WaitDigit)
                        conn.submit(self._wait_digit_reply, "WAIT FOR DIGIT", str(cmd.timeout_ms))
                        self.in_flight = True
                        return
                    if kind is Hangup:
                        # Either way the call is over: a dead channel needs no HANGUP.
                        if conn.dead:
                            reply = _ACK
                            continue
                        conn.submit(self._hangup_reply, "HANGUP")
                        self.in_flight = True
                        return
                except AgiHangup:
                    reply = HUNG_UP
                    continue
                if kind is HoursCheck:
                    reply = self._runner._clock()
                    continue
                if kind is Lookup or kind is RecordCallback:
                    assert isinstance(cmd, Lookup | RecordCallback)
                    self.effect = cmd
                    self._wakeup()
                    return
                raise TypeError(f"unknown IVR command {cmd!r}")
        except StopIteration as stop:
            self._end(stop.value, None)
        except Exception as exc:
            self._end(None, exc)

    def _replied(self) -> bool:
        """Book-keeping for the reply (or error) to the command in flight. False once the
        session is stopped: the reply is then only what a shutdown waits for."""
        self.in_flight = False
        if self._stopped:
            self._wakeup()
            return False
        return True

    def _error_reply(self, exc: Exception, failed: Reply) -> Reply | None:
        """The engine's reply to a failed command (None: the session fails with ``exc``)."""
        if isinstance(exc, AgiHangup):
            return HUNG_UP
        if isinstance(exc, AgiCommandError):
            log.error("ivr %s: %s", self._uniqueid, exc)
            return failed
        self._end(None, exc)
        return None

    def _playback_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        if not self._replied():
            return
        if reply is not None:
            n = reply.result_int
            if n != -1:
                digit = reply.digit
                self.drive(Digits(digit) if digit else _NO_DIGITS)
            elif self._conn.dead:
                self.drive(HUNG_UP)
            else:
                self._check_channel(reply)
        elif exc is not None and (r := self._error_reply(exc, Digits())) is not None:
            self.drive(r)

    def _check_channel(self, failed: AgiReply) -> None:
        """A prompt answered -1: the caller hung up, or the file could not be played. res_agi
        writes that reply before the HANGUP line, so ask once with a command it refuses (511)
        on a dead channel."""
        self._failed_playback = failed
        try:
            self._conn.submit(self._status_reply, "CHANNEL STATUS")
        except AgiHangup:
            self.drive(HUNG_UP)
        except Exception as exc:
            self._end(None, exc)
        else:
            self.in_flight = True

    def _status_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        if not self._replied():
            return
        failed = self._failed_playback
        self._failed_playback = None
        if isinstance(exc, AgiHangup) or self._conn.dead:
            self.drive(HUNG_UP)
        elif reply is not None or isinstance(exc, AgiCommandError):
            # -1 on a live channel: PLAYBACKSTATUS=FAILED (no such file); the call goes on.
            log.warning(
                "ivr %s: playback failed: %s",
                self._uniqueid,
                failed.text if failed is not None else "result=-1",
            )
            self.drive(_NO_DIGITS)
        elif exc is not None:
            self._end(None, exc)

    def _set_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        if not self._replied():
            return
        if reply is not None:
            self.drive(_ACK)
        elif exc is not None and (r := self._error_reply(exc, Ack(False))) is not None:
            self.drive(r)

    def _get_data_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        if not self._replied():
            return
        if reply is not None:
            if reply.result_int == -1:
                self.drive(HUNG_UP)
            else:
                self.drive(Digits(reply.result.strip(), reply.timed_out))
        elif exc is not None and (r := self._error_reply(exc, Digits())) is not None:
            self.drive(r)

    def _wait_digit_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        if not self._replied():
            return
        if reply is not None:
            n = reply.result_int
            self.drive(HUNG_UP if n == -1 else Digits(reply.digit or "", n == 0))
        elif exc is not None and (r := self._error_reply(exc, Digits())) is not None:
            self.drive(r)

    def _hangup_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        if not self._replied():
            return
        # A 511 here just means the caller was faster.
        if reply is not None or isinstance(exc, AgiHangup):
            self.drive(_ACK)
        elif exc is not None and (r := self._error_reply(exc, Ack(False))) is not None:
            self.drive(r)
