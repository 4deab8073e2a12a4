"""AgentStateTracker.update/flush: a batch applied quietly ends in the same state as applying
event by event, and one flush publishes only the latest state of each agent and queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ami_support import load_raw, requires_raw

from callcenter.agents.service import AgentStateChanged, AgentStateTracker, QueueStatsChanged
from callcenter.asterisk.events import AmiEvent, decode_event

BASE = datetime(2024, 5, 14, 10, 15, 2, tzinfo=UTC)


def _events(name: str) -> list[AmiEvent]:
    return [ev for ev in map(decode_event, load_raw(name)) if ev is not None]


@requires_raw
@pytest.mark.parametrize(
    "name", ["04_inbound_ivr_queue_agent_call.ast.raw", "05_queue_abandon.ast.raw"]
)
def test_batched_updates_end_in_the_same_state(name: str) -> None:
    one_by_one, batched = AgentStateTracker(), AgentStateTracker()
    published: dict[str, AgentStateChanged] = {}
    stats: dict[str, QueueStatsChanged] = {}
    for i, ev in enumerate(_events(name)):
        for effect in one_by_one.apply(ev, BASE + timedelta(seconds=i)):
            if isinstance(effect, AgentStateChanged):
                published[effect.agent.interface] = effect
            else:
                stats[effect.stats.queue] = effect
        batched.update(ev, BASE + timedelta(seconds=i))
    end = BASE + timedelta(seconds=len(_events(name)))
    effects = batched.flush(end)
    agents = [e for e in effects if isinstance(e, AgentStateChanged)]
    queues = [e for e in effects if isinstance(e, QueueStatsChanged)]
    # one effect per agent and queue that changed, carrying the state one_by_one ended in
    assert sorted(e.agent.interface for e in agents) == sorted(published)
    assert len(queues) == len({e.stats.queue for e in queues}) == len(stats)
    for effect in agents:
        last = published[effect.agent.interface].agent
        assert (effect.agent.status, effect.agent.queues) == (last.status, last.queues)
        assert effect.previous is None  # nothing was published before this flush

    def picture(tracker: AgentStateTracker) -> list[tuple[object, ...]]:
        # `since` differs by design: a batch sees a status change when it is flushed
        return [(a.interface, a.status, a.queues, a.device_status) for a in tracker.agents()]

    assert picture(batched) == picture(one_by_one)
    assert batched.queues(end) == one_by_one.queues(end)
    assert batched.flush(end) == []  # nothing new


def test_tick_and_apply_publish_what_update_left() -> None:
    from callcenter.asterisk.events import QueueMemberChanged

    member = QueueMemberChanged(
        change="added", queue="support", member_name="Alice", interface="PJSIP/1001",
        state_interface="", membership="dynamic", penalty=0, calls_taken=0, last_call=0,
        last_pause=0, login_time=0, in_call=False, status=1, paused=False, paused_reason="",
        wrapup_time=0,
    )  # fmt: skip
    tracker = AgentStateTracker()
    tracker.update(member, BASE)
    effects = tracker.tick(BASE)
    assert [type(e) for e in effects] == [AgentStateChanged, QueueStatsChanged]
    assert tracker.tick(BASE) == []
    tracker.update(member, BASE)  # the same again: nothing changed
    assert tracker.flush(BASE) == []
