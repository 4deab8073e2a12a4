"""A cancellation that arrives in the same loop iteration as the reply is not lost.

`AmiClient.close()` cancels the supervisor, which cancels the Ping watchdog and the resync and
waits for them; a watchdog that swallowed its cancellation (Python 3.11's `asyncio.wait_for`
returns the result when the awaited future is already done) would go on pinging, and close()
would wait for it forever."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from callcenter.asterisk.ami import AmiClient, build_action
from callcenter.asterisk.errors import AmiTimeout
from callcenter.asterisk.message import AmiMessage


class _Proto:
    """The part of the AMI protocol `_roundtrip` uses: one reply future per action."""

    def __init__(self) -> None:
        self.holds = 0
        self.held = False
        self.closed = False
        self.reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.forgotten: list[str] = []

    def send_action(self, act: Any, *, as_list: bool | None) -> asyncio.Future[Any]:
        return self.reply

    def forget(self, act: Any) -> None:
        self.forgotten.append(act["action"])


async def _ignore(msg: AmiMessage) -> None:
    return None


def _pong() -> SimpleNamespace:
    """What the protocol resolves a reply future with: the frame, its message as `.ami`."""
    return SimpleNamespace(ami=AmiMessage([("Response", "Success"), ("Ping", "Pong")]))


@pytest.mark.parametrize("patient", [False, True])
async def test_a_cancel_arriving_with_the_reply_cancels_the_roundtrip(patient: bool) -> None:
    client = AmiClient(host="127.0.0.1", port=5038, username="u", secret="s", on_message=_ignore)
    proto = _Proto()
    task = asyncio.create_task(
        client._roundtrip(
            proto,  # type: ignore[arg-type]
            build_action("Ping", []),
            as_list=False,
            limit=5.0,
            patient=patient,
        )
    )
    await asyncio.sleep(0)  # the task now waits for the reply
    proto.reply.set_result(_pong())
    task.cancel()  # in the same iteration: both are pending for the task's next step
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_reply_still_returns_and_a_timeout_still_times_out() -> None:
    client = AmiClient(host="127.0.0.1", port=5038, username="u", secret="s", on_message=_ignore)
    proto = _Proto()
    proto.reply.set_result(_pong())
    reply = await client._roundtrip(
        proto,  # type: ignore[arg-type]
        build_action("Ping", []),
        as_list=False,
        limit=5.0,
    )
    assert isinstance(reply, AmiMessage) and reply.get("Ping") == "Pong"
    late = _Proto()
    with pytest.raises(AmiTimeout, match="no reply to AMI action Ping within"):
        await client._roundtrip(
            late,  # type: ignore[arg-type]
            build_action("Ping", []),
            as_list=False,
            limit=0.01,
        )
    assert late.forgotten == ["Ping"] and late.reply.cancelled()
