"""A caller hanging up during a prompt, against the emulator's res_agi (callcenter.pbxsim): the
prompt's reply ``200 result=-1 endpos=N`` comes before the HANGUP line, as in Asterisk."""

from __future__ import annotations

import logging

import pytest
from ivr_support import Recorder, hotline

from callcenter.pbxsim.agi_client import AgiCallResult, run_agi_call
from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.pbx import RealClock

PROMPT = 'STREAM FILE zh/hotline/please-hold ""'


async def call(recorder: Recorder, hangup_during: int | None = None) -> AgiCallResult:
    async with hotline(recorder=recorder, lookup_timeout=0.5) as (server, _):
        caller = CallerModel(
            number="13800001234",
            keys=(KeyPlan("1", delay=0.01), KeyPlan("3", delay=0.01)),
            ivr_hangup=None if hangup_during is None else IvrHangup(hangup_during, after=0.1),
        )
        return await run_agi_call(
            host="127.0.0.1", port=server.port, caller=caller, clock=RealClock(speed=100_000.0)
        )


async def test_hangup_during_the_last_prompt_is_not_routed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routed = await call(Recorder())
    assert routed.variables["IVR_QUEUE"] == "general"
    index = routed.commands.index(PROMPT)

    recorder = Recorder()
    caplog.set_level(logging.WARNING, logger="callcenter.ivr.runner")
    result = await call(recorder, hangup_during=index)
    assert result.status == "HANGUP"
    assert result.commands[index:] == [PROMPT, "CHANNEL STATUS"]
    assert result.replies[index + 1].startswith("511 ")
    assert "IVR_QUEUE" not in result.variables
    assert [(s.node, s.result) for s in recorder.steps][-1] == ("general_queue", "hangup")
    assert not [r for r in caplog.records if "playback failed" in r.getMessage()]
