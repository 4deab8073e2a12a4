"""effect_json: the JSON text built straight from call records (orjson) is the same JSON document
as json.dumps of the payload dicts (same keys in the same order, same values; a float may be
spelled differently, 1e-07 / 1e-7), and bad values fail the way json.dumps fails."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.bus.memory import MemoryBus
from callcenter.calls.model import CallRecord, Transfer
from callcenter.calls.notifier import CallNotifier, effect_json, effect_message
from callcenter.calls.service import (
    AgentAnswered,
    AgentFinished,
    AgentNoAnswer,
    AgentRinging,
    CallEffect,
    CallEnded,
    CallStarted,
    CallUpdated,
)

T0 = datetime(2024, 5, 14, 10, 15, 2, 123456, tzinfo=UTC)

texts = st.text(max_size=12)  # any code point: quotes, backslashes, controls, CJK, emoji
times = st.none() | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))]))
numbers = st.none() | st.floats(allow_nan=False, allow_infinity=False)

records = st.builds(
    CallRecord,
    uniqueid=texts,
    linkedid=texts,
    channel=texts,
    started_at=st.datetimes(timezones=st.just(UTC)),
    caller_number=texts,
    caller_name=texts,
    dialed_number=texts,
    direction=st.sampled_from(["inbound", "outbound"]),
    ivr_path=st.lists(texts, max_size=3).map(tuple),
    ivr_choice=st.none() | texts,
    queue=st.none() | texts,
    queue_priority=st.none() | st.integers(-(2**70), 2**70),
    queue_joined_at=times,
    queue_left_at=times,
    agent=st.none() | texts,
    agent_interface=st.none() | texts,
    answered_at=times,
    ended_at=times,
    wait_seconds=numbers,
    talk_seconds=numbers,
    abandoned=st.booleans(),
    abandon_stage=st.none() | st.sampled_from(["ivr", "queue"]),
    abandon_after_seconds=numbers,
    transfers=st.lists(
        st.builds(
            Transfer,
            at=st.datetimes(timezones=st.just(UTC)),
            kind=st.sampled_from(["blind", "attended"]),
            target=texts,
            source=texts,
            answered_at=times,
        ),
        max_size=2,
    ).map(tuple),
    hangup_cause=st.none() | st.integers(0, 127),
    hangup_cause_text=st.none() | texts,
    recording_file=st.none() | texts,
    end_reason=st.none() | st.sampled_from(["completed", "abandoned", "expired"]),
    variables=st.dictionaries(texts, texts, max_size=3),
    queues=st.lists(texts, max_size=2).map(tuple),
    agents=st.lists(texts, max_size=2).map(tuple),
    adopted=st.booleans(),
)


def _effects(record: CallRecord, seconds: float | None, text: str) -> list[CallEffect]:
    leg = (text, "PJSIP/1001", text, "PJSIP/1001-00000001", "1715681710.20")
    return [
        CallStarted(record),
        CallUpdated(record, "answered"),
        CallEnded(record),
        AgentRinging(record, *leg, hold_seconds=seconds),
        AgentNoAnswer(record, *leg, ring_seconds=seconds),
        AgentAnswered(record, *leg, hold_seconds=seconds, ring_seconds=None),
        AgentFinished(record, *leg, talk_seconds=seconds, reason=text),
    ]


def _dumps(payload: object) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _document(text: str) -> object:
    """The JSON document with its objects as lists of pairs: key order counts."""
    return json.loads(text, object_pairs_hook=list)


def _same(got: tuple[str, str], want: tuple[str, str]) -> bool:
    return got[0] == want[0] and _document(got[1]) == _document(want[1])


@settings(max_examples=150, deadline=None)
@given(records, numbers, texts)
def test_same_text_as_json_dumps(record: CallRecord, seconds: float | None, text: str) -> None:
    for effect in _effects(record, seconds, text):
        channel, payload = effect_message(effect)
        assert _same(effect_json(effect), (channel, _dumps(payload)))


def _record(**changes: object) -> CallRecord:
    base: dict[str, object] = {
        "uniqueid": "1.1",
        "linkedid": "1.1",
        "channel": "PJSIP/trunk-00000001",
        "started_at": T0,
        "caller_name": '张三 "VIP" \\ \n',
    }
    base.update(changes)
    return CallRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_fail_like_json(bad: float) -> None:
    with pytest.raises(ValueError):
        effect_json(CallEnded(_record(wait_seconds=bad)))
    with pytest.raises(ValueError):
        effect_json(AgentRinging(_record(), "q", "i", "m", "c", "u", hold_seconds=bad))


def test_unexpected_types_take_the_json_path() -> None:
    # an int where a float is typed, a bool where an int is typed, a non-str variable value:
    # json.dumps accepts them, so the fast path must not refuse them either
    record = _record(wait_seconds=3, hangup_cause=True, variables={"CALLCENTER_X": 5})
    effect = CallUpdated(record, "queued")
    assert _same(
        effect_json(effect), (effect_message(effect)[0], _dumps(effect_message(effect)[1]))
    )
    with pytest.raises(TypeError):
        effect_json(CallEnded(_record(variables={"X": object()})))


async def test_memory_bus_subscribers_get_the_payload_dicts() -> None:
    bus = MemoryBus()
    effects: list[CallEffect] = [
        CallStarted(_record()),
        AgentRinging(_record(), "support", "PJSIP/1001", "Alice", "c", "u", hold_seconds=1.5),
    ]
    async with bus.subscribe("calls", "agents") as messages:
        await CallNotifier(bus=bus).publish(effects)
        got = [await anext(messages), await anext(messages)]
    assert got == [effect_message(e) for e in effects]


def test_equal_times_in_other_zones_keep_their_offset() -> None:
    utc = T0
    beijing = T0.astimezone(timezone(timedelta(hours=8)))
    assert utc == beijing
    for at in (utc, beijing, utc):
        effect = CallEnded(_record(started_at=at, ended_at=at))
        assert effect_json(effect)[1] == _dumps(effect_message(effect)[1])  # the same text


def test_plain_values_give_the_same_text() -> None:
    record = _record(wait_seconds=12.5, talk_seconds=0.25, queue_priority=10, ivr_path=("a",))
    for effect in _effects(record, 3.0, "x"):
        assert effect_json(effect)[1] == _dumps(effect_message(effect)[1])
