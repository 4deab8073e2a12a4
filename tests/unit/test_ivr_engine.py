"""Exhaustive tests of the pure IVR engine (no sockets, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callcenter.ivr.engine import (
    HUNG_UP,
    MAX_NODE_VISITS,
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
from callcenter.ivr.loader import load_calendar, parse_flow
from callcenter.ivr.model import CustomerInfo, Flow

ROOT = Path(__file__).resolve().parents[2]
CAL = load_calendar(ROOT / "ivr_flows" / "calendar.yaml")
# 2026-12-02 is a Wednesday; 10:00 in Shanghai = 02:00 UTC.
OPEN_NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
CLOSED_NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # 22:00 Shanghai
HOLIDAY_NOW = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)

HANG = object()  # a script item: the caller hangs up during this command


def flow_of(text: str) -> Flow:
    flow, errors = parse_flow(text, source="test.yaml", default_name="test")
    assert not errors, errors
    assert flow is not None
    return flow


@dataclass
class Fake:
    """Answers engine commands from a script of key presses.

    Script items are consumed by WaitDigit / GetData / Play-with-escape-digits("!" prefix
    means pressed during the prompt). ``HANG`` makes the consuming command report a hangup;
    ``hangup_on`` makes the first command of that type report a hangup.
    """

    keys: list[Any] = field(default_factory=list)
    customer: CustomerInfo | None = None
    lookup_failed: bool = False
    now: datetime = OPEN_NOW
    callback_ok: bool = True
    hangup_on: type | None = None
    commands: list[Command] = field(default_factory=list)

    def answer(self, cmd: Command) -> Reply:
        self.commands.append(cmd)
        if self.hangup_on is not None and isinstance(cmd, self.hangup_on):
            return HUNG_UP
        match cmd:
            case Play(escape_digits=esc):
                if esc and self.keys and isinstance(self.keys[0], str) and self.keys[0][:1] == "!":
                    key = self.keys.pop(0)[1:]
                    return Digits(key)
                if esc and self.keys and self.keys[0] is HANG:
                    self.keys.pop(0)
                    return HUNG_UP
                return Digits()
            case WaitDigit() | GetData():
                item = self.keys.pop(0)
                if item is HANG:
                    return HUNG_UP
                return Digits(item or "", timed_out=not item)
            case SayDigits():
                return Digits()
            case Lookup():
                return LookupResult(self.customer, failed=self.lookup_failed)
            case HoursCheck():
                return self.now
            case RecordCallback():
                return Ack(self.callback_ok)
            case SetVar() | Step() | Hangup():
                return Ack()
        raise AssertionError(cmd)

    def run(self, flow: Flow, caller: str | None = "13800000000") -> Outcome:
        gen = run_flow(
            flow,
            calendar=CAL,
            caller=caller,
            default_queue="general",
            operator_queue="operator",
        )
        reply: Reply = None
        try:
            cmd = next(gen)
            while True:
                reply = self.answer(cmd)
                cmd = gen.send(reply)
        except StopIteration as stop:
            assert isinstance(stop.value, Outcome)
            return stop.value

    def of(self, kind: type) -> list[Any]:
        return [c for c in self.commands if isinstance(c, kind)]

    def steps(self) -> list[tuple[str, str | None, str | None]]:
        return [(s.node, s.input, s.result) for s in self.of(Step)]

    def setvars(self) -> dict[str, str]:
        return {c.name: c.value for c in self.of(SetVar)}


MENU = """
start: main
nodes:
  main:
    type: menu
    prompt: p/main
    options: {{"1": q1, "2": q2}}
    replay_key: "*"
    operator_key: "0"
    invalid_prompt: p/invalid
    timeout_prompt: p/timeout
    {extra}
  q1: {{type: queue, queue: one}}
  q2: {{type: queue, queue: two, priority: 3}}
  {more}
"""


def menu_flow(extra: str = "", more: str = "") -> Flow:
    return flow_of(MENU.format(extra=extra, more=more))


# ---------------------------------------------------------------------------------------------
# menu


def test_menu_choice_after_prompt() -> None:
    fake = Fake(keys=["1"])
    out = fake.run(menu_flow())
    assert out.kind == "queue" and out.queue == "one" and out.priority == 0
    assert out.path == ("main", "1", "q1")
    assert fake.of(SetVar) == [
        SetVar("IVR_QUEUE", "one"),
        SetVar("QUEUE_PRIO", "0"),
        SetVar("IVR_CHOICE", "1"),
        SetVar("CALLCENTER_IVR_PATH", "main,1,q1"),
    ]
    assert fake.of(Play)[0] == Play("p/main", "0123456789*#")
    assert fake.of(WaitDigit)[0].timeout_ms == 5000
    assert fake.steps() == [("main", "1", "q1"), ("q1", None, "one")]


def test_menu_choice_during_prompt_skips_wait() -> None:
    fake = Fake(keys=["!2"])
    out = fake.run(menu_flow())
    assert out.queue == "two" and out.priority == 3
    assert fake.of(WaitDigit) == []


def test_menu_invalid_then_valid_plays_invalid_prompt() -> None:
    fake = Fake(keys=["7", "2"])
    out = fake.run(menu_flow())
    assert out.queue == "two"
    assert [p.file for p in fake.of(Play)] == ["p/main", "p/invalid", "p/main"]
    assert fake.steps()[0] == ("main", "7", "invalid")


def test_menu_timeout_then_valid_plays_timeout_prompt() -> None:
    fake = Fake(keys=["", "1"])
    out = fake.run(menu_flow())
    assert out.queue == "one"
    assert [p.file for p in fake.of(Play)] == ["p/main", "p/timeout", "p/main"]
    assert fake.steps()[0] == ("main", None, "timeout")


def test_menu_invalid_exhausted_defaults_to_default_queue() -> None:
    fake = Fake(keys=["7", "8", "#"])
    out = fake.run(menu_flow())
    assert out.kind == "queue" and out.queue == "general"
    assert [s[2] for s in fake.steps()] == ["invalid", "invalid", "invalid", "exhausted"]
    # no invalid prompt after the last attempt
    assert [p.file for p in fake.of(Play)].count("p/invalid") == 2


def test_menu_timeouts_exhausted_goes_to_on_exhausted() -> None:
    fake = Fake(keys=["", "", ""])
    out = fake.run(menu_flow(extra="on_exhausted: q2"))
    assert out.queue == "two"
    assert [s[2] for s in fake.steps()][:4] == ["timeout", "timeout", "timeout", "exhausted"]


def test_menu_counters_are_separate() -> None:
    # 2 invalid + 2 timeouts (each below 3) then a valid key: not exhausted.
    fake = Fake(keys=["7", "", "8", "", "1"])
    out = fake.run(menu_flow())
    assert out.queue == "one"


def test_menu_custom_limits() -> None:
    fake = Fake(keys=["7"])
    out = fake.run(menu_flow(extra="max_invalid: 1"))
    assert out.queue == "general"
    fake = Fake(keys=["", "1"])
    out = fake.run(menu_flow(extra="max_timeouts: 1"))
    assert out.queue == "general"


def test_menu_replay_does_not_count() -> None:
    fake = Fake(keys=["*", "*", "*", "*", "1"])
    out = fake.run(menu_flow(extra="max_invalid: 1"))
    assert out.queue == "one"
    assert [p.file for p in fake.of(Play)] == ["p/main"] * 5
    assert [s[2] for s in fake.steps()][:4] == ["replay"] * 4


def test_menu_operator_key() -> None:
    fake = Fake(keys=["0"])
    out = fake.run(menu_flow())
    assert out.queue == "operator" and out.path == ("main", "0")
    assert fake.setvars()["IVR_CHOICE"] == "0"
    assert fake.steps()[-1] == ("main", None, "operator")


def test_menu_without_operator_key_treats_zero_as_invalid() -> None:
    flow = flow_of(
        """
start: m
nodes:
  m: {type: menu, prompt: p, options: {"1": q}, max_invalid: 1}
  q: {type: queue, queue: x}
"""
    )
    fake = Fake(keys=["0"])
    assert fake.run(flow).queue == "general"


@pytest.mark.parametrize("where", ["prompt", "wait"])
def test_menu_hangup(where: str) -> None:
    fake = Fake(keys=[HANG]) if where == "prompt" else Fake(hangup_on=WaitDigit)
    out = fake.run(menu_flow())
    assert out.kind == "caller_hangup" and out.queue is None
    assert fake.steps()[-1] == ("main", None, "hangup")
    assert fake.of(SetVar) == []


# ---------------------------------------------------------------------------------------------
# play, goto, set, hangup


def test_play_goto_set_and_variables() -> None:
    flow = flow_of(
        """
start: hello
variables: {TEAM: blue}
nodes:
  hello: {type: play, prompt: [a/one, a/two], next: g}
  g: {type: goto, target: s}
  s: {type: set, var: X, value: "{TEAM}-{CALLER}-{MISSING}", channel: true, next: q}
  q: {type: queue, queue: general}
"""
    )
    fake = Fake()
    out = fake.run(flow, caller="555")
    assert [p.file for p in fake.of(Play)] == ["a/one", "a/two"]
    assert fake.of(Play)[0].escape_digits == ""
    assert out.variables["X"] == "blue-555-"
    assert fake.setvars()["X"] == "blue-555-"
    assert out.path == ("q",)
    assert [s[0] for s in fake.steps()] == ["hello", "g", "s", "q"]


def test_set_without_channel_sends_no_setvar() -> None:
    flow = flow_of(
        """
start: s
nodes:
  s: {type: set, var: X, value: v, next: q}
  q: {type: queue, queue: general}
"""
    )
    fake = Fake()
    fake.run(flow)
    assert "X" not in fake.setvars()


def test_hangup_node() -> None:
    flow = flow_of("start: h\nnodes:\n  h: {type: hangup, prompt: p/bye}\n")
    fake = Fake()
    out = fake.run(flow)
    assert out.kind == "hangup"
    assert fake.of(Play) == [Play("p/bye", "")]
    assert isinstance(fake.commands[-1], Hangup)


@pytest.mark.parametrize(
    ("text", "hang"),
    [
        (
            "start: h\nnodes:\n  h: {type: play, prompt: p, next: q}\n"
            "  q: {type: queue, queue: x}\n",
            Play,
        ),
        ("start: h\nnodes:\n  h: {type: hangup, prompt: p}\n", Play),
        ("start: h\nnodes:\n  h: {type: queue, queue: x, prompt: p}\n", Play),
        ("start: h\nnodes:\n  h: {type: queue, queue: x}\n", SetVar),
        (
            "start: h\nnodes:\n  h: {type: set, var: A, value: b, channel: true, next: q}\n"
            "  q: {type: queue, queue: x}\n",
            SetVar,
        ),
    ],
)
def test_hangup_in_simple_nodes(text: str, hang: type) -> None:
    fake = Fake(hangup_on=hang)
    out = fake.run(flow_of(text))
    assert out.kind == "caller_hangup"
    assert fake.steps()[-1] == ("h", None, "hangup")


def test_loop_guard_ends_in_default_queue() -> None:
    flow = flow_of(
        """
start: a
nodes:
  a: {type: menu, prompt: p, options: {"1": b}}
  b: {type: goto, target: a}
"""
    )
    fake = Fake(keys=["1"] * (MAX_NODE_VISITS + 5))
    out = fake.run(flow)
    assert out.queue == "general"
    assert fake.steps()[-1][2] == "loop"


# ---------------------------------------------------------------------------------------------
# collect

COLLECT = """
start: c
nodes:
  c:
    type: collect
    prompt: p/order
    var: ORDER
    min_digits: 4
    max_digits: 6
    invalid_prompt: p/bad
    next: ok
    {extra}
  ok: {{type: queue, queue: bookings}}
"""
FAIL_NODE = "  fail: {type: queue, queue: general}\n"


def test_collect_ok() -> None:
    fake = Fake(keys=["12345"])
    out = fake.run(flow_of(COLLECT.format(extra="")))
    assert out.queue == "bookings" and out.variables["ORDER"] == "12345"
    assert fake.of(GetData) == [GetData("p/order", 6000, 6)]
    assert fake.setvars()["CALLCENTER_ORDER"] == "12345"
    assert fake.steps()[0] == ("c", "12345", "ok")


def test_collect_retries_then_ok() -> None:
    fake = Fake(keys=["12", "", "1234"])
    out = fake.run(flow_of(COLLECT.format(extra="")))
    assert out.variables["ORDER"] == "1234"
    assert [s[2] for s in fake.steps()][:3] == ["invalid", "timeout", "ok"]
    assert [p.file for p in fake.of(Play)] == ["p/bad", "p/bad"]


def test_collect_fails_to_on_fail() -> None:
    fake = Fake(keys=["1", "2", "3"])
    out = fake.run(flow_of(COLLECT.format(extra="on_fail: fail") + FAIL_NODE))
    assert out.queue == "general" and "ORDER" not in out.variables
    assert fake.steps()[3] == ("c", None, "failed")


def test_collect_fail_without_on_fail_goes_next() -> None:
    fake = Fake(keys=["", "", ""])
    out = fake.run(flow_of(COLLECT.format(extra="max_attempts: 3")))
    assert out.queue == "bookings"


def test_collect_rejects_star_digits() -> None:
    fake = Fake(keys=["12*4", "1234"])
    out = fake.run(flow_of(COLLECT.format(extra="")))
    assert out.variables["ORDER"] == "1234"


def test_collect_hangup() -> None:
    fake = Fake(keys=[HANG])
    out = fake.run(flow_of(COLLECT.format(extra="")))
    assert out.kind == "caller_hangup"
    assert fake.steps()[-1] == ("c", None, "hangup")


# ---------------------------------------------------------------------------------------------
# hours

HOURS = """
start: h
nodes:
  h: {{type: hours, open: o, closed: c {extra}}}
  o: {{type: queue, queue: open}}
  c: {{type: queue, queue: closed}}
  hol: {{type: queue, queue: holiday}}
"""


@pytest.mark.parametrize(
    ("now", "extra", "queue", "result"),
    [
        (OPEN_NOW, "", "open", "open"),
        (CLOSED_NOW, "", "closed", "closed"),
        (HOLIDAY_NOW, "", "closed", "holiday"),
        (HOLIDAY_NOW, ", holiday: hol", "holiday", "holiday"),
    ],
)
def test_hours(now: datetime, extra: str, queue: str, result: str) -> None:
    text = HOURS.format(extra=extra)
    if not extra:
        text = text.replace("  hol: {type: queue, queue: holiday}\n", "")
    fake = Fake(now=now)
    out = fake.run(flow_of(text))
    assert out.queue == queue
    assert fake.steps()[0][2] == result


def test_hours_uses_the_calendar_given() -> None:
    from callcenter.ivr.calendar import always_open

    flow = flow_of(HOURS.format(extra="").replace("  hol: {type: queue, queue: holiday}\n", ""))
    gen = run_flow(flow, calendar=always_open(), caller=None, default_queue="g", operator_queue="o")
    assert isinstance(next(gen), HoursCheck)
    assert gen.send(CLOSED_NOW) == Step("h", "hours", None, "open")


# ---------------------------------------------------------------------------------------------
# lookup and language

LOOKUP = """
start: l
languages: [zh, en]
language: zh
nodes:
  l: {type: lookup, next: lang, key_priority: 7}
  lang:
    type: language
    prompt: p/choose
    options: {"1": zh, "2": en}
    default: zh
    next: w
  w: {type: play, prompt: hotline/welcome, next: q}
  q: {type: queue, queue: general, priority: 2}
"""


def test_lookup_key_customer_priority_and_language_skip() -> None:
    cust = CustomerInfo(customer_id="C9", name="王", is_key_customer=True, language="en")
    fake = Fake(customer=cust)
    out = fake.run(flow_of(LOOKUP))
    assert fake.of(Lookup) == [Lookup("13800000000")]
    assert out.priority == 7
    assert out.variables["CUSTOMER_ID"] == "C9" and out.variables["KEY_CUSTOMER"] == "1"
    assert [p.file for p in fake.of(Play)] == ["en/hotline/welcome"]  # language question skipped
    assert fake.setvars()["CALLCENTER_KEY_CUSTOMER"] == "1"
    assert fake.setvars()["QUEUE_PRIO"] == "7"
    assert fake.steps()[0] == ("l", "13800000000", "key")
    assert fake.steps()[1] == ("lang", None, "en")


def test_lookup_known_not_key() -> None:
    cust = CustomerInfo(customer_id="C1", name="A", is_key_customer=False)
    fake = Fake(customer=cust, keys=["2"])
    out = fake.run(flow_of(LOOKUP))
    assert out.priority == 2
    assert fake.steps()[0][2] == "known"
    assert [p.file for p in fake.of(Play)] == ["p/choose", "en/hotline/welcome"]


@pytest.mark.parametrize(("failed", "result"), [(False, "unknown"), (True, "failed")])
def test_lookup_unknown_or_failed_fails_open(failed: bool, result: str) -> None:
    fake = Fake(lookup_failed=failed, keys=[""])
    out = fake.run(flow_of(LOOKUP))
    assert out.kind == "queue" and out.queue == "general" and out.priority == 2
    assert fake.steps()[0][2] == result
    assert [p.file for p in fake.of(Play)] == ["p/choose", "zh/hotline/welcome"]  # default zh


def test_lookup_anonymous_caller() -> None:
    fake = Fake(keys=["!1"])
    fake.run(flow_of(LOOKUP), caller=None)
    assert fake.of(Lookup) == []
    assert fake.steps()[0] == ("l", None, "anonymous")


def test_language_invalid_key_uses_default() -> None:
    fake = Fake(keys=["7"])
    fake.run(flow_of(LOOKUP))
    assert fake.steps()[1] == ("lang", "7", "zh")
    assert fake.setvars()["CALLCENTER_LANGUAGE"] == "zh"


def test_language_during_prompt() -> None:
    fake = Fake(keys=["!2"])
    fake.run(flow_of(LOOKUP))
    assert fake.of(WaitDigit) == []
    assert fake.of(Play)[0] == Play("p/choose", "12")
    assert fake.of(Play)[-1].file == "en/hotline/welcome"


def test_customer_language_outside_flow_languages_is_ignored() -> None:
    cust = CustomerInfo(customer_id="C", name="x", language="fr")
    fake = Fake(customer=cust, keys=[""])
    fake.run(flow_of(LOOKUP))
    assert fake.of(Play)[0].file == "p/choose"


@pytest.mark.parametrize("hang", [Lookup, Play, WaitDigit])
def test_hangup_in_lookup_and_language(hang: type) -> None:
    fake = Fake(hangup_on=hang)
    out = fake.run(flow_of(LOOKUP))
    assert out.kind == "caller_hangup"
    expected = "l" if hang is Lookup else "lang"
    assert fake.steps()[-1] == (expected, None, "hangup")


def test_hangup_in_hours() -> None:
    fake = Fake(hangup_on=HoursCheck)
    out = fake.run(
        flow_of(HOURS.format(extra="").replace("  hol: {type: queue, queue: holiday}\n", ""))
    )
    assert out.kind == "caller_hangup"


def test_flow_without_languages_plays_prompts_as_is() -> None:
    fake = Fake()
    fake.run(
        flow_of(
            "start: p\nnodes:\n  p: {type: play, prompt: x/y, next: q}\n"
            "  q: {type: queue, queue: g}\n"
        )
    )
    assert fake.of(Play)[0].file == "x/y"


# ---------------------------------------------------------------------------------------------
# callback

CALLBACK = """
start: cb
nodes:
  cb:
    type: callback
    confirm_prompt: p/your-number
    confirm_menu_prompt: p/confirm
    enter_prompt: p/enter
    done_prompt: p/done
    invalid_prompt: p/bad
    queue: general
    min_digits: 5
    {extra}
"""
FB_NODE = "  fb: {type: queue, queue: fallback}\n"


def test_callback_confirm_caller_number() -> None:
    fake = Fake(keys=["1"])
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller="13912345678")
    assert out.kind == "callback" and out.queue == "general"
    assert fake.of(SayDigits) == [SayDigits("13912345678")]
    assert fake.of(RecordCallback) == [RecordCallback("13912345678", "general", "ivr:test")]
    assert [p.file for p in fake.of(Play)] == ["p/your-number", "p/confirm", "p/done"]
    assert isinstance(fake.commands[-1], Hangup)
    assert ("cb", "13912345678", "requested") in fake.steps()


def test_callback_other_number() -> None:
    fake = Fake(keys=["!2", "02112345678"])
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller="13912345678")
    assert out.kind == "callback"
    assert fake.of(RecordCallback)[0].number == "02112345678"
    assert fake.of(GetData) == [GetData("p/enter", 6000, 15)]


def test_callback_anonymous_enters_number_with_retries() -> None:
    fake = Fake(keys=["12", "", "5551234"])
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller=None)
    assert out.kind == "callback"
    assert fake.of(SayDigits) == []
    assert fake.of(RecordCallback)[0].number == "5551234"
    assert [s[2] for s in fake.steps()][:3] == ["invalid", "timeout", "entered"]


def test_callback_confirm_timeouts_exhaust_to_default_queue() -> None:
    fake = Fake(keys=["", "", ""])
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller="13912345678")
    assert out.kind == "queue" and out.queue == "general"
    assert fake.of(RecordCallback) == []


def test_callback_failure_goes_on_fail() -> None:
    fake = Fake(keys=["9", "9", "9"])
    out = fake.run(flow_of(CALLBACK.format(extra="on_fail: fb") + FB_NODE), caller="13912345678")
    assert out.queue == "fallback"


def test_callback_record_failure_goes_on_fail() -> None:
    fake = Fake(keys=["1"], callback_ok=False)
    out = fake.run(flow_of(CALLBACK.format(extra="on_fail: fb") + FB_NODE), caller="13912345678")
    assert out.queue == "fallback"
    assert ("cb", "13912345678", "record_failed") in fake.steps()
    assert "p/done" not in [p.file for p in fake.of(Play)]


@pytest.mark.parametrize("hang", [Play, SayDigits, WaitDigit, RecordCallback])
def test_callback_hangup(hang: type) -> None:
    fake = Fake(keys=["1"], hangup_on=hang)
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller="13912345678")
    assert out.kind == "caller_hangup"
    assert fake.steps()[-1] == ("cb", None, "hangup")


def test_callback_hangup_while_entering() -> None:
    fake = Fake(keys=[HANG])
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller=None)
    assert out.kind == "caller_hangup"


# ---------------------------------------------------------------------------------------------
# the real hotline flow


def hotline() -> Flow:
    from callcenter.ivr.loader import load_flow

    return load_flow(ROOT / "ivr_flows" / "hotline.yaml")


@pytest.mark.parametrize(
    ("keys", "queue"),
    [
        (["1", "1", "1"], "bookings"),
        (["1", "2"], "complaints"),
        (["1", "3"], "general"),
        (["1", "4", "1"], "technical"),
        (["1", "4", "2"], "technical"),
        (["1", "4", "9", "2"], "complaints"),
        (["1", "0"], "operator"),
        (["1", "1", "0"], "operator"),
        (["1", "*", "2"], "complaints"),
        (["1", "7", "7", "7"], "general"),
        (["1", "", "", ""], "general"),
    ],
)
def test_hotline_routes(keys: list[str], queue: str) -> None:
    # keys: the language choice (1 = zh), then the main menu and its sub-menus.
    fake = Fake(keys=list(keys))
    out = fake.run(hotline())
    assert out.kind == "queue"
    assert out.queue == queue
    assert fake.keys == []


def test_hotline_bookings_with_order_number() -> None:
    fake = Fake(keys=["2", "1", "2", "12345678"])
    out = fake.run(hotline())
    assert out.queue == "bookings"
    assert out.variables["ORDER_NUMBER"] == "12345678"
    assert fake.of(GetData)[0].file == "en/hotline/enter-order-number"
    assert out.path == (
        "lookup",
        "language",
        "hours",
        "main",
        "1",
        "bookings",
        "2",
        "order_number",
        "bookings_queue",
    )


def test_hotline_key_customer_gets_priority() -> None:
    cust = CustomerInfo(customer_id="K1", name="VIP", is_key_customer=True, language="zh")
    fake = Fake(customer=cust, keys=["3"])
    out = fake.run(hotline())
    assert out.queue == "general" and out.priority == 10


def test_hotline_closed_offers_callback() -> None:
    fake = Fake(now=CLOSED_NOW, keys=["1", "1", "1"])
    out = fake.run(hotline(), caller="13912345678")
    assert out.kind == "callback"
    assert "zh/hotline/closed" in [p.file for p in fake.of(Play)]


def test_hotline_holiday_goodbye() -> None:
    fake = Fake(now=HOLIDAY_NOW, keys=["1", "2"])
    out = fake.run(hotline())
    assert out.kind == "hangup"
    assert "zh/hotline/holiday" in [p.file for p in fake.of(Play)]
    assert fake.of(Play)[-1].file == "zh/hotline/goodbye"


def test_hotline_callback_from_main_menu() -> None:
    fake = Fake(keys=["1", "9", "1"])
    out = fake.run(hotline(), caller="13912345678")
    assert out.kind == "callback"


def test_preselected_language_skips_the_question() -> None:
    fake = Fake()
    gen = run_flow(
        flow_of(LOOKUP),
        calendar=CAL,
        caller=None,
        default_queue="general",
        operator_queue="operator",
        language="en",
    )
    reply: Reply = None
    with pytest.raises(StopIteration):
        cmd = next(gen)
        while True:
            reply = fake.answer(cmd)
            cmd = gen.send(reply)
    assert [p.file for p in fake.of(Play)] == ["en/hotline/welcome"]


def test_preselected_language_not_offered_is_ignored() -> None:
    fake = Fake(keys=[""])
    gen = run_flow(
        flow_of(LOOKUP),
        calendar=CAL,
        caller=None,
        default_queue="general",
        operator_queue="operator",
        language="fr",
    )
    with pytest.raises(StopIteration):
        cmd = next(gen)
        while True:
            cmd = gen.send(fake.answer(cmd))
    assert fake.of(Play)[0].file == "p/choose"


def test_callback_says_only_the_digits_of_the_caller_number() -> None:
    fake = Fake(keys=["1"])
    out = fake.run(flow_of(CALLBACK.format(extra="")), caller="+8613912345678")
    assert fake.of(SayDigits) == [SayDigits("8613912345678")]
    assert fake.of(RecordCallback)[0].number == "+8613912345678"
    assert out.kind == "callback"
