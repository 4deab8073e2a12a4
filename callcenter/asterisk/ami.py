"""AMI client: panoramisk 1.4 for socket and action plumbing, our code for what it gets wrong.

What panoramisk still does here: `Manager.connect()` opens the TCP connection with our protocol
factory; `AMIProtocol.send()` writes an `Action` (ActionID generation, repeated headers) and
registers its future; `AMIProtocol.handle_message()` + `Action.add_message()` correlate replies
(single response, `EventList` lists, async Originate) with that future. That AMIProtocol is a
helper object owned by our transport protocol, never the transport's protocol itself.

What we replace, and why (PROTOCOL.md §6.4):

* Receive path: `_AmiProtocol` reads through `asyncio.BufferedProtocol` (at most 32 KiB per
  loop callback, on asyncio and on uvloop) into `AmiFramer` (bytes-level framing; panoramisk
  1.4 decodes each read alone, corrupting split UTF-8, and re-splits the pending text: O(n²)).
  Replies whose ActionID is pending are converted to panoramisk `Message`s for its
  correlation logic; events are not.
* Event delivery: one queue and ONE consumer task awaiting `on_message` (or `on_messages`,
  the events of one read at a time) sequentially, so the events of a call are applied in
  arrival order (panoramisk starts a task per event). A raising consumer is logged; the link
  survives (§6.4.1). With `only_events`, other events (Asterisk sends every class the user may
  read unless manager.conf filters them) are dropped by the framer, and with `only_variables`
  the VarSet events of other variables; replies never are.
* Login: sent by us, MD5 challenge-response by default (`Challenge`, then `Login` with
  `AuthType: MD5` and `Key: md5(challenge + secret)`: the secret never crosses the wire) or
  plaintext; success means `Response: Success` (not `.success`, §6.4.3). A refused login (or a
  refused Challenge) raises `AmiLoginError` and stops the client instead of reconnecting
  forever (§6.4.4).
* Reconnect: exponential backoff with jitter, our supervisor; panoramisk's fixed-delay loop and
  its re-send of pending actions on `FullyBooted` are disabled. Pending actions fail with
  `AmiConnectionLost`; an Originate is NEVER re-sent (`AmiOriginateUnknown`) (§6.4.5).
* Ping watchdog with a reply timeout: a silent link is closed and reconnected (§6.4.6).
* Every action has a timeout (`AmiTimeout`); an action while disconnected raises
  `AmiNotConnected` at once instead of being written to a dead transport (§6.4.5).
* After every login: CoreShowChannels, then QueueStatus, are fetched and handed to `on_resync`
  through the same sequential consumer, each part positioned in the stream right after its
  own last list item (Asterisk writes queued events between two replies), so the trackers see
  one consistent sequence: a call that starts between the lists is not in the channel list,
  and its first event comes after that list (§6.4.7).
* Back-pressure: a consumer more than `max_queued` messages behind pauses reading on the
  current connection until it is back at half that; a lost session is only replaced once the
  consumer is back there (a link that cannot be read only fills up and gets dropped again).
* Originate always sends `Async: true` (§3; no session blocking, no panoramisk KeyError).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from callcenter.asterisk.errors import (
    AmiActionError,
    AmiClosed,
    AmiConnectError,
    AmiConnectionLost,
    AmiError,
    AmiInvalidAction,
    AmiLoginError,
    AmiNotConnected,
    AmiOriginateUnknown,
    AmiTimeout,
)
from callcenter.asterisk.framing import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_LINES, AmiFramer
from callcenter.asterisk.message import AmiMessage

if TYPE_CHECKING:
    from callcenter.config import Settings

log = logging.getLogger(__name__)

Fields = Mapping[str, str] | Sequence[tuple[str, str]]
AuthType = Literal["md5", "plain"]
OnMessage = Callable[[AmiMessage], Awaitable[None]]
OnMessages = Callable[[list[AmiMessage]], Awaitable[None]]

_NAME_OK = re.compile(r"[A-Za-z0-9_()/.\-]+")
READ_BUFFER: Final = 32 * 1024  # bytes parsed per read callback at most
_CONSUMER_SLICE: Final = 0.002  # seconds of consumer work before yielding to the event loop


ResyncStage = Literal["channels", "queues"]


@dataclass(frozen=True, slots=True)
class ResyncSnapshot:
    """State fetched after a (re)login. Items only: no Response, no *Complete event.

    `on_resync` gets two per login, each at its place in the event stream. Stage "channels",
    right after CoreShowChannelsComplete: the channel list (`queue_status` empty); apply it
    there. Stage "queues", right after QueueStatusComplete: the whole resync, the channel list
    taken earlier included; apply only its queue part there when the channel part was applied
    at its own stage (events in between are newer than the channel list).
    """

    channels: tuple[AmiMessage, ...]  # CoreShowChannel events
    queue_status: tuple[AmiMessage, ...]  # QueueParams / QueueMember / QueueEntry events
    stage: ResyncStage


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """Outcome of an async Originate (the OriginateResponse event)."""

    success: bool  # Response: Success (Reason 4)
    reason: int  # 0 failed, 1 hangup, 3 no answer, 4 answered, 5 busy, 8 congestion
    channel: str  # the channel name, or the requested dial string on failure
    uniqueid: str  # "<unknown>" (or the ChannelId) on failure
    event: AmiMessage | None = None


@dataclass(frozen=True, slots=True)
class AmiStats:
    """Counters for metrics. Monotonic except `connected` and `queued`."""

    connected: bool
    ami_version: str | None
    bytes_in: int
    frames: int
    frame_errors: int
    decode_errors: int
    events_delivered: int
    events_skipped: int  # dropped unparsed: not in `only_events` / `only_variables`
    consumer_errors: int
    stray_responses: int
    reconnects: int
    ping_timeouts: int
    action_timeouts: int
    resyncs: int
    resync_failures: int
    queued: int


def backoff_delay(
    attempt: int, *, minimum: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: uniform in [cap/2, cap], cap = min(max, min*2**attempt)."""
    cap = min(maximum, minimum * (2.0 ** min(attempt, 60)))
    return cap / 2.0 + rand() * cap / 2.0


def build_action(action: str, fields: Fields = ()) -> Action:
    """A panoramisk Action with our validation. Repeated field names become repeated headers."""
    if not _NAME_OK.fullmatch(action):
        raise AmiInvalidAction(f"invalid AMI action name: {action!r}")
    items = fields.items() if isinstance(fields, Mapping) else fields
    merged: dict[str, tuple[str, list[str]]] = {"action": ("Action", [action])}
    for name, value in items:
        if not _NAME_OK.fullmatch(name):
            raise AmiInvalidAction(f"invalid AMI header name {name!r} in {action}")
        if not isinstance(value, str):
            raise AmiInvalidAction(f"AMI header {name} of {action} must be str, got {value!r}")
        if "\r" in value or "\n" in value:
            # A raw line break would end the header (or the action) early: header injection.
            raise AmiInvalidAction(f"AMI header {name} of {action} contains a line break")
        key = name.lower()
        if key == "action":
            raise AmiInvalidAction("pass the action name as `action`, not as a field")
        if key in merged:
            merged[key][1].append(value)
        else:
            merged[key] = (name, [value])
    data = {name: (values[0] if len(values) == 1 else values) for name, values in merged.values()}
    return _AmiAction(data, as_list=False)


class _PanoramiskManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager used only to open connections.

    Its own `connection_made` would log in by itself (judging success by `.success`), start a
    pinger that ignores replies, and its `connection_lost` would reconnect forever without
    backoff; our supervisor does those jobs, so both become no-ops.
    """

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if not f.cancelled():
            f.exception()  # mark retrieved: the supervisor awaits the same task

    def connection_lost(self, exc: BaseException | None) -> None:
        return None


class _AmiAction(Action):  # type: ignore[misc]
    """panoramisk's Action, written in the order given (Action, ActionID, then the fields as
    passed) instead of sorted by name, and with credentials masked in its repr."""

    def __str__(self) -> str:
        lines: list[str] = []
        for key, value in sorted(self.items(), key=_action_key_rank):
            if isinstance(value, list | tuple):
                lines.extend(f"{key}: {item}" for item in value)
            else:
                lines.append(f"{key}: {value}")
        lines.append("\r\n")
        return "\r\n".join(lines)

    def __repr__(self) -> str:
        shown = {k: ("***" if k.lower() in _SECRET_HEADERS else v) for k, v in self.items()}
        return f"<AmiAction {shown!r}>"


_SECRET_HEADERS: Final = frozenset({"secret", "key"})


def _action_key_rank(item: tuple[str, object]) -> int:
    key = item[0].lower()
    return 0 if key == "action" else 1 if key == "actionid" else 2  # stable: fields keep order


class _AmiProtocol(asyncio.BufferedProtocol):
    """The transport's protocol: our framer, routing and failure semantics.

    Reads go through `BufferedProtocol` into one reused buffer of READ_BUFFER bytes (no bytes
    object per read), so the consumer runs between slices of at most READ_BUFFER bytes.
    asyncio reads once per loop iteration anyway. uvloop uses get_buffer/buffer_updated only
    for protocols that are NOT `asyncio.Protocol` instances (hence panoramisk's AMIProtocol is
    only a helper here), and libuv then reads up to 32 buffers in a row: once a second full
    read arrives within one loop iteration, every full read pauses reading until the next
    iteration (`call_soon`). So: at most 2 x READ_BUFFER once per connection, then READ_BUFFER
    per iteration, with no pause/resume cost on asyncio.
    """

    def __init__(
        self,
        *,
        framer: AmiFramer,
        deliver: Callable[[list[AmiMessage], _AmiProtocol], None],
    ) -> None:
        self.framer = framer
        self.deliver = deliver
        self.on_complete: dict[str, Callable[[], None]] = {}
        self._loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[BaseException | None] = self._loop.create_future()
        self.closed = True
        self.transport: asyncio.BaseTransport | None = None
        # panoramisk's protocol as a helper: send() + handle_message(); never fed bytes
        self._pano = AMIProtocol()
        self.responses: dict[str, Action] = {}
        self._rbuf = bytearray(READ_BUFFER)
        self._rview = memoryview(self._rbuf)
        self._held = False  # the consumer is too far behind (AmiClient high water)
        self.holds = 0  # times reading was held (a reply may have waited unread meanwhile)
        self._tick_pending = False  # a full read happened in this loop iteration
        self._bursty = False  # the transport reads several buffers per loop iteration
        self._yielding = False  # paused until the loop's next iteration
        self._reading = True

    # -- transport side ------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rview[:nbytes])
        if nbytes < READ_BUFFER or self.closed:
            return  # a short read: the socket is drained
        if self._tick_pending:
            # A second full read before the loop came round: this transport reads in bursts
            # (libuv reads up to 32 times per readiness callback). From now on, every full
            # read pauses reading until the next loop iteration.
            self._bursty = True
        else:
            self._tick_pending = True
            self._loop.call_soon(self._tick)
        if self._bursty and not self._yielding:
            self._yielding = True
            self._sync_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.closed = False
        pano = self._pano
        pano.connection_made(transport)
        pano.log = log
        pano.encoding = "utf-8"
        self.responses = pano.responses
        self.framer.reset()

    def data_received(self, data: bytes | memoryview) -> None:
        msgs = self.framer.feed(data)
        if not msgs:
            return
        if self.responses:
            msgs = self._route(msgs)
            if not msgs:
                return
        self.deliver(msgs, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_pending(AmiConnectionLost(f"AMI connection lost: {exc or 'closed by peer'}"))
        if not self.lost.done():
            self.lost.set_result(exc)

    # -- flow control ----------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Reading is stopped until `release_reading()`."""
        return self._held

    def hold_reading(self) -> None:
        """Stop reading until `release_reading()` (the consumer is behind)."""
        self._held = True
        self.holds += 1
        self._sync_reading()

    def release_reading(self) -> None:
        self._held = False
        self._sync_reading()

    def _tick(self) -> None:
        """The loop's next iteration after a full read."""
        self._tick_pending = False
        if self._yielding:
            self._yielding = False
            self._sync_reading()

    def _sync_reading(self) -> None:
        want = not (self._held or self._yielding)
        t = self.transport
        if want == self._reading or t is None or t.is_closing():
            return
        self._reading = want
        if want:
            t.resume_reading()  # type: ignore[attr-defined]
        else:
            t.pause_reading()  # type: ignore[attr-defined]

    # -- actions -----------------------------------------------------------------------------------

    def _route(self, msgs: list[AmiMessage]) -> list[AmiMessage]:
        """Replies of pending actions go to their futures; everything else to the consumer."""
        out: list[AmiMessage] = []
        responses = self.responses
        for m in msgs:
            aid = m.get("ActionID")
            act = responses.get(aid) if aid else None
            if act is None:
                out.append(m)
                continue
            pm = Message(dict(m.headers))
            pm.ami = m
            try:
                self._pano.handle_message(pm)
            except Exception as exc:  # e.g. panoramisk's KeyError('async'); never kill the link
                self.forget(act)
                if not act.future.done():
                    act.future.set_exception(
                        AmiError(f"cannot correlate reply to {act['action']}: {exc!r}")
                    )
                continue
            if m.name == "OriginateResponse" and m.kind == "event":
                out.append(m)  # the tracker sees it too (panoramisk would hide it, §6.4.2)
            if act.future.done():
                hook = self.on_complete.pop(aid, None)
                if hook is not None:
                    if out:  # the hook enqueues: events before this frame go first
                        self.deliver(out, self)
                        out = []
                    hook()
        return out

    def send_action(self, action: Action, *, as_list: bool | None) -> asyncio.Future[Any]:
        if self.closed:
            raise AmiNotConnected(f"AMI not connected; {action['action']} not sent")
        fut: asyncio.Future[Any] = self._pano.send(action, as_list=as_list)
        return fut

    def forget(self, action: Action) -> None:
        for key in (action.id, action.action_id):
            if key:
                self.responses.pop(key, None)
                self.on_complete.pop(key, None)

    def close(self) -> None:
        """Local close. panoramisk's version would queue pending actions for a re-send."""
        self._fail_pending(AmiConnectionLost("AMI connection closed while waiting for a reply"))
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _fail_pending(self, error: AmiError) -> None:
        pending = {id(a): a for a in self.responses.values()}.values()
        self.responses.clear()
        self.on_complete.clear()
        for act in pending:
            if act.future.done():
                continue
            if str(act["action"]).lower() == "originate":
                act.future.set_exception(
                    AmiOriginateUnknown(
                        "AMI link lost while an Originate was pending: the call may or may not "
                        "have been placed; it will not be re-sent",
                        cause="connection_lost",
                    )
                )
            else:
                act.future.set_exception(type(error)(str(error)))


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A callback to run in order with the events (connected, resync, disconnected)."""

    call: Callable[[], Awaitable[None]]


class _Stop:
    pass


_STOP: Final = _Stop()
_Item = list[AmiMessage] | _Deferred | _Stop  # the messages of one read, in order


def _unwrap(result: Any) -> AmiMessage | list[AmiMessage]:
    if isinstance(result, list):
        return [m.ami for m in result]
    msg: AmiMessage = result.ami
    return msg


class AmiClient:
    """One AMI session to Asterisk, kept alive, with ordered event delivery.

    Lifecycle: `await start()` then `await close()`. `start(wait=True)` returns once logged in
    and the first resync was fetched; it raises `AmiLoginError` (bad credentials) or
    `AmiConnectError` (unreachable) and leaves the client stopped. `start(wait=False)` returns
    at once and connects in the background, retrying unreachable hosts with backoff forever.
    In both modes a refused login (also on a later reconnect) stops the client for good: see
    `failure`, the ERROR log line, and `on_disconnected(AmiLoginError)`.

    `auth="md5"` logs in by challenge-response (the secret itself is never sent); a server that
    refuses `Action: Challenge` stops the client with `AmiLoginError` (no silent fallback to
    plaintext). `auth="plain"` sends `Secret:`. `from_settings` uses `ami_auth` (default md5).

    Callbacks all run in ONE task, sequentially, in stream order: `on_connected()` after each
    login, `on_message(event)` for each event - or, when given, `on_messages(events)` for the
    events of each read - (exceptions are logged and counted),
    `on_resync(snapshot)` twice after each login (its channel list, then its queue status, each
    where it was taken in the stream: see ResyncSnapshot), `on_disconnected(reason)` after each lost
    session (reason: AmiConnectionLost, AmiLoginError when stopping, AmiClosed on close()).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        on_message: OnMessage,
        on_messages: OnMessages | None = None,
        only_events: Collection[str] | None = None,
        only_variables: Callable[[str], bool] | None = None,
        auth: AuthType = "plain",
        on_resync: Callable[[ResyncSnapshot], Awaitable[None]] | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[AmiError], Awaitable[None]] | None = None,
        action_timeout: float = 5.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        events: str = "on",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_frame_lines: int = DEFAULT_MAX_LINES,
        max_queued: int = 100_000,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if reconnect_min <= 0 or reconnect_max < reconnect_min:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if min(action_timeout, ping_interval, ping_timeout) <= 0:
            raise ValueError("timeouts and intervals must be > 0")
        if auth not in ("md5", "plain"):
            raise ValueError(f"auth must be 'md5' or 'plain', not {auth!r}")
        self._auth: AuthType = auth
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._events = events
        self._on_message = on_message
        self._on_messages = on_messages
        self._on_resync = on_resync
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._rand = rand
        self._framer = AmiFramer(
            max_frame_bytes=max_frame_bytes,
            max_lines=max_frame_lines,
            events=only_events,
            variables=only_variables,
        )
        self._high_water = max_queued
        self._low_water = max_queued // 2

        self._inbox: deque[_Item] = deque()
        self._queued = 0  # messages in the inbox or being handed over
        self._wakeup: asyncio.Future[None] | None = None
        self._paused: _AmiProtocol | None = None  # the connection held for the consumer
        self._caught_up: asyncio.Future[None] | None = None  # the supervisor waits on it
        self._proto: _AmiProtocol | None = None
        self._manager: _PanoramiskManager | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._wait_first = True
        self._connected = False
        self._state = "new"
        self._failure: AmiError | None = None

        self._events_delivered = 0
        self._consumer_errors = 0
        self._stray = 0
        self._reconnects = 0
        self._ping_timeouts = 0
        self._action_timeouts = 0
        self._resyncs = 0
        self._resync_failures = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        on_message: OnMessage,
        on_messages: OnMessages | None = None,
        only_events: Collection[str] | None = None,
        only_variables: Callable[[str], bool] | None = None,
        on_resync: Callable[[ResyncSnapshot], Awaitable[None]] | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[AmiError], Awaitable[None]] | None = None,
        address: tuple[str, int] | None = None,
    ) -> AmiClient:
        """A client configured by `settings`; `address` overrides ami_host/ami_port (the demo's
        embedded emulator)."""
        host, port = address or (settings.ami_host, settings.ami_port)
        return cls(
            host=host,
            port=port,
            username=settings.ami_username,
            secret=settings.ami_secret.get_secret_value(),
            auth=settings.ami_auth,
            on_message=on_message,
            on_messages=on_messages,
            only_events=only_events,
            only_variables=only_variables,
            on_resync=on_resync,
            on_connected=on_connected,
            on_disconnected=on_disconnected,
            action_timeout=settings.ami_action_timeout,
            ping_interval=settings.ami_ping_interval,
            ping_timeout=settings.ami_ping_timeout,
            reconnect_min=settings.ami_reconnect_min,
            reconnect_max=settings.ami_reconnect_max,
        )

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while logged in on an open connection."""
        return self._connected and self._proto is not None and not self._proto.closed

    @property
    def state(self) -> str:
        """new | connecting | connected | reconnecting | stopped."""
        return self._state

    @property
    def failure(self) -> AmiError | None:
        """The error that stopped the client for good (a refused login), if any."""
        return self._failure

    @property
    def ami_version(self) -> str | None:
        """The version from the last banner (`9.0.0` for Asterisk 20)."""
        return self._framer.version

    def stats(self) -> AmiStats:
        f = self._framer
        return AmiStats(
            connected=self.connected,
            ami_version=f.version,
            bytes_in=f.bytes_in,
            frames=f.frames,
            frame_errors=f.errors,
            decode_errors=f.decode_errors,
            events_delivered=self._events_delivered,
            events_skipped=f.skipped,
            consumer_errors=self._consumer_errors,
            stray_responses=self._stray,
            reconnects=self._reconnects,
            ping_timeouts=self._ping_timeouts,
            action_timeouts=self._action_timeouts,
            resyncs=self._resyncs,
            resync_failures=self._resync_failures,
            queued=self._queued,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect and log in. See the class docstring for `wait`."""
        if self._state != "new":
            raise RuntimeError("AmiClient.start() called twice (a closed client is not reusable)")
        loop = asyncio.get_running_loop()
        self._manager = _PanoramiskManager(
            host=self._host,
            port=self._port,
            loop=loop,
            encoding="utf-8",
            events=self._events,
            protocol_factory=self._new_protocol,
        )
        self._wait_first = wait
        self._ready = loop.create_future()
        self._state = "connecting"
        self._consumer = asyncio.create_task(self._consume(), name="ami-consumer")
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")
        if not wait:
            return
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop for good: close the link, fail pending actions, drain queued callbacks."""
        sup, self._supervisor = self._supervisor, None
        if sup is not None and not sup.done():
            sup.cancel()
            await asyncio.gather(sup, return_exceptions=True)
        if self._state != "new":
            self._state = "stopped"
        consumer, self._consumer = self._consumer, None
        if consumer is asyncio.current_task():
            self._enqueue(_STOP)  # close() called from a callback: stop after it returns
        elif consumer is not None:
            self._enqueue(_STOP)
            try:
                async with asyncio.timeout(self.action_timeout):  # not wait_for: see _roundtrip
                    await asyncio.shield(consumer)
            except TimeoutError:
                log.warning(
                    "AMI consumer did not drain within %.1fs; cancelling", self.action_timeout
                )
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)

    # -- actions -------------------------------------------------------------------------------

    async def send_action(
        self,
        action: str,
        fields: Fields = (),
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AmiMessage:
        """Send one action; return its Response. Raises AmiActionError unless Response: Success."""
        act = build_action(action, fields)
        result = await self._request(act, as_list=False, limit=timeout)
        assert isinstance(result, AmiMessage)
        _check_success(action, result)
        return result

    async def send_list_action(
        self,
        action: str,
        fields: Fields = (),
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[AmiMessage]:
        """Send a list action; return [Response, items..., <X>Complete]."""
        act = build_action(action, fields)
        result = await self._request(act, as_list=None, limit=timeout)
        if isinstance(result, AmiMessage):
            _check_success(action, result)
            return [result]
        _check_success(action, result[0])
        return result

    async def originate(
        self,
        *,
        channel: str,
        context: str | None = None,
        exten: str | None = None,
        priority: str | int | None = None,
        application: str | None = None,
        data: str | None = None,
        timeout_ms: int = 30000,
        caller_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        channel_id: str | None = None,
        account: str | None = None,
        action_timeout: float | None = None,
    ) -> OriginateResult:
        """Async Originate; returns when its OriginateResponse arrives.

        Raises AmiActionError if Asterisk rejects it at once, AmiOriginateUnknown if the link
        drops or no outcome arrives in time (default timeout_ms/1000 + action_timeout). Never
        re-sent by this client.
        """
        if application is None and (context is None or exten is None):
            raise AmiInvalidAction("Originate needs context+exten(+priority) or application")
        fields: list[tuple[str, str]] = [("Channel", channel), ("Async", "true")]
        if application is not None:
            fields.append(("Application", application))
            if data is not None:
                fields.append(("Data", data))
        else:
            assert context is not None and exten is not None
            fields += [("Context", context), ("Exten", exten), ("Priority", str(priority or 1))]
        fields.append(("Timeout", str(int(timeout_ms))))
        if caller_id is not None:
            fields.append(("CallerID", caller_id))
        if channel_id is not None:
            fields.append(("ChannelId", channel_id))
        if account is not None:
            fields.append(("Account", account))
        for name, value in (variables or {}).items():
            if "=" in name or "," in value:
                raise AmiInvalidAction(f"Originate variable {name!r} must not contain '=' / ','")
            fields.append(("Variable", f"{name}={value}"))
        act = build_action("Originate", fields)
        timeout = (
            action_timeout
            if action_timeout is not None
            else (timeout_ms / 1000.0 + self.action_timeout)
        )
        try:
            result = await self._request(act, as_list=None, limit=timeout)
        except AmiTimeout as exc:
            raise AmiOriginateUnknown(
                f"no OriginateResponse for {channel} within {timeout:.1f}s: outcome unknown",
                cause="timeout",
            ) from exc
        if isinstance(result, AmiMessage):
            _check_success("Originate", result)
            raise AmiOriginateUnknown(
                f"Originate for {channel} was accepted without an OriginateResponse",
                cause="protocol",
            )
        event = result[-1]
        try:
            reason = int(event.get("Reason", "0"))
        except ValueError:
            reason = 0
        return OriginateResult(
            success=event.get("Response") == "Success",
            reason=reason,
            channel=event.get("Channel"),
            uniqueid=event.get("Uniqueid"),
            event=event,
        )

    async def command(self, cli: str, *, timeout: float | None = None) -> list[str]:  # noqa: ASYNC109
        """Run a CLI command (Asterisk 14+ format); return its Output lines."""
        act = build_action("Command", [("Command", cli)])
        result = await self._request(act, as_list=False, limit=timeout)
        assert isinstance(result, AmiMessage)
        output = result.get_all("Output")
        if result.get("Response") != "Success":
            raise AmiActionError("Command", "\n".join(output) or result.get("Message"))
        return output

    async def queue_add(
        self,
        interface: str,
        queue: str,
        *,
        member_name: str | None = None,
        penalty: int | None = None,
        paused: bool | None = None,
        state_interface: str | None = None,
    ) -> AmiMessage:
        fields = [("Queue", queue), ("Interface", interface)]
        if member_name is not None:
            fields.append(("MemberName", member_name))
        if penalty is not None:
            fields.append(("Penalty", str(penalty)))
        if paused is not None:
            fields.append(("Paused", "true" if paused else "false"))
        if state_interface is not None:
            fields.append(("StateInterface", state_interface))
        return await self.send_action("QueueAdd", fields)

    async def queue_remove(self, interface: str, queue: str) -> AmiMessage:
        return await self.send_action("QueueRemove", [("Queue", queue), ("Interface", interface)])

    async def queue_pause(
        self, interface: str, queue: str | None, paused: bool, reason: str | None = None
    ) -> AmiMessage:
        """Pause/unpause a member in one queue, or in all its queues when `queue` is None."""
        fields = [("Interface", interface), ("Paused", "true" if paused else "false")]
        if queue is not None:
            fields.append(("Queue", queue))
        if reason is not None:
            fields.append(("Reason", reason))
        return await self.send_action("QueuePause", fields)

    async def hangup(self, channel: str, cause: int | None = None) -> AmiMessage:
        fields = [("Channel", channel)]
        if cause is not None:
            fields.append(("Cause", str(cause)))
        return await self.send_action("Hangup", fields)

    async def redirect(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int | str = 1,
        extra_channel: str | None = None,
    ) -> AmiMessage:
        fields = [("Channel", channel), ("Context", context), ("Exten", exten)]
        fields.append(("Priority", str(priority)))
        if extra_channel is not None:
            fields += [
                ("ExtraChannel", extra_channel),
                ("ExtraContext", context),
                ("ExtraExten", exten),
                ("ExtraPriority", str(priority)),
            ]
        return await self.send_action("Redirect", fields)

    async def getvar(self, channel: str, variable: str) -> str:
        resp = await self.send_action("Getvar", [("Channel", channel), ("Variable", variable)])
        return resp.get("Value")

    async def setvar(self, channel: str, variable: str, value: str) -> None:
        await self.send_action(
            "Setvar", [("Channel", channel), ("Variable", variable), ("Value", value)]
        )

    # -- internals: requests -------------------------------------------------------------------

    async def _request(
        self, act: Action, *, as_list: bool | None, limit: float | None
    ) -> AmiMessage | list[AmiMessage]:
        proto = self._proto
        if not self._connected or proto is None or proto.closed:
            raise AmiNotConnected(f"AMI not connected; {act['action']} not sent")
        return await self._roundtrip(proto, act, as_list=as_list, limit=limit)

    async def _roundtrip(
        self,
        proto: _AmiProtocol,
        act: Action,
        *,
        as_list: bool | None,
        limit: float | None,
        patient: bool = False,
    ) -> AmiMessage | list[AmiMessage]:
        """Send `act` and wait for its reply. `patient`: the time limit starts again whenever
        reading was held meanwhile (the reply may be waiting unread; our own Ping/resync must
        not drop a link only because the consumer is behind)."""
        limit = self.action_timeout if limit is None else limit
        fut = proto.send_action(act, as_list=as_list)
        try:
            while True:
                holds = proto.holds
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the reply
                    # and drops a cancellation that arrives with it (close() would then wait
                    # forever for a watchdog that goes on pinging)
                    async with asyncio.timeout(limit):
                        result = await (asyncio.shield(fut) if patient else fut)
                    break
                except TimeoutError:
                    if patient and (proto.held or proto.holds != holds) and not proto.closed:
                        continue
                    fut.cancel()
                    proto.forget(act)
                    self._action_timeouts += 1
                    raise AmiTimeout(
                        f"no reply to AMI action {act['action']} within {limit:.1f}s"
                    ) from None
        except asyncio.CancelledError:
            fut.cancel()
            proto.forget(act)
            raise
        return _unwrap(result)

    # -- internals: session supervision --------------------------------------------------------

    def _new_protocol(self) -> _AmiProtocol:
        return _AmiProtocol(framer=self._framer, deliver=self._deliver)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        established = False
        try:
            while True:
                await self._consumer_caught_up()
                try:
                    proto = await self._open_session()
                except AmiLoginError as exc:
                    self._stop_with(exc, notify=established or not self._wait_first)
                    return
                except AmiError as exc:
                    if self._wait_first and not established:
                        self._stop_with(exc, notify=False)
                        return
                    delay = self._backoff(attempt)
                    attempt += 1
                    log.warning("%s; retrying in %.2fs", exc, delay)
                    self._state = "reconnecting" if established else "connecting"
                    await asyncio.sleep(delay)
                    continue
                established = True
                started = loop.time()
                await self._run_session(proto)
                self._reconnects += 1
                self._state = "reconnecting"
                if loop.time() - started >= self._reconnect_max:
                    attempt = 0
                delay = self._backoff(attempt)
                attempt += 1
                log.info("AMI reconnecting in %.2fs", delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            proto_now = self._proto
            was_connected = self._state == "connected"
            self._connected = False
            if proto_now is not None:
                proto_now._fail_pending(AmiClosed("AMI client closed"))
                proto_now.close()
            if was_connected:
                self._defer(self._on_disconnected, AmiClosed("AMI client closed"))
            self._resolve_ready()
            raise

    async def _consumer_caught_up(self) -> None:
        """Wait until the consumer is back at the low-water mark: a new link would only be
        held unread (its login reply included) until then."""
        if self._queued <= self._low_water:
            return
        log.warning(
            "AMI consumer is %d messages behind; reconnecting once it has caught up", self._queued
        )
        loop = asyncio.get_running_loop()
        while self._queued > self._low_water:
            self._caught_up = loop.create_future()
            try:
                await self._caught_up
            finally:
                self._caught_up = None

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt, minimum=self._reconnect_min, maximum=self._reconnect_max, rand=self._rand
        )

    async def _open_session(self) -> _AmiProtocol:
        assert self._manager is not None
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self.action_timeout):  # not wait_for: see _roundtrip
                _, proto = await self._manager.connect()
        except TimeoutError:
            raise AmiConnectError(f"connect to AMI at {where} timed out") from None
        except OSError as exc:
            raise AmiConnectError(f"cannot connect to AMI at {where}: {exc}") from exc
        assert isinstance(proto, _AmiProtocol)
        self._manager.protocol = proto
        self._proto = proto
        if self._auth == "md5":
            credentials = [("AuthType", "MD5"), ("Key", await self._md5_key(proto, where))]
        else:
            credentials = [("Secret", self._secret)]
        login = build_action(
            "Login", [("Username", self._username), *credentials, ("Events", self._events)]
        )

        def logged_in() -> None:  # runs in data_received, before the frames that follow
            if not login.future.cancelled() and login.future.exception() is None:
                reply = _unwrap(login.future.result())
                if isinstance(reply, AmiMessage) and reply.get("Response") == "Success":
                    self._defer(self._on_connected)

        proto.on_complete[login.action_id] = logged_in
        try:
            reply = await self._roundtrip(proto, login, as_list=False, limit=self.action_timeout)
        except AmiError as exc:
            proto.close()
            raise AmiConnectError(f"AMI login at {where} got no reply: {exc}") from exc
        assert isinstance(reply, AmiMessage)
        if reply.get("Response") != "Success":
            proto.close()
            raise AmiLoginError(
                f"Asterisk at {where} refused AMI login ({self._auth}) for user "
                f"{self._username!r}: {reply.get('Message') or reply.get('Response')}"
            )
        if self._framer.version is None:
            log.warning("AMI peer at %s sent no 'Asterisk Call Manager/' banner", where)
        log.info("AMI logged in at %s (AMI %s)", where, self._framer.version)
        return proto

    async def _md5_key(self, proto: _AmiProtocol, where: str) -> str:
        """`Action: Challenge` -> lowercase hex md5(challenge + secret) (compared with strcmp)."""
        challenge = build_action("Challenge", [("AuthType", "MD5")])
        try:
            reply = await self._roundtrip(
                proto, challenge, as_list=False, limit=self.action_timeout
            )
        except AmiError as exc:
            proto.close()
            raise AmiConnectError(f"AMI Challenge at {where} got no reply: {exc}") from exc
        assert isinstance(reply, AmiMessage)
        value = reply.get("Challenge")
        if reply.get("Response") != "Success" or not value:
            proto.close()
            raise AmiLoginError(
                f"Asterisk at {where} refused the MD5 challenge "
                f"({reply.get('Message') or reply.get('Response') or 'no Challenge value'}): "
                "it cannot do MD5 logins; use plaintext (CALLCENTER_AMI_AUTH=plain)"
            )
        digest = hashlib.md5((value + self._secret).encode("utf-8"), usedforsecurity=False)
        return digest.hexdigest()

    async def _run_session(self, proto: _AmiProtocol) -> None:
        self._connected = True
        self._state = "connected"
        watchdog = asyncio.create_task(self._watchdog(proto), name="ami-watchdog")
        resync = asyncio.create_task(self._resync(proto), name="ami-resync")
        try:
            exc = await asyncio.shield(proto.lost)
        finally:
            self._connected = False
            if self._paused is proto:
                self._paused = None  # dead: nothing to resume; the next link starts reading
            for task in (watchdog, resync):
                task.cancel()
            await asyncio.gather(watchdog, resync, return_exceptions=True)
        self._resolve_ready()
        reason = AmiConnectionLost(f"AMI connection lost: {exc or 'closed by peer'}")
        log.warning("%s", reason)
        self._defer(self._on_disconnected, reason)

    async def _watchdog(self, proto: _AmiProtocol) -> None:
        while not proto.closed:
            await asyncio.sleep(self._ping_interval)
            if proto.held:
                continue  # not reading: the reply could not be seen anyway
            try:
                await self._roundtrip(
                    proto,
                    build_action("Ping"),
                    as_list=False,
                    limit=self._ping_timeout,
                    patient=True,
                )
            except AmiTimeout:
                self._ping_timeouts += 1
                log.warning(
                    "AMI: no Ping reply within %.1fs; dropping the connection", self._ping_timeout
                )
                proto.close()
                return
            except AmiError:
                return

    async def _resync(self, proto: _AmiProtocol) -> None:
        """Fetch the channels, then the queues; each part joins the event stream right after
        its own last item (see ResyncSnapshot). The channel list must not be applied after
        events newer than it: a call starting in between would be ended as a ghost."""
        channels = build_action("CoreShowChannels")
        queues = build_action("QueueStatus")

        def channels_listed() -> None:  # runs in data_received right after the last item
            items = _list_items(channels)
            if items is not None:
                self._defer(self._on_resync, ResyncSnapshot(items, (), "channels"))

        def queues_listed() -> None:  # likewise, after QueueStatusComplete
            listed, items = _list_items(channels), _list_items(queues)
            if listed is not None and items is not None:
                self._resyncs += 1
                self._defer(self._on_resync, ResyncSnapshot(listed, items, "queues"))

        # One after the other: the queue part is asked for once the channel part is in place.
        proto.on_complete[channels.action_id] = channels_listed
        proto.on_complete[queues.action_id] = queues_listed
        try:
            for act in (channels, queues):
                await self._roundtrip(
                    proto, act, as_list=None, limit=self.action_timeout, patient=True
                )
                if _list_items(act) is None:
                    self._resync_failures += 1
                    log.error(
                        "AMI resync: %s refused by Asterisk (read permission?); state may be stale",
                        act["action"],
                    )
                    return
        except AmiTimeout as exc:
            self._resync_failures += 1
            log.warning("AMI resync timed out (%s); reconnecting", exc)
            proto.close()
        except AmiError:
            pass  # the link went down: the next session resyncs
        finally:
            proto.forget(queues)
            self._resolve_ready()

    def _stop_with(self, exc: AmiError, *, notify: bool) -> None:
        self._failure = exc
        self._state = "stopped"
        self._connected = False
        log.error("AMI client stopped: %s", exc)
        if notify:
            self._defer(self._on_disconnected, exc)
        if self._wait_first and self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
        self._resolve_ready()

    def _resolve_ready(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    # -- internals: the sequential consumer ----------------------------------------------------

    def _defer(self, fn: Callable[..., Awaitable[None]] | None, *args: Any) -> None:
        if fn is not None:
            self._enqueue(_Deferred(functools.partial(fn, *args)))

    def _enqueue(self, item: _Item) -> None:
        self._inbox.append(item)
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        w = self._wakeup
        if w is not None and not w.done():
            w.set_result(None)

    def _deliver(self, msgs: list[AmiMessage], proto: _AmiProtocol) -> None:
        """Called from data_received: queue messages for the consumer; pause reading if full."""
        self._inbox.append(msgs)
        self._queued += len(msgs)
        self._wake_consumer()
        if self._queued > self._high_water and self._paused is not proto:
            proto.hold_reading()
            self._paused = proto
            log.warning("AMI consumer is %d messages behind; reading paused", self._queued)

    def _maybe_resume(self) -> None:
        if self._queued > self._low_water:
            return
        p = self._paused
        if p is not None:
            self._paused = None
            p.release_reading()
        w = self._caught_up
        if w is not None and not w.done():
            w.set_result(None)

    async def _consume(self) -> None:
        """The one task that runs every callback, in stream order, one at a time."""
        inbox = self._inbox
        popleft = inbox.popleft
        loop = asyncio.get_running_loop()
        clock = time.perf_counter
        while True:
            if not inbox:
                self._maybe_resume()
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
            # Work for at most _CONSUMER_SLICE, then let the loop breathe (reads, pings).
            deadline = clock() + _CONSUMER_SLICE
            while inbox:
                item = popleft()
                if type(item) is list:
                    try:
                        await self._hand_over(item)
                    finally:
                        self._queued -= len(item)
                elif isinstance(item, _Deferred):
                    try:
                        await item.call()
                    except Exception:
                        self._consumer_errors += 1
                        log.exception("AMI consumer callback failed (the link stays up)")
                else:
                    return
                if clock() > deadline:
                    self._maybe_resume()
                    await asyncio.sleep(0)
                    deadline = clock() + _CONSUMER_SLICE

    async def _hand_over(self, msgs: list[AmiMessage]) -> None:
        """Give the events of one read to on_messages (all at once) or on_message (one by one);
        replies that no action waits for are dropped."""
        events = [m for m in msgs if m.kind == "event"]
        if len(events) < len(msgs):
            for m in msgs:
                if m.kind != "event":
                    self._stray += 1
                    log.debug("AMI: dropped reply with no pending action: %r", m.name)
        if not events:
            return
        self._events_delivered += len(events)
        if self._on_messages is not None:
            try:
                await self._on_messages(events)
            except Exception:
                self._consumer_errors += 1
                log.exception("AMI consumer callback failed (the link stays up)")
            return
        on_message = self._on_message
        for event in events:
            try:
                await on_message(event)
            except Exception:
                self._consumer_errors += 1
                log.exception("AMI consumer callback failed (the link stays up)")


def _check_success(action: str, msg: AmiMessage) -> None:
    response = msg.get("Response")
    if response != "Success":
        raise AmiActionError(action, msg.get("Message"), response or msg.name)


def _list_items(act: Action) -> tuple[AmiMessage, ...] | None:
    """The items of a finished, successful list action (no Response, no *Complete)."""
    fut = act.future
    if not fut.done() or fut.cancelled() or fut.exception() is not None:
        return None
    result = _unwrap(fut.result())
    if isinstance(result, AmiMessage) or result[0].get("Response") != "Success":
        return None
    return tuple(result[1:-1])
