"""Queues, members and agents of the emulator (app_queue), plus the call-control AMI actions.

The `Queue()` application rings members (ringall / rrmemory), bridges the answering agent, records
the call and reports every step with the events of ami_transcripts/04 and 05 in that order.
AMI actions (QueueStatus, QueueSummary, QueueAdd/Remove/Pause, CoreShowChannels, Hangup,
Redirect, Originate) return a list of messages: the Response first, then list items if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from callcenter.pbxsim.callers import CallerModel
from callcenter.pbxsim.pbx import (
    STATE_DOWN,
    STATE_RINGING,
    STATE_UP,
    UNKNOWN,
    Channel,
    Fields,
    Pbx,
    duration_hms,
    wait_any,
)
from callcenter.pbxsim.wire import action_id_header, ast_true, escape_c

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
Reply = list[Headers]

DEV_UNKNOWN, DEV_NOT_INUSE, DEV_INUSE, DEV_BUSY, DEV_INVALID, DEV_UNAVAILABLE = 0, 1, 2, 3, 4, 5
DEV_RINGING, DEV_RINGINUSE, DEV_ONHOLD = 6, 7, 8


@dataclass(slots=True)
class AgentProfile:
    """How a simulated agent behaves. Times in simulated seconds."""

    interface: str
    name: str
    context: str = "from-internal"
    answer_probability: float = 0.9
    answer_delay: tuple[float, float] = (2.0, 8.0)
    talk_time: tuple[float, float] = (30.0, 240.0)
    reject_probability: float = 0.0
    wrapup: float = 0.0
    registered: bool = True
    voice: str = "zh"
    greeting: str = "您好，请问有什么可以帮您"
    goodbye: str = "再见"
    #: force the outcome of every ring: "answer", "busy", "reject" or "noanswer"
    forced: str | None = None

    @property
    def endpoint(self) -> str:
        return self.interface.split("/", 1)[1]


@dataclass(eq=False)
class Agent:
    profile: AgentProfile
    ringing: int = 0
    in_call: bool = False
    available_at: float = 0.0

    @property
    def interface(self) -> str:
        return self.profile.interface

    @property
    def device_status(self) -> int:
        if not self.profile.registered:
            return DEV_UNAVAILABLE
        if self.ringing:
            return DEV_RINGINUSE if self.in_call else DEV_RINGING
        return DEV_INUSE if self.in_call else DEV_NOT_INUSE

    def decide(self, rng: random.Random) -> tuple[str, float]:
        """Outcome of one ring attempt: (answer|reject|busy|noanswer, delay seconds)."""
        p = self.profile
        lo, hi = p.answer_delay
        delay = lo if lo == hi else rng.uniform(lo, hi)
        if p.forced is not None:
            return p.forced, delay
        if self.in_call:
            return "busy", 0.0
        r = rng.random()
        if r < p.reject_probability:
            return "reject", delay
        if r < p.reject_probability + p.answer_probability:
            return "answer", delay
        return "noanswer", delay

    def talk_seconds(self, rng: random.Random) -> float:
        lo, hi = self.profile.talk_time
        return lo if lo == hi else rng.uniform(lo, hi)


@dataclass(eq=False)
class Member:
    queue: str
    agent: Agent
    name: str
    membership: str = "static"
    penalty: int = 0
    calls_taken: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = 0
    paused: bool = False
    paused_reason: str = ""
    ringinuse: bool = False
    wrapuptime: int = 0

    @property
    def interface(self) -> str:
        return self.agent.interface

    def event_fields(self) -> Fields:
        return [
            ("Queue", self.queue),
            ("MemberName", escape_c(self.name)),
            ("Interface", self.interface),
            ("StateInterface", self.interface),
            ("Membership", self.membership),
            ("Penalty", str(self.penalty)),
            ("CallsTaken", str(self.calls_taken)),
            ("LastCall", str(self.last_call)),
            ("LastPause", str(self.last_pause)),
            ("LoginTime", str(self.login_time)),
            ("InCall", "1" if self.agent.in_call else "0"),
            ("Status", str(self.agent.device_status)),
            ("Paused", "1" if self.paused else "0"),
            ("PausedReason", self.paused_reason),
            ("Ringinuse", "1" if self.ringinuse else "0"),
            ("Wrapuptime", str(self.wrapuptime)),
        ]

    def list_fields(self) -> Fields:
        return [
            ("Queue", self.queue),
            ("Name", escape_c(self.name)),
            ("Location", self.interface),
            ("StateInterface", self.interface),
            ("Membership", "static" if self.membership == "static" else "dynamic"),
            ("Penalty", str(self.penalty)),
            ("CallsTaken", str(self.calls_taken)),
            ("LastCall", str(self.last_call)),
            ("LastPause", str(self.last_pause)),
            ("LoginTime", str(self.login_time)),
            ("InCall", "1" if self.agent.in_call else "0"),
            ("Status", str(self.agent.device_status)),
            ("Paused", "1" if self.paused else "0"),
            ("PausedReason", self.paused_reason),
            ("Wrapuptime", str(self.wrapuptime)),
        ]


@dataclass(slots=True)
class QueueConfig:
    name: str
    strategy: Literal["ringall", "rrmemory"] = "ringall"
    member_timeout: float = 15.0
    retry: float = 5.0
    #: pause before the first ring (app_queue's wait-our-turn loop)
    member_delay: float = 1.0
    autopause: bool = False
    servicelevel: int = 30
    weight: int = 0
    maxlen: int = 0
    record: bool = True
    cancel_answered_elsewhere: bool = False


@dataclass(eq=False)
class QueueEntry:
    channel: Channel
    prio: int
    start: float
    original_position: int = 1


@dataclass(eq=False)
class Queue:
    config: QueueConfig
    members: dict[str, Member] = field(default_factory=dict)
    entries: list[QueueEntry] = field(default_factory=list)
    holdtime: int = 0
    talktime: int = 0
    completed: int = 0
    abandoned: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0
    rr_next: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    def position(self, entry: QueueEntry) -> int:
        return self.entries.index(entry) + 1

    def insert(self, entry: QueueEntry) -> int:
        idx = len(self.entries)
        for i, e in enumerate(self.entries):
            if entry.prio > e.prio:
                idx = i
                break
        self.entries.insert(idx, entry)
        return idx + 1

    def params(self) -> Fields:
        perf = self.completed_in_sl / self.completed * 100 if self.completed else 0.0
        total = self.completed + self.abandoned
        perf2 = (self.completed_in_sl + self.abandoned_in_sl) / total * 100 if total else 0.0
        return [
            ("Queue", self.name),
            ("Max", str(self.config.maxlen)),
            ("Strategy", self.config.strategy),
            ("Calls", str(len(self.entries))),
            ("Holdtime", str(self.holdtime)),
            ("TalkTime", str(self.talktime)),
            ("Completed", str(self.completed)),
            ("Abandoned", str(self.abandoned)),
            ("ServiceLevel", str(self.config.servicelevel)),
            ("ServicelevelPerf", f"{perf:2.1f}"),
            ("ServicelevelPerf2", f"{perf2:2.1f}"),
            ("Weight", str(self.config.weight)),
        ]


QueueOutcome = Literal["hangup", "continue", "redirect", "timeout", "fail"]
DialplanSpawner = Callable[[Channel, tuple[str, str, int]], None]
Recorder = Callable[[Path, Channel, Channel, float, CallerModel | None, AgentProfile], None]


class Acd:
    """Queues + agents. Owns the Queue() application and the queue/channel AMI actions."""

    def __init__(
        self,
        *,
        pbx: Pbx,
        rng: random.Random | None = None,
        monitor_dir: str = "/var/spool/asterisk/monitor",
        recorder: Recorder | None = None,
    ) -> None:
        self.pbx = pbx
        self.rng = rng or random.Random(0)
        self.monitor_dir = monitor_dir
        self.recorder = recorder
        self.agents: dict[str, Agent] = {}
        self.queues: dict[str, Queue] = {}
        self.spawn_dialplan: DialplanSpawner | None = None
        self.run_dialplan: (
            Callable[[Channel, tuple[str, str, int], Callable[[], None] | None], Awaitable[None]]
            | None
        ) = None
        self.run_app: Callable[[Channel, str, str], Awaitable[int | None]] | None = None
        self.extension_exists: Callable[[str, str, int], bool] = lambda c, e, p: True
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ configuration
    def add_agent(self, profile: AgentProfile) -> Agent:
        agent = Agent(profile)
        self.agents[profile.interface] = agent
        return agent

    def add_queue(self, config: QueueConfig) -> Queue:
        q = Queue(config)
        self.queues[config.name] = q
        return q

    def add_member(
        self,
        queue: str,
        interface: str,
        *,
        name: str | None = None,
        membership: str = "static",
        penalty: int = 0,
        paused: bool = False,
        paused_reason: str = "",
        calls_taken: int = 0,
        last_call: int = 0,
        last_pause: int = 0,
        login_time: int | None = None,
        wrapuptime: int = 0,
    ) -> Member:
        agent = self.agents.get(interface)
        if agent is None:
            agent = self.add_agent(AgentProfile(interface=interface, name=name or interface))
        m = Member(
            queue=queue,
            agent=agent,
            name=name or agent.profile.name,
            membership=membership,
            penalty=penalty,
            paused=paused,
            paused_reason=paused_reason,
            calls_taken=calls_taken,
            last_call=last_call,
            last_pause=last_pause,
            login_time=int(self.pbx.now()) if login_time is None else login_time,
            wrapuptime=wrapuptime,
        )
        self.queues[queue].members[interface] = m
        return m

    def members_of(self, agent: Agent) -> list[Member]:
        return [
            q.members[agent.interface] for q in self.queues.values() if agent.interface in q.members
        ]

    def device_changed(self, agent: Agent) -> None:
        """Device state change: one QueueMemberStatus per queue the agent belongs to."""
        for m in self.members_of(agent):
            self.pbx.emit("QueueMemberStatus", "agent", m.event_fields())

    def set_registered(self, interface: str, registered: bool) -> None:
        agent = self.agents[interface]
        if agent.profile.registered != registered:
            agent.profile.registered = registered
            self.device_changed(agent)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def wrap() -> None:
            try:
                await coro
            except Exception:
                log.exception("pbxsim background task failed")

        task = asyncio.get_running_loop().create_task(wrap())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ Queue() application
    def _available(self, q: Queue) -> list[Member]:
        now = self.pbx.now()
        return [
            m
            for m in q.members.values()
            if not m.paused
            and m.agent.profile.registered
            and not m.agent.ringing
            and (not m.agent.in_call or m.ringinuse)
            and now >= m.agent.available_at
        ]

    def _pick(self, q: Queue, avail: list[Member]) -> list[Member]:
        if q.config.strategy == "ringall":
            return avail
        order = list(q.members.values())
        n = len(order)
        for i in range(n):
            m = order[(q.rr_next + i) % n]
            if m in avail:
                q.rr_next = (order.index(m) + 1) % n
                return [m]
        return []

    def _caller_event(self, name: str, ch: Channel, tail: Sequence[tuple[str, str]]) -> None:
        self.pbx.emit(name, "agent", [*ch.snapshot(), *tail])

    def _agent_event(
        self, name: str, ch: Channel, leg: Channel, m: Member, tail: Sequence[tuple[str, str]]
    ) -> None:
        self.pbx.emit(
            name,
            "agent",
            [
                *ch.snapshot(),
                *leg.snapshot("Dest"),
                ("Queue", m.queue),
                ("Interface", m.interface),
                ("MemberName", escape_c(m.name)),
                *tail,
            ],
        )

    def _leave(self, q: Queue, entry: QueueEntry) -> None:
        pos = q.position(entry)
        q.entries.remove(entry)
        self._caller_event(
            "QueueCallerLeave",
            entry.channel,
            [("Queue", q.name), ("Position", str(pos)), ("Count", str(len(q.entries)))],
        )

    async def queue_app(
        self, ch: Channel, data: str, caller: CallerModel | None = None
    ) -> QueueOutcome:
        """Queue(name,options,URL,announce,timeout). Returns how the caller left."""
        args = [*data.split(","), "", "", "", "", ""][:5]
        qname, options, timeout_s = args[0], args[1], args[4]
        if not qname:
            return "fail"  # "Queue requires an argument": the application returns -1
        q = self.queues.get(qname)
        if q is None:
            self.pbx.set_var(ch, "QUEUESTATUS", "UNKNOWN")
            return "continue"
        prio_var = ch.get_var("QUEUE_PRIO") or "0"
        prio = int(prio_var) if prio_var.lstrip("-").isdigit() else 0
        now = self.pbx.now()
        entry = QueueEntry(ch, prio, now)
        pos = q.insert(entry)
        entry.original_position = pos
        self._caller_event(
            "QueueCallerJoin",
            ch,
            [("Queue", q.name), ("Position", str(pos)), ("Count", str(len(q.entries)))],
        )
        self.pbx.moh_start(ch)
        deadline = now + float(timeout_s) if timeout_s.replace(".", "", 1).isdigit() else None
        patience: asyncio.Task[None] | None = None
        if caller is not None and caller.patience is not None:
            patience = asyncio.ensure_future(self._abandon_after(ch, caller.patience))
        try:
            return await self._wait_in_queue(q, entry, options, deadline, caller)
        finally:
            if patience is not None:
                patience.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await patience

    async def _abandon_after(self, ch: Channel, seconds: float) -> None:
        await self.pbx.clock.sleep(seconds)
        if not ch.bridge_id and not ch.gone:
            self.pbx.request_hangup(ch, 16)

    async def _wait_in_queue(
        self,
        q: Queue,
        entry: QueueEntry,
        options: str,
        deadline: float | None,
        caller: CallerModel | None,
    ) -> QueueOutcome:
        ch = entry.channel
        pause = q.config.member_delay
        while True:
            delay = pause
            if deadline is not None:
                delay = max(0.0, min(delay, deadline - self.pbx.now()))
            r = await wait_any(self.pbx.clock, delay, [ch.hangup_requested, ch.redirected])
            if r == 0:
                return self._abandon(q, entry, [])
            if r == 1:
                return self._withdraw(q, entry)
            if deadline is not None and self.pbx.now() >= deadline:
                self.pbx.set_var(ch, "QUEUESTATUS", "TIMEOUT")
                self.pbx.moh_stop(ch)
                self._leave(q, entry)
                return "timeout"
            pause = q.config.retry
            avail = self._available(q)
            if not avail or q.position(entry) > len(avail):
                pause = min(q.config.retry, 1.0)
                continue
            chosen = self._pick(q, avail)
            if not chosen:
                continue
            outcome = await self._ring(q, entry, chosen, options, deadline, caller)
            if outcome is not None:
                return outcome

    def _abandon(
        self, q: Queue, entry: QueueEntry, legs: list[tuple[Member, Channel]]
    ) -> QueueOutcome:
        ch = entry.channel
        self._cancel_legs(entry.channel, legs, cause=0)
        pos = q.position(entry)
        hold = int(self.pbx.now()) - int(entry.start)
        self._caller_event(
            "QueueCallerAbandon",
            ch,
            [
                ("Queue", q.name),
                ("Position", str(pos)),
                ("OriginalPosition", str(entry.original_position)),
                ("HoldTime", str(hold)),
            ],
        )
        q.abandoned += 1
        if hold <= q.config.servicelevel:
            q.abandoned_in_sl += 1
        self._leave(q, entry)
        self.pbx.hangup(ch)
        for m, _ in legs:
            self.device_changed(m.agent)
        return "hangup"

    def _withdraw(self, q: Queue, entry: QueueEntry) -> QueueOutcome:
        self.pbx.moh_stop(entry.channel)
        self._leave(q, entry)
        return "redirect"

    def _cancel_legs(self, ch: Channel, legs: list[tuple[Member, Channel]], cause: int) -> None:
        for m, leg in legs:
            self.pbx.dial_event("DialEnd", ch, leg, [("DialStatus", "CANCEL")])
            self.pbx.hangup(leg, cause)
            m.agent.ringing = max(0, m.agent.ringing - 1)

    def _rna(
        self, ch: Channel, m: Member, leg: Channel, ring_start: float, status: str, cause: int
    ) -> None:
        ring_ms = round((self.pbx.now() - ring_start) * 1000)
        self._agent_event("AgentRingNoAnswer", ch, leg, m, [("RingTime", str(ring_ms))])
        self.pbx.dial_event("DialEnd", ch, leg, [("DialStatus", status)])
        self.pbx.hangup(leg, cause)
        m.agent.ringing = max(0, m.agent.ringing - 1)
        self.device_changed(m.agent)
        q = self.queues.get(m.queue)
        if q is not None and q.config.autopause and not m.paused:
            m.paused, m.paused_reason, m.last_pause = True, "Auto-Pause", int(self.pbx.now())
            self.pbx.emit("QueueMemberPause", "agent", m.event_fields())

    async def _ring(
        self,
        q: Queue,
        entry: QueueEntry,
        members: list[Member],
        options: str,
        deadline: float | None,
        caller: CallerModel | None,
    ) -> QueueOutcome | None:
        ch = entry.channel
        legs: list[tuple[Member, Channel]] = []
        for m in members:
            a = m.agent
            leg = self.pbx.new_channel(
                endpoint=a.profile.endpoint,
                context=a.profile.context,
                exten="s",
                state=STATE_DOWN,
                linkedid=ch.linkedid,
                tech=a.interface.split("/", 1)[0],
                parent=ch,
            )
            # app_queue gives the member leg the dialed number as caller ID and the caller as
            # connected line; the connected line is set silently (no NewConnectedLine)
            leg.exten = ch.exten
            self.pbx.set_callerid(leg, ch.exten, "")
            leg.connected_num, leg.connected_name = ch.caller_num, ch.caller_name
            a.ringing += 1
            self._agent_event("AgentCalled", ch, leg, m, [])
            self.pbx.dial_event("DialBegin", ch, leg, [("DialString", m.interface)])
            legs.append((m, leg))
        ring_start = self.pbx.now()
        plans: dict[Channel, tuple[str, float]] = {}
        for m, leg in legs:
            outcome, delay = m.agent.decide(self.rng)
            plans[leg] = (outcome, ring_start + delay)
            if outcome != "busy":
                self.pbx.set_state(leg, STATE_RINGING)
                self.pbx.dial_event("DialState", ch, leg, [("DialStatus", "RINGING")])
                self.device_changed(m.agent)
        timeout_at = ring_start + q.config.member_timeout
        while legs:
            pending = [
                (at, leg)
                for (_, leg) in legs
                for (what, at) in [plans[leg]]
                if what in ("answer", "reject", "busy")
            ]
            until = min([timeout_at, *(at for at, _ in pending)])
            if deadline is not None:
                until = min(until, deadline)
            events = [
                ch.hangup_requested,
                ch.redirected,
                *(leg.hangup_requested for _, leg in legs),
            ]
            r = await wait_any(self.pbx.clock, max(0.0, until - self.pbx.now()), events)
            if r == 0:
                return self._abandon(q, entry, legs)
            if r == 1:
                self._cancel_legs(ch, legs, cause=0)
                for m, _ in legs:
                    self.device_changed(m.agent)
                return self._withdraw(q, entry)
            if r is not None:
                m, leg = legs.pop(r - 2)
                self._rna(ch, m, leg, ring_start, "NOANSWER", leg.hangup_cause or 21)
                continue
            now = self.pbx.now()
            due = [leg for at, leg in pending if at <= now]
            if not due:
                for m, leg in list(legs):
                    self._rna(ch, m, leg, ring_start, "NOANSWER", 0)
                legs.clear()
                break
            leg = due[0]
            idx = next(i for i, (_, lg) in enumerate(legs) if lg is leg)
            m, _ = legs.pop(idx)
            what = plans[leg][0]
            if what == "answer":
                return await self._connect(q, entry, m, leg, legs, ring_start, options, caller)
            if what == "busy":
                self._rna(ch, m, leg, ring_start, "BUSY", 17)
            else:
                self._rna(ch, m, leg, ring_start, "NOANSWER", 21)
        return None

    async def _connect(
        self,
        q: Queue,
        entry: QueueEntry,
        m: Member,
        leg: Channel,
        others: list[tuple[Member, Channel]],
        ring_start: float,
        options: str,
        caller: CallerModel | None,
    ) -> QueueOutcome:
        ch, pbx, agent = entry.channel, self.pbx, m.agent
        pbx.set_state(leg, STATE_UP)
        pbx.dial_event("DialEnd", ch, leg, [("DialStatus", "ANSWER")])
        self._cancel_legs(ch, others, cause=26 if q.config.cancel_answered_elsewhere else 0)
        for om, _ in others:
            self.device_changed(om.agent)
        pbx.moh_stop(ch)
        rec_path: Path | None = None
        if q.config.record:
            filename = f"{self.monitor_dir.rstrip('/')}/{ch.uniqueid}.wav"
            pbx.set_var(ch, "MIXMONITOR_FILENAME", filename)
            pbx.emit("MixMonitorStart", "call", ch.snapshot())
            rec_path = Path(filename)
        self._leave(q, entry)
        now = pbx.now()
        hold = int(now) - int(entry.start)
        ring = int(now) - int(ring_start)
        self._agent_event(
            "AgentConnect", ch, leg, m, [("HoldTime", str(hold)), ("RingTime", str(ring))]
        )
        q.holdtime = (q.holdtime * 3 + hold) // 4
        agent.ringing = max(0, agent.ringing - 1)
        agent.in_call = True
        self.device_changed(agent)
        bridge = pbx.bridge(ch, leg)
        pbx.set_connected(ch, agent.profile.endpoint, m.name)
        pbx.bridge_peer_vars(ch, leg)
        ch.dest_channel = leg.name
        # ---- conversation
        t0 = pbx.now()
        agent_end = t0 + agent.talk_seconds(self.rng)
        caller_end = t0 + caller.talk_limit if caller and caller.talk_limit is not None else None
        end_at = agent_end if caller_end is None else min(agent_end, caller_end)
        events = [ch.hangup_requested, leg.hangup_requested, ch.redirected, leg.redirected]
        r = await wait_any(pbx.clock, max(0.0, end_at - pbx.now()), events)
        if r is None:
            r = 0 if caller_end is not None and caller_end <= agent_end else 1
            pbx.request_hangup(ch if r == 0 else leg, 16)
        reason = ("caller", "agent", "transfer", "transfer")[r]
        talk = int(pbx.now()) - int(t0)
        self._agent_event(
            "AgentComplete",
            ch,
            leg,
            m,
            [("HoldTime", str(hold)), ("TalkTime", str(talk)), ("Reason", reason)],
        )
        pbx.unbridge(bridge)
        q.talktime = (q.talktime * 3 + talk) // 4
        q.completed += 1
        if hold <= q.config.servicelevel:
            q.completed_in_sl += 1
        if self.recorder is not None and rec_path is not None:
            self.recorder(rec_path, ch, leg, float(pbx.now() - t0), caller, agent.profile)
        outcome: QueueOutcome
        if r == 3 and leg.redirect_to is not None and self.spawn_dialplan is not None:
            leg.redirected.clear()
            self.spawn_dialplan(leg, leg.redirect_to)
        else:
            pbx.hangup(leg, 16)
        if r == 2:
            outcome = "redirect"
        elif r == 1 and "c" in options:
            self.pbx.set_var(ch, "QUEUESTATUS", "CONTINUE")
            outcome = "continue"
        else:
            pbx.hangup(ch, 16)
            outcome = "hangup"
        m.calls_taken += 1
        m.last_call = int(pbx.now())
        agent.in_call = False
        agent.available_at = pbx.now() + max(m.wrapuptime, agent.profile.wrapup)
        self.device_changed(agent)
        return outcome

    # ------------------------------------------------------------------ AMI actions
    @staticmethod
    def _aid(action: Mapping[str, str]) -> Headers:
        return list(action_id_header(action.get("ActionID", "")))

    @classmethod
    def _resp(cls, action: Mapping[str, str], ok: bool, message: str | None = None) -> Headers:
        h: Headers = [("Response", "Success" if ok else "Error"), *cls._aid(action)]
        if message is not None:
            h.append(("Message", message))
        return h

    @classmethod
    def _list_start(cls, action: Mapping[str, str], message: str) -> Headers:
        return [
            ("Response", "Success"),
            *cls._aid(action),
            ("EventList", "start"),
            ("Message", message),
        ]

    @classmethod
    def _complete(cls, action: Mapping[str, str], name: str, n: int) -> Headers:
        return [
            ("Event", name),
            *cls._aid(action),
            ("EventList", "Complete"),
            ("ListItems", str(n)),
        ]

    def action_queue_status(self, a: Mapping[str, str]) -> Reply:
        out: Reply = [self._list_start(a, "Queue status will follow")]
        want_q, want_m = a.get("Queue", ""), a.get("Member", "")
        now = self.pbx.now()
        for q in self.queues.values():
            if want_q and q.name != want_q:
                continue
            out.append([("Event", "QueueParams"), *q.params(), *self._aid(a)])
            for m in q.members.values():
                if want_m and m.interface != want_m and m.name != want_m:
                    continue
                out.append([("Event", "QueueMember"), *m.list_fields(), *self._aid(a)])
            for pos, e in enumerate(q.entries, 1):
                c = e.channel
                out.append(
                    [
                        ("Event", "QueueEntry"),
                        ("Queue", q.name),
                        ("Position", str(pos)),
                        ("Channel", c.name),
                        ("Uniqueid", c.uniqueid),
                        ("CallerIDNum", escape_c(c.caller_num) or "unknown"),
                        ("CallerIDName", escape_c(c.caller_name) or "unknown"),
                        ("ConnectedLineNum", escape_c(c.connected_num) or "unknown"),
                        ("ConnectedLineName", escape_c(c.connected_name) or "unknown"),
                        ("Wait", str(int(now) - int(e.start))),
                        ("Priority", str(e.prio)),
                        *self._aid(a),
                    ]
                )
        out.append(self._complete(a, "QueueStatusComplete", len(out) - 1))
        return out

    def action_queue_summary(self, a: Mapping[str, str]) -> Reply:
        out: Reply = [self._list_start(a, "Queue summary will follow")]
        now = self.pbx.now()
        for q in self.queues.values():
            if a.get("Queue") and q.name != a["Queue"]:
                continue
            avail = sum(
                1
                for m in q.members.values()
                if not m.paused and m.agent.device_status == DEV_NOT_INUSE
            )
            longest = max((int(now) - int(e.start) for e in q.entries), default=0)
            out.append(
                [
                    ("Event", "QueueSummary"),
                    ("Queue", q.name),
                    ("LoggedIn", str(len(q.members))),
                    ("Available", str(avail)),
                    ("Callers", str(len(q.entries))),
                    ("HoldTime", str(q.holdtime)),
                    ("TalkTime", str(q.talktime)),
                    ("LongestHoldTime", str(longest)),
                    *self._aid(a),
                ]
            )
        out.append(self._complete(a, "QueueSummaryComplete", len(out) - 1))
        return out

    def action_queue_add(self, a: Mapping[str, str]) -> Reply:
        qname, iface = a.get("Queue", ""), a.get("Interface", "")
        if not qname:
            return [self._resp(a, False, "'Queue' not specified.")]
        if not iface:
            return [self._resp(a, False, "'Interface' not specified.")]
        q = self.queues.get(qname)
        if q is None:
            return [self._resp(a, False, "Unable to add interface to queue: No such queue")]
        if iface in q.members:
            return [self._resp(a, False, "Unable to add interface: Already there")]
        penalty = a.get("Penalty", "0")
        paused = ast_true(a.get("Paused", ""))
        m = self.add_member(
            qname,
            iface,
            name=a.get("MemberName") or None,
            membership="dynamic",
            penalty=int(penalty) if penalty.isdigit() else 0,
            paused=paused,
            paused_reason=a.get("Reason", "") if paused else "",
        )
        self.pbx.emit("QueueMemberAdded", "agent", m.event_fields())
        return [self._resp(a, True, "Added interface to queue")]

    def action_queue_remove(self, a: Mapping[str, str]) -> Reply:
        qname, iface = a.get("Queue", ""), a.get("Interface", "")
        if not qname or not iface:
            return [self._resp(a, False, "Need 'Queue' and 'Interface' parameters.")]
        q = self.queues.get(qname)
        if q is None:
            return [self._resp(a, False, "Unable to remove interface from queue: No such queue")]
        m = q.members.get(iface)
        if m is None:
            return [self._resp(a, False, "Unable to remove interface: Not there")]
        if m.membership == "static":
            return [self._resp(a, False, "Member not dynamic")]
        del q.members[iface]
        self.pbx.emit("QueueMemberRemoved", "agent", m.event_fields())
        return [self._resp(a, True, "Removed interface from queue")]

    def action_queue_pause(self, a: Mapping[str, str]) -> Reply:
        iface, paused_s = a.get("Interface", ""), a.get("Paused", "")
        if not iface or not paused_s:
            return [self._resp(a, False, "Need 'Interface' and 'Paused' parameters.")]
        paused = ast_true(paused_s)
        found = [
            q.members[iface]
            for q in self.queues.values()
            if iface in q.members and (not a.get("Queue") or q.name == a["Queue"])
        ]
        if not found:
            return [self._resp(a, False, "Interface not found")]
        for m in found:
            m.paused = paused
            m.paused_reason = a.get("Reason", "") if paused else ""
            if paused:
                m.last_pause = int(self.pbx.now())
            self.pbx.emit("QueueMemberPause", "agent", m.event_fields())
        text = "Interface paused successfully" if paused else "Interface unpaused successfully"
        return [self._resp(a, True, text)]

    def action_core_show_channels(self, a: Mapping[str, str]) -> Reply:
        out: Reply = [self._list_start(a, "Channels will follow")]
        now = self.pbx.now()
        for ch in list(self.pbx.channels.values()):
            out.append(
                [
                    ("Event", "CoreShowChannel"),
                    *self._aid(a),
                    *ch.snapshot(),
                    ("Application", ch.application),
                    ("ApplicationData", escape_c(ch.app_data)),
                    ("Duration", duration_hms(now - ch.created)),
                    ("BridgeId", ch.bridge_id),
                ]
            )
        out.append(self._complete(a, "CoreShowChannelsComplete", len(out) - 1))
        return out

    def action_hangup(self, a: Mapping[str, str]) -> Reply:
        name = a.get("Channel", "")
        if not name:
            return [self._resp(a, False, "No channel specified")]
        cause_s = a.get("Cause", "")
        cause = int(cause_s) if cause_s.isdigit() else 16
        if len(name) > 2 and name.startswith("/") and name.endswith("/"):
            try:
                rx = re.compile(name[1:-1])
            except re.error:
                return [self._resp(a, False, "Invalid regex")]
            hit = [c for c in list(self.pbx.channels.values()) if rx.search(c.name)]
            out: Reply = [self._list_start(a, "Channels hung up will follow")]
            for c in hit:
                self._soft_hangup(c, cause)
                out.append([("Event", "ChannelHungup"), ("Channel", c.name), *self._aid(a)])
            out.append(self._complete(a, "ChannelsHungupListComplete", len(hit)))
            return out
        ch = self.pbx.channels.get(name)
        if ch is None:
            return [self._resp(a, False, "No such channel")]
        self._soft_hangup(ch, cause)
        return [self._resp(a, True, "Channel Hungup")]

    def _soft_hangup(self, ch: Channel, cause: int) -> None:
        if ch.hangup_requested.is_set():
            return
        self.pbx.emit("SoftHangupRequest", "call", [*ch.snapshot(), ("Cause", str(cause))])
        self.pbx.request_hangup(ch, cause, publish=False)

    def action_redirect(self, a: Mapping[str, str]) -> Reply:
        name = a.get("Channel", "")
        if not name:
            return [self._resp(a, False, "Channel not specified")]
        ch = self.pbx.channels.get(name)
        if ch is None:
            return [self._resp(a, False, f"Channel does not exist: {name}")]
        prio_s = a.get("Priority", "1") or "1"
        if not prio_s.isdigit():
            return [self._resp(a, False, "Invalid priority")]
        context = a.get("Context", "") or ch.context
        exten = a.get("Exten", "") or ch.exten
        if not ch.is_up:
            return [self._resp(a, False, "Redirect failed, channel not up.")]
        if not self.extension_exists(context, exten, int(prio_s)):
            return [self._resp(a, False, "Redirect failed")]
        ch.redirect_to = (context, exten, int(prio_s))
        ch.redirected.set()
        return [self._resp(a, True, "Redirect successful")]

    # ---- Originate
    async def action_originate(self, a: Mapping[str, str], variables: Sequence[str] = ()) -> Reply:
        """Originate; `variables` are the raw `Variable:` header values (repeatable)."""
        chan = a.get("Channel", "")
        if not chan:
            return [self._resp(a, False, "Channel not specified")]
        prio_s = a.get("Priority", "")
        if prio_s and not prio_s.isdigit():
            return [self._resp(a, False, "Invalid priority")]
        timeout_s = a.get("Timeout", "30000") or "30000"
        if not timeout_s.isdigit():
            return [self._resp(a, False, "Invalid timeout")]
        if "/" not in chan:
            return [self._resp(a, False, "Invalid channel")]
        chan_id = a.get("ChannelId", "")
        if len(chan_id) > 149:
            return [self._resp(a, False, "Uniqueid length exceeds maximum of 149")]
        app, data = a.get("Application", ""), a.get("Data", "")
        if app.lower() in ("system", "exec", "trysystem", "eval") or any(
            bad in data.lower() for bad in ("system(", "eval(", "shell(")
        ):
            return [self._resp(a, False, "Originate Access Forbidden: app or data blacklisted")]
        context, exten = a.get("Context", ""), a.get("Exten", "")
        is_async = ast_true(a.get("Async", ""))
        if not app and exten and context and prio_s:
            if not self.extension_exists(context, exten, int(prio_s)):
                return [self._resp(a, False, "Extension does not exist.")]
        elif not app and not is_async and (not context or not prio_s):
            return [
                self._resp(a, False, "Originate with 'Exten' requires 'Context' and 'Priority'")
            ]
        pairs: list[tuple[str, str]] = []
        for v in variables:
            for item in v.split(","):
                if "=" in item:
                    k, val = item.split("=", 1)
                    pairs.append((k.strip(), val))
        job = self._originate(
            a,
            chan,
            int(timeout_s) / 1000,
            pairs,
            app,
            data,
            context,
            exten,
            int(prio_s or 1),
            report=is_async,
        )
        if is_async:
            self._spawn(self._originate_async(a, job))
            return [self._resp(a, True, "Originate successfully queued")]
        ok, _ = await job
        if ok:
            return [self._resp(a, True, "Originate successfully queued")]
        return [self._resp(a, False, "Originate failed")]

    async def _originate_async(
        self, a: Mapping[str, str], job: Awaitable[tuple[bool, Callable[[], None]]]
    ) -> None:
        _, finish = await job
        finish()

    async def _originate(
        self,
        a: Mapping[str, str],
        chan: str,
        ring_limit: float,
        variables: list[tuple[str, str]],
        app: str,
        data: str,
        context: str,
        exten: str,
        priority: int,
        *,
        report: bool = True,
    ) -> tuple[bool, Callable[[], None]]:
        """Dial `chan`. Returns (answered, publish-the-OriginateResponse)."""
        pbx = self.pbx
        tech, resource = chan.split("/", 1)
        if "@" in resource:
            # PJSIP/<number>@<trunk endpoint>: the outside world answers most calls
            endpoint = resource.split("@", 1)[1]
            agent: Agent | None = Agent(
                AgentProfile(
                    f"{tech}/{endpoint}", "", answer_probability=0.85, answer_delay=(3, 12)
                )
            )
        else:
            endpoint = resource
            agent = self.agents.get(f"{tech}/{endpoint}")
        cid = a.get("CallerID", "")
        m = re.fullmatch(r'\s*(?:"([^"]*)"|([^<"]*?))\s*<([^>]*)>\s*', cid)
        cid_name, cid_num = (
            ((m.group(1) or m.group(2) or "").strip(), m.group(3)) if m else ("", cid)
        )
        state_box: dict[str, Channel] = {}

        def response(ok: bool, reason: int) -> Callable[[], None]:
            def send() -> None:
                if not report:
                    return
                leg = state_box.get("leg")
                fields: Headers = [*self._aid(a), ("Response", "Success" if ok else "Failure")]
                fields.append(("Channel", leg.name if ok and leg else chan))
                if app:
                    fields += [("Application", app), ("Data", data)]
                else:
                    fields += [("Context", context), ("Exten", exten)]
                uid = leg.uniqueid if ok and leg else (a.get("ChannelId") or UNKNOWN)
                fields += [
                    ("Reason", str(reason)),
                    ("Uniqueid", uid),
                    ("CallerIDNum", escape_c(cid_num) or UNKNOWN),
                    ("CallerIDName", escape_c(cid_name) or UNKNOWN),
                ]
                pbx.emit("OriginateResponse", "call", fields)

            return send

        if agent is None or not agent.profile.registered:
            return False, response(False, 0)
        leg = pbx.new_channel(
            endpoint=endpoint,
            context=agent.profile.context,
            exten="s",
            state=STATE_DOWN,
            tech=tech,
            uniqueid=a.get("ChannelId") or None,
        )
        state_box["leg"] = leg
        for k, v in variables:
            pbx.set_var(leg, k, v)
        if cid:
            pbx.set_callerid(leg, cid_num, cid_name)
            pbx.set_connected(leg, cid_num, cid_name)
        pbx.dial_event("DialBegin", None, leg, [("DialString", resource)])
        outcome, delay = agent.decide(self.rng)
        if outcome == "busy":
            pbx.dial_event("DialEnd", None, leg, [("DialStatus", "BUSY")])
            pbx.hangup(leg, 17)
            return False, response(False, 5)
        pbx.set_state(leg, STATE_RINGING)
        pbx.dial_event("DialState", None, leg, [("DialStatus", "RINGING")])
        agent.ringing += 1
        self.device_changed(agent)
        wait = min(delay, ring_limit) if outcome in ("answer", "reject") else ring_limit
        r = await wait_any(pbx.clock, wait, [leg.hangup_requested])
        agent.ringing = max(0, agent.ringing - 1)
        if r is None and outcome == "answer" and delay <= ring_limit:
            pbx.set_state(leg, STATE_UP)
            pbx.dial_event("DialEnd", None, leg, [("DialStatus", "ANSWER")])
            agent.in_call = True
            self.device_changed(agent)
            sent = response(True, 4)

            async def run() -> None:
                try:
                    if app:
                        sent()
                        if self.run_app is not None:
                            await self.run_app(leg, app, data)
                        pbx.hangup(leg, 16)
                    elif self.run_dialplan is not None:
                        await self.run_dialplan(leg, (context, exten, priority), sent)
                    else:
                        sent()
                        pbx.hangup(leg, 16)
                finally:
                    agent.in_call = False
                    self.device_changed(agent)

            self._spawn(run())
            await asyncio.sleep(0)
            return True, (lambda: None)
        if r is None and outcome == "reject" and delay <= ring_limit:
            pbx.dial_event("DialEnd", None, leg, [("DialStatus", "NOANSWER")])
            pbx.hangup(leg, 21)
            self.device_changed(agent)
            return False, response(False, 8)
        if r is not None:
            pbx.dial_event("DialEnd", None, leg, [("DialStatus", "CANCEL")])
            pbx.hangup(leg, leg.hangup_cause or 16)
            self.device_changed(agent)
            return False, response(False, 1)
        # ast_dial's own timeout: cause 19, no DialEnd
        pbx.hangup(leg, 19)
        self.device_changed(agent)
        return False, response(False, 3)
