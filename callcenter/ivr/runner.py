"""IvrRunner: drives the pure engine over one FastAGI connection (the I/O edge of the IVR).

Fails open: customer lookups and recorder calls are bounded by ``lookup_timeout``; a failure or
timeout is logged and the call goes on (unknown customer / step not recorded). Steps are kept in
order while the caller is in the IVR and persisted when the session ends, after the socket has
been closed, so a slow recorder never delays a caller or holds an Asterisk channel (the flush
gives up after ``FLUSH_TIMEOUTS`` lookup timeouts). Callback requests are recorded at once,
because the caller is told whether it worked. A caller hanging up at any node ends the session
with a final step whose result is ``"hangup"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from callcenter.asterisk.agi import (
    AgiCommandError,
    AgiConnection,
    AgiHandler,
    AgiHangup,
    AgiReply,
)
from callcenter.calls.model import CallbackRequest, IvrStep
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
    ) -> None:
        self._flows = flows
        self._customers = customers
        self._recorder = recorder
        self._calendar = calendar
        self._clock = clock
        self._lookup_timeout = lookup_timeout
        self._default_queue = default_queue
        self._operator_queue = operator_queue
        self._default_flow = default_flow
        self.calls_completed = 0
        self.calls_failed = 0

    def resolve(self, script: str | None) -> AgiHandler | None:
        """AgiRouter: the flow named by the script path (the default flow when there is none)."""
        flow = self._flows.get(script if script is not None else self._default_flow)
        if flow is None:
            return None

        async def handler(conn: AgiConnection) -> None:
            await self.run(conn, flow)

        return handler

    async def run(self, conn: AgiConnection, flow: Flow) -> Outcome | None:
        """Run ``flow`` for one call and close the connection. Returns the engine's outcome."""
        env = conn.env
        uniqueid = env.uniqueid
        steps: list[IvrStep] = []
        seq = 0
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
        outcome: Outcome | None = None
        last_node = flow.start
        try:
            command: Command = next(engine)
            while True:
                if type(command) is Step:
                    seq += 1
                    last_node = command.node
                    steps.append(
                        IvrStep(
                            call_uniqueid=uniqueid,
                            seq=seq,
                            at=self._clock(),
                            node=command.node,
                            kind=command.kind,
                            input=command.input,
                            result=command.result,
                        )
                    )
                    reply: Reply = _ACK
                else:
                    reply = await self._perform(conn, command)
                command = engine.send(reply)
        except StopIteration as stop:
            outcome = stop.value
            self.calls_completed += 1
        except Exception:
            self.calls_failed += 1
            log.exception("ivr %s: flow %s failed; failing open", uniqueid, flow.name)
            seq += 1
            steps.append(IvrStep(uniqueid, seq, self._clock(), last_node, "error", None, "error"))
            if not conn.dead and not conn.closed:
                with contextlib.suppress(Exception):
                    await conn.set_variable("IVR_QUEUE", self._default_queue)
        finally:
            engine.close()
            await conn.close()
            await self._flush(uniqueid, steps)
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

    async def _flush(self, uniqueid: str, steps: list[IvrStep]) -> None:
        """Persist the steps (one write); a failure is logged, the flush time is bounded."""
        try:
            async with asyncio.timeout(self._lookup_timeout * FLUSH_TIMEOUTS):
                await self._recorder.record_steps(steps)
        except TimeoutError:
            log.warning("ivr %s: recording the IVR path took too long; gave up", uniqueid)
        except Exception as exc:
            log.warning("ivr %s: %d IVR steps not recorded: %r", uniqueid, len(steps), exc)

    async def _perform(self, conn: AgiConnection, cmd: Command) -> Reply:
        try:
            match cmd:
                # The two commands of nearly every step; command() directly, no wrapper.
                case Play(file=f, escape_digits=esc):
                    return self._playback(conn, await conn.command("STREAM FILE", f, esc))
                case SetVar(name=n, value=v):
                    await conn.command("SET VARIABLE", n, v)
                    return _ACK
                case SayDigits(digits=d):
                    return self._playback(conn, await conn.say_digits(d))
                case GetData(file=f, timeout_ms=t, max_digits=n):
                    reply = await conn.get_data(f, t, n)
                    if reply.result_int == -1:
                        return HUNG_UP
                    return Digits(reply.result.strip(), reply.timed_out)
                case WaitDigit(timeout_ms=t):
                    reply = await conn.wait_for_digit(t)
                    if reply.result_int == -1:
                        return HUNG_UP
                    return Digits(reply.digit or "", reply.result_int == 0)
                case Hangup():
                    # Either way the call is over: a 511 here just means the caller was faster.
                    with contextlib.suppress(AgiHangup):
                        if not conn.dead:
                            await conn.hangup()
                    return _ACK
                case HoursCheck():
                    return self._clock()
                case Lookup(number=number):
                    return await self._lookup(conn, number)
                case RecordCallback():
                    return await self._record_callback(conn, cmd)
        except AgiHangup:
            return HUNG_UP
        except AgiCommandError as exc:
            log.error("ivr %s: %s", conn.env.uniqueid, exc)
            return (
                Digits() if isinstance(cmd, Play | SayDigits | GetData | WaitDigit) else Ack(False)
            )
        raise TypeError(f"unknown IVR command {cmd!r}")

    def _playback(self, conn: AgiConnection, reply: AgiReply) -> Reply:
        n = reply.result_int
        if n == -1:
            if conn.dead:
                return HUNG_UP
            # -1 also means "file not found" (PLAYBACKSTATUS=FAILED); the call goes on.
            log.warning("ivr %s: playback failed: %s", conn.env.uniqueid, reply.text)
            return _NO_DIGITS
        digit = reply.digit
        return Digits(digit) if digit else _NO_DIGITS

    async def _lookup(self, conn: AgiConnection, number: str) -> LookupResult:
        try:
            async with asyncio.timeout(self._lookup_timeout):
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

    async def _record_callback(self, conn: AgiConnection, cmd: RecordCallback) -> Ack:
        req = CallbackRequest(
            call_uniqueid=conn.env.uniqueid,
            number=cmd.number,
            requested_at=self._clock(),
            queue=cmd.queue,
            note=cmd.note,
        )
        try:
            async with asyncio.timeout(self._lookup_timeout):
                await self._recorder.record_callback(req)
        except Exception as exc:
            log.error("ivr %s: could not record callback request: %r", conn.env.uniqueid, exc)
            return Ack(False)
        return Ack()
