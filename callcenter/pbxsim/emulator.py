"""The Asterisk 20 emulator facade: AMI server + channels + dialplan + queues + FastAGI + traffic.

    async with Emulator(config=EmulatorConfig(agi_port=4573, speed=50.0)) as emu:
        host, port = emu.ami_address
        summary = await emu.inbound_call(CallerModel(number="13800138000", name="张三"))

The inbound dialplan is the one of ami_transcripts/README.txt:

    [from-trunk]
    exten => <did>,1,Set(__CALLCENTER_DID=${EXTEN})
     same => n,Answer()
     same => n,AGI(agi://<host>:<port>/<script>)
     same => n,Queue(${IVR_QUEUE},t,,,300)
     same => n,Hangup()
    exten => agi-failed,1,Set(IVR_QUEUE=<default queue>)   ; AGISTATUS=FAILURE, or no IVR_QUEUE
     same => n,Queue(${IVR_QUEUE},t,,,300)
     same => n,Hangup()

An agent's phone can call out (`internal_call`: agent to agent, the consultation of an attended
transfer) and hand a queue caller on (`blind_transfer`, `attended_transfer`), with the events
Asterisk sends for a SIP REFER: BlindTransfer/AttendedTransfer, AgentComplete (Reason:
transfer), and then only channel events for the caller and the target.

Run it stand-alone with `python -m callcenter.pbxsim.emulator --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from types import TracebackType

from callcenter.asterisk.message import AmiMessage
from callcenter.pbxsim.agi_client import (
    AgiSession,
    AgiUrl,
    AsyncAgiSession,
    Prompts,
    substitute,
)
from callcenter.pbxsim.ami_server import (
    ActionHandler,
    ActionReply,
    AmiServer,
    AmiSession,
    AmiUser,
    CliResult,
)
from callcenter.pbxsim.callers import CallerModel
from callcenter.pbxsim.pbx import (
    STATE_DOWN,
    STATE_RING,
    STATE_RINGING,
    STATE_UP,
    Bridge,
    Channel,
    Clock,
    EventSink,
    Ids,
    Pbx,
    RealClock,
    parse_channelvars,
    wait_any,
)
from callcenter.pbxsim.queues import Acd, AgentProfile, Member, QueueConfig, Reply
from callcenter.pbxsim.recording import RecordingWriter

log = logging.getLogger(__name__)

Location = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Step:
    app: str
    data: str = ""


def exten_matches(pattern: str, exten: str) -> bool:
    """Asterisk extension matching: literal, or `_` patterns with X Z N [..] . !"""
    if not pattern.startswith("_"):
        return pattern == exten
    rx = ""
    i, p = 0, pattern[1:]
    while i < len(p):
        c = p[i].upper()
        if c == "X":
            rx += "[0-9]"
        elif c == "Z":
            rx += "[1-9]"
        elif c == "N":
            rx += "[2-9]"
        elif c == ".":
            rx += ".+"
        elif c == "!":
            rx += ".*"
        elif c == "[":
            j = p.index("]", i)
            rx += "[" + p[i + 1 : j] + "]"
            i = j
        else:
            rx += re.escape(p[i])
        i += 1
    return re.fullmatch(rx, exten) is not None


@dataclass
class Dialplan:
    contexts: dict[str, dict[str, list[Step]]] = field(default_factory=dict)

    def add(self, context: str, exten: str, steps: Sequence[Step]) -> None:
        self.contexts.setdefault(context, {})[exten] = list(steps)

    def lookup(self, context: str, exten: str) -> list[Step] | None:
        ctx = self.contexts.get(context, {})
        if exten in ctx:
            return ctx[exten]
        for pat, steps in ctx.items():
            if pat.startswith("_") and exten_matches(pat, exten):
                return steps
        return None

    def exists(self, context: str, exten: str, priority: int) -> bool:
        steps = self.lookup(context, exten)
        return steps is not None and 1 <= priority <= len(steps)


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulated PBX. Times are simulated seconds."""

    ami_host: str = "127.0.0.1"
    ami_port: int = 0
    ami_users: dict[str, str] = field(default_factory=lambda: {"callcenter": "secret"})
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    agi_script: str = "hotline"
    dids: tuple[str, ...] = ("5551000",)
    default_queue: str = "general"
    queues: list[QueueConfig] = field(
        default_factory=lambda: [QueueConfig("general"), QueueConfig("support")]
    )
    agents: list[AgentProfile] = field(
        default_factory=lambda: [
            AgentProfile("PJSIP/1001", "Alice Agent"),
            AgentProfile("PJSIP/1002", "Bob Agent"),
            AgentProfile("PJSIP/1003", "王芳"),
        ]
    )
    #: queue name -> member interfaces (default: every agent in every queue)
    members: dict[str, list[str]] | None = None
    speed: float = 1.0
    seed: int = 0
    recordings_dir: Path | None = None
    monitor_dir: str | None = None
    prompts: Prompts = field(default_factory=Prompts)
    version: str = "20.5.0"
    tz: tzinfo | None = None
    tts: bool = True
    #: where AGI() really connects for a URL's (host, port) - lets a test keep the dialplan's
    #: `agi://127.0.0.1:4573/...` text while its FastAGI server listens on an ephemeral port
    agi_address_map: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    agi_connect_timeout: float = 2.0
    #: manager.conf `channelvars`: one `ChanVariable: name=value` line per name in every
    #: channel block of every event (`DestChanVariable` for the dialled party), e.g.
    #: ("CALLCENTER_DID", "CALLERID(num)"); empty = none, as the transcripts assume
    channelvars: tuple[str, ...] = ()


@dataclass
class CallSummary:
    uniqueid: str
    channel: str
    caller: CallerModel
    agi_status: str = ""
    ivr_queue: str = ""
    outcome: str = "unknown"  # answered | abandoned | ivr_hangup | no_queue | timeout | transferred
    agent: str = ""
    recording: Path | None = None
    start: float = 0.0
    end: float = 0.0


class Emulator:
    """PBX core + AMI server. Use as `async with Emulator(...)` or call start()/stop()."""

    def __init__(
        self,
        *,
        config: EmulatorConfig | None = None,
        clock: Clock | None = None,
        ids: Ids | None = None,
        server: AmiServer | None = None,
        publish: EventSink | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = cfg = config or EmulatorConfig()
        self.clock: Clock = clock or RealClock(speed=cfg.speed)
        self.server = server
        if self.server is None and publish is None:
            self.server = AmiServer(
                users={u: AmiUser(secret=s) for u, s in cfg.ami_users.items()},
                clock_ns=lambda: int(self.clock.time() * 1e9),
            )
        sink: EventSink = publish or self._publish_to_server
        self.pbx = Pbx(
            publish=sink,
            clock=self.clock,
            ids=ids,
            tz=cfg.tz,
            version=cfg.version,
            channelvars=cfg.channelvars,
        )
        self.rng = rng or random.Random(cfg.seed)
        self.recorder: RecordingWriter | None = None
        monitor_dir = cfg.monitor_dir
        if cfg.recordings_dir is not None:
            cfg.recordings_dir.mkdir(parents=True, exist_ok=True)
            self.recorder = RecordingWriter(use_tts=cfg.tts)
            monitor_dir = monitor_dir or str(cfg.recordings_dir.resolve())
        self.acd = Acd(
            pbx=self.pbx,
            rng=self.rng,
            monitor_dir=monitor_dir or "/var/spool/asterisk/monitor",
            recorder=self._record if self.recorder is not None else None,
        )
        self.dialplan = build_dialplan(cfg)
        self.acd.extension_exists = self.dialplan.exists
        self.acd.spawn_dialplan = self._spawn_dialplan
        self.acd.run_dialplan = self._run_dialplan
        self.acd.run_app = self._run_app_only
        self.astdb: dict[tuple[str, str], str] = {}
        self._async_agi: dict[str, AsyncAgiSession] = {}
        self.summaries: list[CallSummary] = []
        self._recordings: set[asyncio.Task[Path | None]] = set()
        self._calls: set[asyncio.Task[CallSummary]] = set()
        self._legs: set[asyncio.Task[None]] = set()
        self._callers: dict[str, CallerModel] = {}
        self._summary_by_uid: dict[str, CallSummary] = {}
        #: caller channel name -> the attended transfer's target it is to be bridged with
        self._transfer_peers: dict[str, Channel] = {}
        self._transferred: set[str] = set()  # callers talking to an attended transfer's target
        self.ami_address: tuple[str, int] = ("", 0)
        for profile in cfg.agents:
            self.acd.add_agent(profile)
        for qc in cfg.queues:
            self.acd.add_queue(qc)
            wanted = (cfg.members or {}).get(qc.name) if cfg.members is not None else None
            for profile in cfg.agents:
                if wanted is None or profile.interface in wanted:
                    self.acd.add_member(qc.name, profile.interface, name=profile.name)
        if self.server is not None:
            self._register_actions(self.server)

    # ------------------------------------------------------------------ lifecycle
    def _publish_to_server(self, name: str, klass: str, fields: Sequence[tuple[str, str]]) -> None:
        if self.server is not None:
            self.server.publish(name, klass, fields)

    async def start(self) -> tuple[str, int]:
        if self.server is not None:
            self.ami_address = await self.server.start(self.config.ami_host, self.config.ami_port)
        return self.ami_address

    async def stop(self) -> None:
        for task in list(self._calls):
            task.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        await asyncio.gather(*self._legs, return_exceptions=True)
        await self.acd.drain()
        await self.wait_recordings()
        if self.server is not None:
            await self.server.shutdown()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_recordings(self) -> None:
        while self._recordings:
            await asyncio.gather(*list(self._recordings), return_exceptions=True)

    # ------------------------------------------------------------------ calls
    async def inbound_call(self, caller: CallerModel, *, did: str | None = None) -> CallSummary:
        """One call from the trunk, run to its end (IVR, queue, agent, hang-up, Cdr)."""
        did = did or caller.did or self.config.dids[0]
        ch = self.pbx.new_channel(
            endpoint="trunk",
            context="from-trunk",
            exten=did,
            state=STATE_RING,
            caller_num=caller.number,
            caller_name=caller.name,
            language=caller.language,
            accountcode=caller.accountcode,
            dnid=did,
        )
        summary = CallSummary(ch.uniqueid, ch.name, caller, start=self.clock.time())
        self._callers[ch.name] = caller
        self._summary_by_uid[ch.uniqueid] = summary
        try:
            await self._run_dialplan(ch, ("from-trunk", did, 1), None)
        finally:
            self._callers.pop(ch.name, None)
            self._summary_by_uid.pop(ch.uniqueid, None)
        summary.end = self.clock.time()
        summary.agi_status = ch.variables.get("AGISTATUS", "")
        summary.ivr_queue = ch.variables.get("IVR_QUEUE", "")
        self.summaries.append(summary)
        return summary

    async def internal_call(
        self, interface: str, exten: str, *, context: str | None = None
    ) -> CallSummary:
        """An agent phone (`PJSIP/1001`) dials `exten`; its answered channel runs the dialplan."""
        agent = self.acd.agents[interface]
        tech = interface.split("/", 1)[0]
        ch = self.pbx.new_channel(
            endpoint=agent.profile.endpoint,
            context=context or agent.profile.context,
            exten=exten,
            state=STATE_UP,
            tech=tech,
            caller_num=agent.profile.endpoint,
            caller_name=agent.profile.name,
            dnid=exten,
        )
        caller = CallerModel(number=agent.profile.endpoint, name=agent.profile.name, did=exten)
        summary = CallSummary(ch.uniqueid, ch.name, caller, start=self.clock.time())
        self._callers[ch.name] = caller
        try:
            await self._run_dialplan(ch, (ch.context, exten, 1), None)
        finally:
            self._callers.pop(ch.name, None)
        summary.end = self.clock.time()
        summary.agi_status = ch.variables.get("AGISTATUS", "")
        summary.outcome = "completed"
        return summary

    def place_call(
        self, caller: CallerModel, *, did: str | None = None
    ) -> asyncio.Task[CallSummary]:
        """Start `inbound_call` in the background."""
        task = asyncio.get_running_loop().create_task(self.inbound_call(caller, did=did))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return task

    # ------------------------------------------------------------------ transfers
    def _connection(self, interface: str, *, own: bool) -> tuple[Channel, Channel] | None:
        """(channel, bridged peer) where `interface`'s phone talks: the caller of a queue call
        and the agent's leg, answered by the queue (`own` False), or the phone's own call and
        its far end (`own`)."""
        mine = interface + "-"
        for ch in self.pbx.channels.values():
            peer = self.pbx.channels.get(ch.dest_channel) if ch.dest_channel else None
            if peer is None or not ch.bridge_id or ch.bridge_id != peer.bridge_id:
                continue
            if ch.uniqueid != ch.linkedid or ch.name.startswith(mine) != own:
                continue
            if own:
                return ch, peer
            in_queue = ch.application.lower() == "queue" and ch.name not in self._transferred
            if in_queue and peer.name.startswith(mine):
                return ch, peer
        return None

    def blind_transfer(self, interface: str, exten: str) -> bool:
        """The agent at `interface` blind-transfers the queue caller they talk to to `exten`
        (a SIP REFER): BlindTransfer, app_queue's AgentComplete (Reason: transfer), the agent's
        leg hangs up and the caller runs the agent leg's context at `exten`. False when the
        agent talks to no queue caller or `exten` does not exist there."""
        found = self._connection(interface, own=False)
        if found is None:
            return False
        caller, leg = found
        if not self.dialplan.exists(leg.context, exten, 1):
            return False
        self.pbx.emit(
            "BlindTransfer",
            "call",
            [
                ("Result", "Success"),
                *leg.snapshot("Transferer"),
                *caller.snapshot("Transferee"),
                *Bridge(caller.bridge_id, [caller, leg]).block(),
                ("IsExternal", "No"),
                ("Context", leg.context),
                ("Extension", exten),
            ],
        )
        caller.redirect_to = (leg.context, exten, 1)
        caller.redirected.set()
        return True

    def attended_transfer(self, interface: str) -> bool:
        """The agent at `interface`, who called someone from the phone (the consultation: a
        call of its own, see `internal_call`) while a queue caller waits, completes the
        transfer: AttendedTransfer, app_queue's AgentComplete (Reason: transfer), both of the
        agent's channels hang up and the caller is bridged with the consulted party, whose
        Linkedid becomes the caller's (the oldest in the bridge). False when the agent has no
        such pair of calls."""
        queued = self._connection(interface, own=False)
        consult = self._connection(interface, own=True)
        if queued is None or consult is None:
            return False
        (caller, leg), (second, target) = queued, consult
        self.pbx.emit(
            "AttendedTransfer",
            "call",
            [
                ("Result", "Success"),
                *leg.snapshot("OrigTransferer"),
                *_prefixed("Orig", Bridge(caller.bridge_id, [caller, leg]).block()),
                *second.snapshot("SecondTransferer"),
                *_prefixed("Second", Bridge(second.bridge_id, [second, target]).block()),
                ("DestType", "Bridge"),
                ("DestBridgeUniqueid", caller.bridge_id),
                *caller.snapshot("Transferee"),
                *target.snapshot("TransferTarget"),
                ("IsExternal", "No"),
            ],
        )
        self._transfer_peers[caller.name] = target
        target.redirected.set()  # the consultation's Dial lets go of it
        caller.redirected.set()  # app_queue ends the agent's part
        return True

    async def _bridge_with(self, ch: Channel, peer: Channel) -> None:
        """The caller talks to an attended transfer's target until either hangs up."""
        peer.redirected.clear()
        peer.linkedid = ch.linkedid  # bridge.c gives every channel the oldest Linkedid
        self._transferred.add(ch.name)
        bridge = self.pbx.bridge(ch, peer)
        self.pbx.bridge_peer_vars(ch, peer)
        ch.dest_channel = peer.name
        agent = self.acd.agents.get(peer.name.rsplit("-", 1)[0])
        talk = agent.talk_seconds(self.rng) if agent is not None else self.rng.uniform(20, 180)
        try:
            r = await wait_any(self.clock, talk, [ch.hangup_requested, peer.hangup_requested])
            if r is None:
                self.pbx.request_hangup(peer, 16)
        finally:
            self._transferred.discard(ch.name)
            self.pbx.unbridge(bridge)
            self.pbx.hangup(peer, 16)
            if agent is not None:
                agent.in_call = False
                self.acd.device_changed(agent)
            self.pbx.hangup(ch, 16)

    def hangup(self, channel: str, cause: int = 16) -> bool:
        """The far end of `channel` hangs up (a BYE)."""
        ch = self.pbx.channels.get(channel)
        if ch is None:
            return False
        self.pbx.request_hangup(ch, cause)
        return True

    # ------------------------------------------------------------------ dialplan
    def _spawn_dialplan(self, ch: Channel, where: Location) -> None:
        task = asyncio.get_running_loop().create_task(self._run_dialplan(ch, where, None))
        self._legs.add(task)
        task.add_done_callback(self._legs.discard)

    async def _run_dialplan(
        self, ch: Channel, where: Location, first_step: Callable[[], None] | None
    ) -> None:
        context, exten, prio = where
        ch.context, ch.exten = context, exten
        try:
            while not ch.gone and not ch.hangup_requested.is_set():
                steps = self.dialplan.lookup(context, exten)
                if steps is None or not 1 <= prio <= len(steps):
                    break
                step = steps[prio - 1]
                data = substitute(ch, step.data)
                self.pbx.newexten(ch, prio, step.app, data)
                if first_step is not None:
                    first_step()
                    first_step = None
                nxt = await self._exec(ch, step.app, data)
                if ch.redirected.is_set() and ch.redirect_to is not None and not ch.gone:
                    ch.redirected.clear()
                    nxt = ch.redirect_to
                    self._mark(ch, "transferred")
                if nxt is None:
                    break
                context, exten, prio = nxt
                ch.context, ch.exten = context, exten
        finally:
            if first_step is not None:
                first_step()
            if not ch.gone:
                self.pbx.hangup(ch, ch.hangup_cause or 16)
            self.pbx.cdr(ch)

    def _mark(self, ch: Channel, outcome: str, agent: str | None = None) -> None:
        s = self._summary_by_uid.get(ch.uniqueid)
        if s is not None:
            s.outcome = outcome
            if agent is not None:
                s.agent = agent

    async def _exec(self, ch: Channel, app: str, data: str) -> Location | None:
        """Run one dialplan application; the next location, or None to stop."""
        here = (ch.context, ch.exten, ch.priority + 1)
        name = app.lower()
        if name == "hangup":
            self.pbx.hangup(ch, int(data) if data.isdigit() else 16)
            return None
        if name == "goto":
            parts = data.split(",")
            if len(parts) == 3 and parts[2].isdigit():
                return parts[0], parts[1], int(parts[2])
            if len(parts) == 2 and parts[1].isdigit():
                return ch.context, parts[0], int(parts[1])
            return here
        if name == "agi":
            return await self._agi(ch, data, here)
        if name == "queue":
            caller = self._callers.get(ch.name)
            outcome = await self.acd.queue_app(ch, data, caller)
            if ch.dest_channel:
                agent = next(
                    (i for i, a in self.acd.agents.items() if ch.dest_channel.startswith(i + "-")),
                    "",
                )
                self._mark(ch, "answered", agent=agent)
                s = self._summary_by_uid.get(ch.uniqueid)
                if s is not None and ch.variables.get("MIXMONITOR_FILENAME"):
                    s.recording = Path(ch.variables["MIXMONITOR_FILENAME"])
            elif outcome == "hangup":
                self._mark(ch, "abandoned")
            elif outcome == "timeout":
                self._mark(ch, "timeout")
            if outcome in ("hangup", "fail"):
                return None
            peer = self._transfer_peers.pop(ch.name, None)
            if outcome == "redirect" and peer is not None:
                ch.redirected.clear()
                self._mark(ch, "transferred")
                await self._bridge_with(ch, peer)
                return None
            if outcome == "redirect" and ch.redirect_to is not None:
                ch.redirected.clear()
                self._mark(ch, "transferred")
                return ch.redirect_to
            return here
        if name == "dial":
            return await self._dial(ch, data, here)
        res = await self._run_app_only(ch, app, data)
        if res is None:
            log.warning("pbxsim: application %s not emulated", app)
        return here if (res or 0) >= 0 else None

    async def _agi(self, ch: Channel, data: str, here: Location) -> Location | None:
        if data.split(",")[0] == "agi:async":
            async_session = AsyncAgiSession(
                pbx=self.pbx,
                channel=ch,
                caller=self._callers.get(ch.name),
                prompts=self.config.prompts,
                apps=self._run_app_only,
                db=self.astdb,
                extension_exists=self.dialplan.exists,
            )
            self._async_agi[ch.name] = async_session
            try:
                async_result = await async_session.run()
            finally:
                self._async_agi.pop(ch.name, None)
            return None if async_result.status == "HANGUP" else here
        try:
            url = AgiUrl.parse(data)
        except ValueError:
            self.pbx.set_var(ch, "AGISTATUS", "FAILURE")
            return here
        real = self.config.agi_address_map.get((url.host, url.port))
        if real is not None:
            url = AgiUrl(real[0], real[1], url.script, url.request, url.args)
        session = AgiSession(
            pbx=self.pbx,
            channel=ch,
            url=url,
            connect_timeout=self.config.agi_connect_timeout,
            caller=self._callers.get(ch.name),
            prompts=self.config.prompts,
            apps=self._run_app_only,
            db=self.astdb,
            extension_exists=self.dialplan.exists,
        )
        result = await session.run()
        if result.status == "HANGUP":
            self._mark(ch, "ivr_hangup")
            return None
        if (
            result.status == "FAILURE"
            and not result.connected
            and self.dialplan.exists(ch.context, "agi-failed", 1)
        ):
            return ch.context, "agi-failed", 1
        if result.goto is not None:
            c, e, p = result.goto
            return c, e, p if p != ch.priority else p + 1
        if ch.context == "from-trunk" and not ch.variables.get("IVR_QUEUE"):
            # A live caller the IVR gave no queue (its server stopped or died mid-call; a flow
            # that ends the call hangs it up itself): the shipped dialplan's fallback queue.
            if self.dialplan.exists(ch.context, "agi-failed", 1):
                return ch.context, "agi-failed", 1
            self._mark(ch, "no_queue")
        return here

    async def _run_app_only(self, ch: Channel, app: str, data: str) -> int | None:
        """Applications usable from EXEC and Originate(Application=...)."""
        name = app.lower()
        pbx = self.pbx
        if name in ("playback", "background"):
            d = self.config.prompts.duration(data.split(",")[0])
            if d:
                r = await wait_any(self.clock, d, [ch.hangup_requested])
                if r is not None:
                    return -1
            pbx.set_var(ch, "PLAYBACKSTATUS", "SUCCESS" if d else "FAILED")
            return 0
        if name == "wait":
            secs = float(data) if data.replace(".", "", 1).isdigit() else 0.0
            return 0 if await wait_any(self.clock, secs, [ch.hangup_requested]) is None else -1
        if name in ("noop", "verbose", "log"):
            return 0
        if name == "set":
            if "=" in data:
                k, v = data.split("=", 1)
                pbx.set_var(ch, k, v)
            return 0
        if name == "answer":
            pbx.set_state(ch, STATE_UP)
            return 0
        if name == "mixmonitor":
            fname = data.split(",")[0]
            if not fname.startswith("/"):
                fname = f"{self.acd.monitor_dir.rstrip('/')}/{fname}"
            pbx.set_var(ch, "MIXMONITOR_FILENAME", fname)
            pbx.emit("MixMonitorStart", "call", ch.snapshot())
            return 0
        if name == "queue":
            outcome = await self.acd.queue_app(ch, data, self._callers.get(ch.name))
            return 0 if outcome in ("continue", "timeout") else -1
        if name == "hangup":
            pbx.request_hangup(ch, 16, publish=False)
            return -1
        return None

    async def _dial(self, ch: Channel, data: str, here: Location) -> Location | None:
        """Dial(Tech/resource[@trunk],timeout): an agent phone or the outside world."""
        target, *rest = data.split(",")
        timeout = float(rest[0]) if rest and rest[0].isdigit() else 60.0
        if "/" not in target:
            self.pbx.set_var(ch, "DIALSTATUS", "CHANUNAVAIL")
            return here
        tech, resource = target.split("/", 1)
        endpoint = resource.split("@", 1)[1] if "@" in resource else resource
        agent = self.acd.agents.get(f"{tech}/{endpoint}")
        if agent is not None and not agent.profile.registered:
            self.pbx.set_var(ch, "DIALSTATUS", "CHANUNAVAIL")
            return here
        leg = self.pbx.new_channel(
            endpoint=endpoint,
            context=agent.profile.context if agent else "from-trunk",
            exten="s",
            state=STATE_DOWN,
            tech=tech,
            caller_num=resource.split("@", 1)[0],  # app_dial: the dialled party's own number
            linkedid=ch.linkedid,
            parent=ch,
        )
        self.pbx.dial_event("DialBegin", ch, leg, [("DialString", resource)])
        if agent is not None:
            outcome, delay = agent.decide(self.rng)
        else:
            outcome = "answer" if self.rng.random() < 0.85 else "noanswer"
            delay = self.rng.uniform(3.0, 12.0)
        if outcome == "busy":
            self.pbx.dial_event("DialEnd", ch, leg, [("DialStatus", "BUSY")])
            self.pbx.hangup(leg, 17)
            self.pbx.set_var(ch, "DIALSTATUS", "BUSY")
            return here
        self.pbx.set_state(leg, STATE_RINGING)
        self.pbx.dial_event("DialState", ch, leg, [("DialStatus", "RINGING")])
        wait = min(delay, timeout) if outcome in ("answer", "reject") else timeout
        r = await wait_any(self.clock, wait, [ch.hangup_requested])
        if r is not None or outcome != "answer" or delay > timeout:
            status = "CANCEL" if r is not None else "NOANSWER"
            self.pbx.dial_event("DialEnd", ch, leg, [("DialStatus", status)])
            self.pbx.hangup(leg, 0 if r is not None else (21 if outcome == "reject" else 19))
            if r is None:
                self.pbx.set_var(ch, "DIALSTATUS", status)
                return here
            return None
        self.pbx.set_state(leg, STATE_UP)
        self.pbx.dial_event("DialEnd", ch, leg, [("DialStatus", "ANSWER")])
        if agent is not None:
            agent.in_call = True
            self.acd.device_changed(agent)
        bridge = self.pbx.bridge(ch, leg)
        self.pbx.bridge_peer_vars(ch, leg)
        ch.dest_channel = leg.name
        talk = agent.talk_seconds(self.rng) if agent is not None else self.rng.uniform(20, 180)
        events = [ch.hangup_requested, leg.hangup_requested, leg.redirected]
        r = await wait_any(self.clock, talk, events)
        if r == 2:  # an attended transfer took the dialled party: this side hangs up alone
            self.pbx.unbridge(bridge)
            self.pbx.hangup(ch, 16)
            return None
        if r is None:
            self.pbx.request_hangup(leg, 16)
        self.pbx.unbridge(bridge)
        self.pbx.hangup(leg, 16)
        if agent is not None:
            agent.in_call = False
            self.acd.device_changed(agent)
        self.pbx.hangup(ch, 16)
        return None

    # ------------------------------------------------------------------ recordings
    def _record(
        self,
        path: Path,
        ch: Channel,
        leg: Channel,
        seconds: float,
        caller: CallerModel | None,
        agent: AgentProfile,
    ) -> None:
        if self.recorder is None or self.config.recordings_dir is None:
            return
        target = self.config.recordings_dir / path.name
        caller = caller or self._callers.get(ch.name)
        task = asyncio.get_running_loop().create_task(
            self.recorder.write(
                target,
                seconds=seconds,
                caller_text=(caller.greeting if caller and caller.greeting else "你好"),
                caller_voice=(caller.language if caller else "zh"),
                agent_texts=(agent.greeting, agent.goodbye),
                agent_voice=agent.voice,
            )
        )
        self._recordings.add(task)
        task.add_done_callback(self._recordings.discard)

    # ------------------------------------------------------------------ AMI actions
    def _register_actions(self, server: AmiServer) -> None:
        acd = self.acd

        def simple(fn: Callable[[dict[str, str]], Reply]) -> ActionHandler:
            async def handler(session: AmiSession, msg: AmiMessage) -> ActionReply:
                return to_action_reply(fn(headers_dict(msg)))

            return handler

        async def originate(session: AmiSession, msg: AmiMessage) -> ActionReply:
            reply = await acd.action_originate(headers_dict(msg), msg.get_all("Variable"))
            return to_action_reply(reply)

        table: list[tuple[str, ActionHandler, str]] = [
            ("QueueStatus", simple(acd.action_queue_status), ""),
            ("QueueSummary", simple(acd.action_queue_summary), ""),
            ("QueueAdd", simple(acd.action_queue_add), "agent"),
            ("QueueRemove", simple(acd.action_queue_remove), "agent"),
            ("QueuePause", simple(acd.action_queue_pause), "agent"),
            ("CoreShowChannels", simple(acd.action_core_show_channels), "system,reporting"),
            ("Hangup", simple(acd.action_hangup), "system,call"),
            ("Redirect", simple(acd.action_redirect), "call"),
            ("Getvar", self._action_getvar, "call,reporting"),
            ("Setvar", self._action_setvar, "call"),
        ]
        for name, handler, priv in table:
            try:
                server.register_action(name, handler, privilege=priv)
            except ValueError:
                log.info("pbxsim: AMI action %s already provided by the server", name)
        server.register_action("Originate", originate, privilege="originate")
        server.register_action("AGI", self._action_agi, privilege="agi")
        for cmd, cli in (
            ("core show version", self._cli_version),
            ("queue show", self._cli_queue_show),
            ("core show channels", self._cli_channels),
        ):
            try:
                server.register_cli(cmd, cli)
            except ValueError:
                log.info("pbxsim: CLI command %r already provided by the server", cmd)

    async def _action_agi(self, session: AmiSession, msg: AmiMessage) -> ActionReply:
        name, command = msg.get("Channel"), msg.get("Command")
        if not name or not command:
            return ActionReply.error("Both, Channel and Command are *required*")
        if name not in self.pbx.channels:
            return ActionReply.error(f"Channel {name} does not exist.")
        agi_session = self._async_agi.get(name)
        if agi_session is None:
            return ActionReply.error(f"Failed to add AGI command to channel {name} queue")
        agi_session.add_command(command, msg.get("CommandID"))
        return ActionReply.success("Added AGI command to queue")

    async def _action_getvar(self, session: AmiSession, msg: AmiMessage) -> ActionReply:
        var = msg.get("Variable")
        if not var:
            return ActionReply.error("No variable specified")
        name = msg.get("Channel")
        value: str | None = ""
        if name:
            ch = self.pbx.channels.get(name)
            if ch is None:
                return ActionReply.error("No such channel")
            value = ch.get_var(var)
        return ActionReply.success(headers=[("Variable", var), ("Value", value or "")])

    async def _action_setvar(self, session: AmiSession, msg: AmiMessage) -> ActionReply:
        var = msg.get("Variable")
        if not var:
            return ActionReply.error("No variable specified")
        name = msg.get("Channel")
        ch = self.pbx.channels.get(name)
        if name and ch is None:
            return ActionReply.error("No such channel")
        if ch is not None:
            self.pbx.set_var(ch, var, msg.get("Value"))
        return ActionReply.success("Variable Set")

    async def _cli_version(self, args: Sequence[str]) -> CliResult:
        return CliResult(
            f"Asterisk {self.config.version} built by root @ buildhost on a x86_64 running Linux"
            " on 2023-10-20 12:00:00 UTC"
        )

    async def _cli_queue_show(self, args: Sequence[str]) -> CliResult:
        now = self.clock.time()
        out: list[str] = []
        for q in self.acd.queues.values():
            if args and q.name != args[0]:
                continue
            p = dict(q.params())
            out.append(
                f"{q.name} has {len(q.entries)} calls (max unlimited) in '{q.config.strategy}'"
                f" strategy ({q.holdtime}s holdtime, {q.talktime}s talktime), W:{q.config.weight},"
                f" C:{q.completed}, A:{q.abandoned}, SL:{p['ServicelevelPerf']}%,"
                f" SL2:{p['ServicelevelPerf2']}% within {q.config.servicelevel}s"
            )
            out.append("   Members: ")
            for m in q.members.values():
                out.append("      " + _member_line(m, now))
            if q.entries:
                out.append("   Callers: ")
                for i, e in enumerate(q.entries, 1):
                    w = int(now - e.start)
                    wait = f"{w // 60}:{w % 60:02d}"
                    out.append(f"      {i}. {e.channel.name} (wait: {wait}, prio: {e.prio})")
            else:
                out.append("   No Callers")
        if args and not out:
            return CliResult(f"No such queue: {args[0]}.", "failure")
        return CliResult("\n".join(out))

    async def _cli_channels(self, args: Sequence[str]) -> CliResult:
        lines = ["Channel              Location             State   Application(Data)"]
        for ch in self.pbx.channels.values():
            loc = f"{ch.exten}@{ch.context}:{ch.priority}"
            state = _STATE_WORD.get(ch.state, "Unknown")
            lines.append(f"{ch.name:<20} {loc:<20} {state:<7} {ch.application}({ch.app_data})")
        n = len(self.pbx.channels)
        lines.append(f"{n} active channel{'s' if n != 1 else ''}")
        return CliResult("\n".join(lines))


_STATE_WORD = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}


def _prefixed(prefix: str, fields: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(prefix + name, value) for name, value in fields]


_DEVICE_WORD = {
    0: "Unknown",
    1: "Not in use",
    2: "In use",
    3: "Busy",
    4: "Invalid",
    5: "Unavailable",
    6: "Ringing",
    7: "Ring+Inuse",
    8: "On Hold",
}


def _member_line(m: Member, now: float) -> str:
    parts = [f"{m.name} ({m.interface}) (ringinuse {'enabled' if m.ringinuse else 'disabled'})"]
    if m.membership == "dynamic":
        parts.append("(dynamic)")
    if m.paused:
        ago = int(now) - m.last_pause
        reason = f":{m.paused_reason}" if m.paused_reason else ""
        parts.append(f"(paused{reason} was {ago} secs ago)")
    parts.append(f"({_DEVICE_WORD.get(m.agent.device_status, 'Unknown')})")
    if m.calls_taken:
        parts.append(
            f"has taken {m.calls_taken} calls (last was {int(now) - m.last_call} secs ago)"
        )
    else:
        parts.append("has taken no calls yet")
    return " ".join(parts)


def headers_dict(msg: AmiMessage) -> dict[str, str]:
    """First occurrence wins, names normalised to the spelling used by the handlers."""
    out: dict[str, str] = {}
    for k, v in msg.headers:
        out.setdefault(_CANON.get(k.lower(), k), v)
    return out


_CANON = {
    name.lower(): name
    for name in (
        "ActionID",
        "Queue",
        "Interface",
        "MemberName",
        "Penalty",
        "Paused",
        "Reason",
        "Member",
        "Channel",
        "Cause",
        "Context",
        "Exten",
        "Priority",
        "Timeout",
        "CallerID",
        "Application",
        "Data",
        "Async",
        "ChannelId",
    )
}


def to_action_reply(reply: Reply) -> ActionReply:
    """Convert [Response headers, items...] into B1's ActionReply."""
    head, *rest = reply
    response = head[0][1]
    message: str | None = None
    event_list: str | None = None
    extra: list[tuple[str, str]] = []
    for k, v in head[1:]:
        if k == "ActionID":
            continue
        if k == "Message" and message is None:
            message = v
        elif k == "EventList":
            event_list = v
        else:
            extra.append((k, v))
    return ActionReply(
        response=response,
        message=message,
        headers=tuple(extra),
        event_list=event_list,
        followups=tuple(tuple(m) for m in rest),
    )


def build_dialplan(cfg: EmulatorConfig) -> Dialplan:
    dp = Dialplan()
    agi = f"agi://{cfg.agi_host}:{cfg.agi_port}" + (f"/{cfg.agi_script}" if cfg.agi_script else "")
    for did in cfg.dids:
        dp.add(
            "from-trunk",
            did,
            [
                Step("Set", "__CALLCENTER_DID=${EXTEN}"),
                Step("Answer"),
                Step("AGI", agi),
                Step("Queue", "${IVR_QUEUE},t,,,300"),
                Step("Hangup"),
            ],
        )
    dp.add(
        "from-trunk",
        "agi-failed",
        [
            Step("Set", f"IVR_QUEUE={cfg.default_queue}"),
            Step("Queue", "${IVR_QUEUE},t,,,300"),
            Step("Hangup"),
        ],
    )
    dp.add(
        "from-internal", "_1NXXNXXXXXX", [Step("Dial", "PJSIP/${EXTEN}@trunk,60"), Step("Hangup")]
    )
    dp.add(
        "from-internal", "_NXXNXXXXXX", [Step("Dial", "PJSIP/${EXTEN}@trunk,60"), Step("Hangup")]
    )
    dp.add("from-internal", "_1XXX", [Step("Dial", "PJSIP/${EXTEN},30"), Step("Hangup")])
    dp.add("from-internal", "700", [Step("AGI", "agi:async"), Step("Hangup")])
    for qc in cfg.queues:
        dp.add("queues", qc.name, [Step("Queue", f"{qc.name},t,,,300"), Step("Hangup")])
    return dp


# ---------------------------------------------------------------------------------------- CLI


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m callcenter.pbxsim.emulator", description=__doc__)
    p.add_argument("--ami-host", default="127.0.0.1")
    p.add_argument("--ami-port", type=int, default=5038)
    p.add_argument("--ami-user", default="callcenter")
    p.add_argument("--ami-secret", default="secret")
    p.add_argument("--agi-host", default="127.0.0.1")
    p.add_argument("--agi-port", type=int, default=4573)
    p.add_argument("--agi-script", default="hotline")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=2.0, help="calls per simulated minute (0 = none)")
    p.add_argument("--calls", type=int, default=0, help="run this many calls, then exit")
    p.add_argument("--recordings", type=Path, default=None)
    p.add_argument(
        "--channelvars",
        type=_channelvars,
        default=(),
        metavar="A,B",
        help="manager.conf channelvars: a ChanVariable line per name in every channel block",
    )
    return p.parse_args(argv)


def _channelvars(text: str) -> tuple[str, ...]:
    try:
        return tuple(parse_channelvars(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _amain(ns: argparse.Namespace) -> None:
    from callcenter.pbxsim.traffic import TrafficGenerator, run_calls

    cfg = EmulatorConfig(
        ami_host=ns.ami_host,
        ami_port=ns.ami_port,
        ami_users={ns.ami_user: ns.ami_secret},
        agi_host=ns.agi_host,
        agi_port=ns.agi_port,
        agi_script=ns.agi_script,
        speed=ns.speed,
        seed=ns.seed,
        recordings_dir=ns.recordings,
        channelvars=ns.channelvars,
    )
    async with Emulator(config=cfg) as emu:
        host, port = emu.ami_address
        print(f"pbxsim: AMI on {host}:{port}, FastAGI target {ns.agi_host}:{ns.agi_port}")
        if ns.calls:
            summary = await run_calls(emu, ns.calls, seed=ns.seed)
            print(summary)
            return
        gen = TrafficGenerator(emu, rate_per_minute=ns.rate, seed=ns.seed)
        if ns.rate > 0:
            gen.start()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await gen.stop()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_amain(_parse(argv)))


if __name__ == "__main__":
    main()
