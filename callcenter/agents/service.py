"""AgentStateTracker: agent and queue state from AMI events. Pure: time is injected, no I/O.

Contract: feed every decoded event in arrival order to `apply(event, now)`, the resync snapshot
after each (re)connect to `reconcile(snapshot, now)`, and call `tick(now)` every second or so to
end wrap-ups. Each returns AgentStateChanged / QueueStatsChanged effects. Read the current
picture with `agents()`, `agent(interface)`, `queues(now)`, `queue(name, now)`.

Status precedence: logged_out (no queue, or phone unregistered) > on_call > ringing > wrap_up >
paused (in every queue) > available.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from callcenter.agents.model import (
    AGENT_STATUSES,
    AgentState,
    AgentStatus,
    QueueMembership,
    QueueStats,
    WaitingCaller,
)
from callcenter.asterisk.events import (
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentDumped,
    AgentRingNoAnswer,
    AmiEvent,
    ChannelHungUp,
    QueueCallerAbandoned,
    QueueCallerJoined,
    QueueCallerLeft,
    QueueEntryListed,
    QueueMemberChanged,
    QueueParamsListed,
    ResyncSource,
    decode_all,
)

# Asterisk device states (QueueMember* Status)
DEVICE_UNKNOWN = 0
DEVICE_OFFLINE = frozenset({4, 5})  # INVALID, UNAVAILABLE: the phone is not registered
DEVICE_BUSY = frozenset({2, 3, 7, 8})  # INUSE, BUSY, RINGINUSE, ONHOLD
DEVICE_RINGING = frozenset({6})


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    agent: AgentState
    previous: AgentStatus | None  # None for an agent seen for the first time


@dataclass(frozen=True, slots=True)
class QueueStatsChanged:
    stats: QueueStats


AgentEffect = AgentStateChanged | QueueStatsChanged


class _Agent:
    __slots__ = (
        "device_status",
        "in_call",
        "interface",
        "memberships",
        "name",
        "published",
        "ringing",
        "since",
        "status",
        "talking",
        "wrap_until",
    )

    def __init__(self, interface: str, name: str, now: datetime) -> None:
        self.interface = interface
        self.name = name
        self.memberships: dict[str, QueueMembership] = {}
        self.device_status = DEVICE_UNKNOWN
        self.in_call = False
        self.ringing: tuple[str, str] | None = None  # (caller uniqueid, queue)
        self.talking: tuple[str, str] | None = None
        self.wrap_until: datetime | None = None
        self.status: AgentStatus | None = None  # None until first computed
        self.since = now
        self.published: AgentState | None = None

    def derive(self, now: datetime) -> AgentStatus:
        if self.device_status in DEVICE_OFFLINE:
            return "logged_out"
        if self.talking is not None:
            return "on_call"
        if self.ringing is not None:
            return "ringing"
        if not self.memberships:
            return "logged_out"
        if self.in_call or self.device_status in DEVICE_BUSY:
            return "on_call"
        if self.device_status in DEVICE_RINGING:
            return "ringing"
        if self.wrap_until is not None and now < self.wrap_until:
            return "wrap_up"
        if all(m.paused for m in self.memberships.values()):
            return "paused"
        return "available"

    def paused_reason(self) -> str | None:
        ms = list(self.memberships.values())
        if ms and all(m.paused for m in ms):
            return next((m.paused_reason for m in ms if m.paused_reason), "")
        return None

    def snapshot(self) -> AgentState:
        call = self.talking or self.ringing
        return AgentState(
            interface=self.interface,
            name=self.name,
            status=self.status or "logged_out",
            since=self.since,
            paused_reason=self.paused_reason(),
            device_status=self.device_status,
            queues=tuple(self.memberships[q] for q in sorted(self.memberships)),
            call_uniqueid=call[0] if call else None,
            call_queue=call[1] if call else None,
            wrap_up_until=self.wrap_until,
            calls_taken=sum(m.calls_taken for m in self.memberships.values()),
        )


_published_fields = attrgetter(
    *(f.name for f in fields(QueueStats) if f.name != "longest_wait_seconds")
)


class _Queue:
    __slots__ = ("name", "params", "published", "waiting")

    def __init__(self, name: str) -> None:
        self.name = name
        self.published: tuple[object, ...] | None = None  # _published_fields of the last emitted
        self.waiting: dict[str, WaitingCaller] = {}  # by caller uniqueid, in join order
        self.params: QueueParamsListed | None = None


class AgentStateTracker:
    """Pure agent/queue state machine. Feed it from one task, in arrival order."""

    def __init__(
        self,
        *,
        default_wrapup_seconds: int = 0,
        wrapup_seconds: Mapping[str, int] | None = None,
        max_agents: int = 10_000,
        max_queues: int = 1_000,
        max_waiting_per_queue: int = 10_000,
    ) -> None:
        self._default_wrapup = max(0, default_wrapup_seconds)
        self._wrapup_by_queue = dict(wrapup_seconds or {})
        self._max_agents = max_agents
        self._max_queues = max_queues
        self._max_waiting = max_waiting_per_queue
        self._agents: dict[str, _Agent] = {}
        self._queues: dict[str, _Queue] = {}
        self._waiting_index: dict[str, str] = {}  # caller uniqueid -> queue
        self._ringing_index: dict[str, set[str]] = {}  # caller uniqueid -> interfaces ringing
        self._talking_index: dict[str, str] = {}  # caller uniqueid -> interface on the call
        self._wrapping: set[str] = set()  # interfaces with a wrap-up timer running
        self._handlers: dict[type, Callable[[Any, datetime], set[str]]] = {
            QueueMemberChanged: self._on_member,
            AgentCalled: self._on_called,
            AgentRingNoAnswer: self._on_ring_no_answer,
            AgentConnected: self._on_connect,
            AgentCompleted: self._on_complete,
            AgentDumped: self._on_dump,
            QueueCallerJoined: self._on_join,
            QueueCallerLeft: self._on_leave,
            QueueCallerAbandoned: self._on_leave,
            ChannelHungUp: self._on_hangup,
            QueueParamsListed: self._on_params,
            QueueEntryListed: self._on_entry,
        }
        self._touched_agents: set[str] = set()
        self._touched_queues: set[str] = set()

    # -- public API ----------------------------------------------------------------------------

    def apply(self, event: AmiEvent, now: datetime) -> list[AgentEffect]:
        """Apply one event and return the effects (with any left by `update`)."""
        self.update(event, now)
        return self.flush(now)

    def update(self, event: AmiEvent, now: datetime) -> None:
        """Apply one event but keep its effects for the next `flush` (or apply/tick/reconcile).
        A consumer working through a burst flushes once per batch: subscribers then get the
        latest state of each agent and queue, not every intermediate one."""
        handler = self._handlers.get(type(event))
        if self._wrapping:
            self._finish_wrap_ups(now)
        if handler is not None:
            touched = handler(event, now)
            if touched:
                self._touched_queues |= touched

    def flush(self, now: datetime) -> list[AgentEffect]:
        """The effects of everything applied since the last flush."""
        if not self._touched_agents and not self._touched_queues:
            return []
        return self._flush(now, set())

    def tick(self, now: datetime) -> list[AgentEffect]:
        """End the wrap-ups that are over (call it periodically)."""
        if self._wrapping:
            self._finish_wrap_ups(now)
        return self.flush(now)

    def _finish_wrap_ups(self, now: datetime) -> None:
        done = []
        for interface in self._wrapping:
            until = self._agents[interface].wrap_until
            if until is None or now >= until:
                done.append(interface)
        for interface in done:
            self._wrapping.discard(interface)
            self._agents[interface].wrap_until = None
            self._touched_agents.add(interface)

    def reconcile(self, snapshot: ResyncSource, now: datetime) -> list[AgentEffect]:
        """Replace member and waiting-caller state of the queues in a QueueStatus resync."""
        items = decode_all(snapshot.queue_status)
        listed_queues = {
            i.queue
            for i in items
            if isinstance(i, QueueParamsListed | QueueMemberChanged | QueueEntryListed)
        }
        touched: set[str] = set(listed_queues)
        members_seen: set[tuple[str, str]] = set()
        for q in listed_queues:
            queue = self._queue(q)
            if queue is None:
                continue
            for uniqueid in list(queue.waiting):
                self._waiting_index.pop(uniqueid, None)
            queue.waiting.clear()
        # ringing/talking flags may be stale after a gap: re-derive them from device state
        for agent in self._agents.values():
            if agent.ringing is not None or agent.talking is not None:
                agent.ringing = agent.talking = None
                self._touched_agents.add(agent.interface)
        self._ringing_index.clear()
        self._talking_index.clear()
        for item in items:
            if isinstance(item, QueueMemberChanged):
                members_seen.add((item.interface, item.queue))
                touched |= self._on_member(item, now)
            elif isinstance(item, QueueParamsListed | QueueEntryListed):
                touched |= self._handlers[type(item)](item, now)
        for agent in self._agents.values():
            for q in [q for q in agent.memberships if q in listed_queues]:
                if (agent.interface, q) not in members_seen:
                    del agent.memberships[q]
                    self._touched_agents.add(agent.interface)
        return self._flush(now, touched)

    def agents(self) -> list[AgentState]:
        return sorted(
            (a.snapshot() for a in self._agents.values()), key=lambda s: (s.name, s.interface)
        )

    def agent(self, interface: str) -> AgentState | None:
        agent = self._agents.get(interface)
        return agent.snapshot() if agent is not None else None

    def queues(self, now: datetime) -> list[QueueStats]:
        return [self._stats(q, now) for q in sorted(self._queues)]

    def queue(self, name: str, now: datetime) -> QueueStats | None:
        return self._stats(name, now) if name in self._queues else None

    # -- helpers ----------------------------------------------------------------------------------

    def _queue(self, name: str) -> _Queue | None:
        queue = self._queues.get(name)
        if queue is None:
            if not name or len(self._queues) >= self._max_queues:
                return None
            queue = self._queues[name] = _Queue(name)
        return queue

    def _agent(self, interface: str, name: str, now: datetime) -> _Agent | None:
        agent = self._agents.get(interface)
        if agent is None:
            if not interface:
                return None
            if len(self._agents) >= self._max_agents and not self._drop_logged_out():
                return None
            agent = self._agents[interface] = _Agent(interface, name or interface, now)
            self._touched_agents.add(interface)
        elif name and name != agent.name:
            agent.name = name
            self._touched_agents.add(interface)
        return agent

    def _drop_logged_out(self) -> bool:
        for interface, agent in self._agents.items():
            if agent.status == "logged_out" and not agent.memberships:
                del self._agents[interface]
                self._wrapping.discard(interface)
                return True
        return False

    def _wrapup_for(self, agent: _Agent, queue: str) -> int:
        m = agent.memberships.get(queue)
        if m is not None and m.wrapup_time > 0:
            return m.wrapup_time
        return max(0, self._wrapup_by_queue.get(queue, self._default_wrapup))

    def _stop_ringing(self, caller: str) -> None:
        for interface in self._ringing_index.pop(caller, set()):
            agent = self._agents.get(interface)
            if agent is not None and agent.ringing is not None and agent.ringing[0] == caller:
                agent.ringing = None
                self._touched_agents.add(interface)

    def _flush(self, now: datetime, queues: set[str]) -> list[AgentEffect]:
        effects: list[AgentEffect] = []
        if self._touched_queues:
            queues |= self._touched_queues
            self._touched_queues = set()
        for interface in self._touched_agents:
            agent = self._agents.get(interface)
            if agent is None:
                continue
            status = agent.derive(now)
            previous = agent.status
            if status != previous:
                agent.status = status
                agent.since = now
            state = agent.snapshot()
            if state == agent.published:
                continue
            agent.published = state
            effects.append(AgentStateChanged(state, previous))
            if status != previous:
                queues.update(agent.memberships)
        self._touched_agents.clear()
        for name in sorted(queues):
            queue = self._queues.get(name)
            if queue is None:
                continue
            stats = self._stats(name, now)
            key = _published_fields(stats)  # all but longest_wait_seconds: it grows with time
            if key != queue.published:
                queue.published = key
                effects.append(QueueStatsChanged(stats))
        return effects

    def _stats(self, name: str, now: datetime) -> QueueStats:
        queue = self._queues[name]
        callers = tuple(sorted(queue.waiting.values(), key=lambda c: c.joined_at))
        longest = max(0.0, (now - callers[0].joined_at).total_seconds()) if callers else 0.0
        members: dict[AgentStatus, int] = dict.fromkeys(AGENT_STATUSES, 0)
        for agent in self._agents.values():
            if name in agent.memberships:
                members[agent.status or "logged_out"] += 1
        p = queue.params
        return QueueStats(
            queue=name,
            waiting=len(callers),
            longest_wait_seconds=longest,
            callers=callers,
            members=members,
            strategy=p.strategy if p else "",
            completed=p.completed if p else 0,
            abandoned=p.abandoned if p else 0,
            holdtime=p.holdtime if p else 0,
            talktime=p.talktime if p else 0,
            service_level=p.service_level if p else 0,
            service_level_perf=p.service_level_perf if p else None,
        )

    # -- handlers: each returns the queues whose stats changed ---------------------------------

    def _on_member(self, ev: QueueMemberChanged, now: datetime) -> set[str]:
        agent = self._agent(ev.interface, ev.member_name, now)
        if agent is None or self._queue(ev.queue) is None:
            return set()
        self._touched_agents.add(agent.interface)
        agent.device_status = ev.status
        agent.in_call = ev.in_call
        if ev.change == "removed":
            agent.memberships.pop(ev.queue, None)
            return {ev.queue}
        agent.memberships[ev.queue] = QueueMembership(
            queue=ev.queue,
            penalty=ev.penalty,
            membership=ev.membership,
            paused=ev.paused,
            paused_reason=ev.paused_reason if ev.paused else "",
            calls_taken=ev.calls_taken,
            last_call=ev.last_call,
            in_call=ev.in_call,
            wrapup_time=ev.wrapup_time,
        )
        return {ev.queue}

    def _on_called(self, ev: AgentCalled, now: datetime) -> set[str]:
        agent = self._agent(ev.interface, ev.member_name, now)
        if agent is None:
            return set()
        agent.ringing = (ev.uniqueid, ev.queue)
        self._ringing_index.setdefault(ev.uniqueid, set()).add(agent.interface)
        self._touched_agents.add(agent.interface)
        return set()

    def _on_ring_no_answer(self, ev: AgentRingNoAnswer, now: datetime) -> set[str]:
        agent = self._agents.get(ev.interface)
        if agent is not None and agent.ringing is not None and agent.ringing[0] == ev.uniqueid:
            agent.ringing = None
            self._ringing_index.get(ev.uniqueid, set()).discard(agent.interface)
            self._touched_agents.add(agent.interface)
        return set()

    def _on_connect(self, ev: AgentConnected, now: datetime) -> set[str]:
        self._stop_ringing(ev.uniqueid)
        self._remove_waiting(ev.uniqueid)
        agent = self._agent(ev.interface, ev.member_name, now)
        if agent is not None:
            agent.ringing = None
            agent.talking = (ev.uniqueid, ev.queue)
            self._talking_index[ev.uniqueid] = agent.interface
            agent.wrap_until = None
            self._wrapping.discard(agent.interface)
            self._touched_agents.add(agent.interface)
        return {ev.queue}

    def _on_complete(self, ev: AgentCompleted, now: datetime) -> set[str]:
        agent = self._agents.get(ev.interface)
        if agent is None or agent.talking is None or agent.talking[0] != ev.uniqueid:
            return set()  # unknown, or already completed (a duplicate)
        self._end_talk(agent, now)
        return set()

    def _end_talk(self, agent: _Agent, now: datetime) -> None:
        assert agent.talking is not None
        caller, queue = agent.talking
        agent.talking = None
        if self._talking_index.get(caller) == agent.interface:
            del self._talking_index[caller]
        wrapup = self._wrapup_for(agent, queue)
        if wrapup > 0:
            agent.wrap_until = now + timedelta(seconds=wrapup)
            self._wrapping.add(agent.interface)
        self._touched_agents.add(agent.interface)

    def _on_dump(self, ev: AgentDumped, now: datetime) -> set[str]:
        agent = self._agents.get(ev.interface)
        if agent is not None and agent.talking is not None and agent.talking[0] == ev.uniqueid:
            agent.talking = None
            self._talking_index.pop(ev.uniqueid, None)
            self._touched_agents.add(agent.interface)
        return set()

    def _on_join(self, ev: QueueCallerJoined, now: datetime) -> set[str]:
        queue = self._queue(ev.queue)
        if queue is None or ev.uniqueid in queue.waiting or not ev.uniqueid:
            return set()
        if len(queue.waiting) >= self._max_waiting:
            return set()
        previous = self._waiting_index.get(ev.uniqueid)
        touched = {ev.queue}
        if previous is not None:
            self._remove_waiting(ev.uniqueid)
            touched.add(previous)
        queue.waiting[ev.uniqueid] = WaitingCaller(
            uniqueid=ev.uniqueid,
            channel=ev.channel,
            caller_number=ev.caller_number,
            caller_name=ev.caller_name,
            joined_at=now,
            position=ev.position,
        )
        self._waiting_index[ev.uniqueid] = ev.queue
        return touched

    def _remove_waiting(self, uniqueid: str) -> str | None:
        name = self._waiting_index.pop(uniqueid, None)
        if name is not None:
            queue = self._queues.get(name)
            if queue is not None:
                queue.waiting.pop(uniqueid, None)
        return name

    def _on_leave(self, ev: QueueCallerLeft | QueueCallerAbandoned, now: datetime) -> set[str]:
        self._stop_ringing(ev.uniqueid)
        name = self._remove_waiting(ev.uniqueid)
        return {name} if name is not None else set()

    def _on_hangup(self, ev: ChannelHungUp, now: datetime) -> set[str]:
        uniqueid = ev.uniqueid
        talking = self._talking_index.pop(uniqueid, None)
        if talking is not None:  # the caller is gone but no AgentComplete was seen
            agent = self._agents.get(talking)
            if agent is not None and agent.talking is not None and agent.talking[0] == uniqueid:
                self._end_talk(agent, now)
        if uniqueid not in self._waiting_index and uniqueid not in self._ringing_index:
            return set()  # the hot path: most hangups concern no waiting caller
        self._stop_ringing(ev.uniqueid)
        name = self._remove_waiting(ev.uniqueid)
        return {name} if name is not None else set()

    def _on_params(self, ev: QueueParamsListed, now: datetime) -> set[str]:
        queue = self._queue(ev.queue)
        if queue is None:
            return set()
        queue.params = ev
        return {ev.queue}

    def _on_entry(self, ev: QueueEntryListed, now: datetime) -> set[str]:
        queue = self._queue(ev.queue)
        if queue is None or not ev.uniqueid or len(queue.waiting) >= self._max_waiting:
            return set()
        self._remove_waiting(ev.uniqueid)
        queue.waiting[ev.uniqueid] = WaitingCaller(
            uniqueid=ev.uniqueid,
            channel=ev.channel,
            caller_number=ev.caller_number,
            caller_name=ev.caller_name,
            joined_at=now - timedelta(seconds=ev.wait_seconds or 0),
            position=ev.position,
        )
        self._waiting_index[ev.uniqueid] = ev.queue
        return {ev.queue}
