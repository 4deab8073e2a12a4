"""The session re-check of open WebSockets (`SessionRecheck`): one loop per hub/service checks
every watched socket each interval with bounded concurrency, a poke checks a user's sockets at
once, a failing check keeps the socket, and an idle socket holds no task of its own."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from users_support import add_user, login, make_app

from callcenter.bus.memory import MemoryBus
from callcenter.console.notifier import SCREEN_POPS
from callcenter.web.hub import SESSION_ENDED, SessionRecheck, WebSocketHub

ALICE = "PJSIP/1001"
HUB = web.AppKey("hub", WebSocketHub)


async def _kept(code: int, reason: bytes) -> None:
    """The close of a socket whose checks never end its session: not called."""


async def _until(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_one_sweep_checks_every_socket_with_bounded_concurrency() -> None:
    recheck = SessionRecheck(interval=0.01, concurrency=3)
    gate = asyncio.Event()
    in_flight = most = 0
    bound_reached = asyncio.Event()
    checked: list[int] = []
    closed: list[tuple[int, int, bytes]] = []
    all_closed = asyncio.Event()

    def socket(n: int) -> None:
        async def check() -> int | None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            if in_flight == 3:
                bound_reached.set()
            await gate.wait()
            in_flight -= 1
            checked.append(n)
            return SESSION_ENDED

        async def close(code: int, reason: bytes) -> None:
            closed.append((n, code, reason))
            if len(closed) == 10:
                all_closed.set()

        recheck.watch(n, check, close)

    for n in range(10):
        socket(n)
    assert recheck.watching == 10
    async with asyncio.timeout(30):
        await bound_reached.wait()
        gate.set()
        await all_closed.wait()
    assert most == 3  # never more checks (database queries) at once than the bound
    assert sorted(checked) == list(range(10))  # each socket checked once, then closed once
    assert sorted(closed) == [(n, SESSION_ENDED, b"session ended") for n in range(10)]
    assert recheck.watching == 0
    await recheck.close()


async def test_a_poke_is_not_held_up_by_a_check_under_way() -> None:
    recheck = SessionRecheck(interval=3600, concurrency=2)  # the stuck check holds one slot
    stuck = asyncio.Event()
    never = asyncio.Event()

    async def slow_check() -> int | None:  # a database that stopped answering
        stuck.set()
        await never.wait()
        return None

    signed_out = False
    closed: list[int] = []
    closed_once = asyncio.Event()

    async def check() -> int | None:
        return SESSION_ENDED if signed_out else None

    async def close(code: int, reason: bytes) -> None:
        closed.append(code)
        closed_once.set()

    recheck.watch(1, slow_check, _kept)
    recheck.watch(2, check, close)
    recheck.poke()  # everyone: one worker stays on user 1's check
    async with asyncio.timeout(30):
        await stuck.wait()
        signed_out = True
        recheck.poke(2)  # user 2 signed out in this process: closed at once all the same
        await closed_once.wait()
        assert closed == [SESSION_ENDED]
        await recheck.close()  # cancels the stuck check


async def test_a_socket_two_checks_find_ended_is_closed_once() -> None:
    recheck = SessionRecheck(interval=3600)
    gate = asyncio.Event()
    started = returned = 0
    both_started = asyncio.Event()
    both_returned = asyncio.Event()

    async def check() -> int | None:
        nonlocal started, returned
        started += 1
        if started == 2:
            both_started.set()
        await gate.wait()
        returned += 1
        if returned == 2:
            both_returned.set()
        return SESSION_ENDED

    closes: list[int] = []
    closing = asyncio.Event()
    done = asyncio.Event()

    async def close(code: int, reason: bytes) -> None:
        closes.append(code)  # noted before the close frame's wait: a second call shows
        await closing.wait()
        done.set()

    recheck.watch(7, check, close)
    recheck.poke(7)
    async with asyncio.timeout(30):
        await _until(lambda: started == 1)
        recheck.poke(7)  # a second sign-out once the first check runs: two checks under way
        await both_started.wait()
        gate.set()
        await both_returned.wait()  # the first close is waiting, the second check is done
        closing.set()
        await done.wait()
    assert closes == [SESSION_ENDED]
    await recheck.close()


async def test_a_new_interval_takes_effect_while_the_loop_sleeps() -> None:
    recheck = SessionRecheck(interval=3600)
    checked = asyncio.Event()

    async def check() -> int | None:
        checked.set()
        return None

    recheck.watch(1, check, _kept)
    await asyncio.sleep(0)  # the loop starts and sleeps for the first interval (an hour)
    recheck.interval = 0.01
    async with asyncio.timeout(30):
        await checked.wait()
    await recheck.close()


async def test_close_cancels_the_checks_under_way() -> None:
    recheck = SessionRecheck(interval=0.01)
    started = asyncio.Event()
    never = asyncio.Event()

    async def check() -> int | None:  # a database that stopped answering
        started.set()
        await never.wait()
        return None

    recheck.watch(1, check, _kept)
    recheck.poke(1)
    async with asyncio.timeout(30):
        await started.wait()
        await recheck.close()  # returns: the stuck checks (poke's and the loop's) cancelled
    late = recheck.watch(2, check, _kept)  # a socket arriving during shutdown
    assert late.ended
    assert recheck.watching == 1


def _hub_app(check: Any, *, interval: float) -> web.Application:
    app = web.Application()
    hub = WebSocketHub(bus=MemoryBus(), channels=("calls",), recheck_interval=interval)
    app[HUB] = hub

    async def handle(request: web.Request) -> web.WebSocketResponse:
        return await hub.handle(request, check=check, user_id=5)

    async def close_hub(app: web.Application) -> None:
        await hub.close()

    app.router.add_get("/ws", handle)
    app.on_shutdown.append(close_hub)
    return app


async def test_a_failing_check_keeps_the_socket_until_a_check_ends_it(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    database_down = True
    failed_thrice = asyncio.Event()

    async def check() -> int | None:
        nonlocal calls
        calls += 1
        if database_down:
            if calls == 3:
                failed_thrice.set()
            raise ConnectionRefusedError("database down")
        return SESSION_ENDED

    app = _hub_app(check, interval=0.01)
    client = await aiohttp_client(app)
    hub = app[HUB]
    caplog.set_level(logging.WARNING, logger="callcenter.web.hub")
    ws = await client.ws_connect("/ws")
    async with asyncio.timeout(30):
        await failed_thrice.wait()  # three periodic checks failed ...
    hub.broadcast("calls", {"n": 1})  # ... and the socket is still open and served
    assert await ws.receive_json(timeout=30) == {"channel": "calls", "payload": {"n": 1}}
    assert "session check(s) failed (database down); keeping those sockets" in caplog.text

    database_down = False  # the database is back: the session turns out to be gone
    msg = await ws.receive(timeout=30)
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == SESSION_ENDED
    await _until(lambda: hub.client_count == 0 and hub.recheck.watching == 0)


async def _bare(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


async def test_an_idle_console_socket_holds_no_task_of_its_own(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    app = make_app(f"sqlite+aiosqlite:///{tmp_path}/callcenter.db", tmp_path)
    app.router.add_get("/bare", _bare)  # a bare aiohttp WebSocket: aiohttp's own tasks only
    client = await aiohttp_client(app)
    app[SCREEN_POPS].recheck_interval = 3600
    await add_user(app, "alice", "agent", agent_interface=ALICE)
    await login(client, "alice")

    bare = [await client.ws_connect("/bare")]  # takes over the sign-in's keep-alive connection
    before = len(asyncio.all_tasks())
    bare += [await client.ws_connect("/bare") for _ in range(4)]
    per_bare = (len(asyncio.all_tasks()) - before) / 4
    assert per_bare > 0
    before = len(asyncio.all_tasks())

    first = await client.ws_connect("/ws/agent")  # starts the re-check loop of the service
    assert (await first.receive_json(timeout=30))["type"] == "hello"
    await _until(lambda: len(asyncio.all_tasks()) - before == per_bare + 1)
    before = len(asyncio.all_tasks())
    tabs = [await client.ws_connect("/ws/agent") for _ in range(4)]
    for tab in tabs:
        assert (await tab.receive_json(timeout=30))["type"] == "hello"
    assert app[SCREEN_POPS].recheck.watching == 5
    # once their hello frames are out, more tabs hold what bare sockets hold: no watcher
    await _until(lambda: len(asyncio.all_tasks()) - before == 4 * per_bare)

    for ws in [first, *tabs, *bare]:
        await ws.close()
    await _until(lambda: app[SCREEN_POPS].recheck.watching == 0)


async def test_a_failing_close_does_not_stop_the_other_checks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recheck = SessionRecheck(interval=3600, concurrency=1)
    closed = asyncio.Event()

    async def ended() -> int | None:
        return SESSION_ENDED

    async def broken_close(code: int, reason: bytes) -> None:
        raise RuntimeError("transport gone")

    async def close(code: int, reason: bytes) -> None:
        closed.set()

    recheck.watch(1, ended, broken_close)
    recheck.watch(2, ended, close)
    recheck.poke()  # one worker: user 1's failing close comes first
    async with asyncio.timeout(30):
        await closed.wait()
    assert "closing a websocket whose session ended failed" in caplog.text
    assert recheck.watching == 0
    await recheck.close()


async def test_a_hung_check_times_out_and_later_sweeps_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recheck = SessionRecheck(interval=0.01, check_timeout=0.05)
    never = asyncio.Event()
    hung_calls = 0
    revoked = False
    closed = asyncio.Event()

    async def hung() -> int | None:  # a query stuck on a row lock: never answers
        nonlocal hung_calls
        hung_calls += 1
        await never.wait()
        return None

    async def check() -> int | None:
        return SESSION_ENDED if revoked else None

    async def close(code: int, reason: bytes) -> None:
        closed.set()

    caplog.set_level(logging.WARNING, logger="callcenter.web.hub")
    recheck.watch(1, hung, _kept)
    recheck.watch(2, check, close)
    async with asyncio.timeout(30):
        await _until(lambda: hung_calls >= 1)
        revoked = True  # revoked by another process while the first check hangs
        await closed.wait()  # a later sweep notices it
        await _until(lambda: hung_calls >= 2)  # the hung one timed out and is checked again
    assert recheck.watching == 1  # a timed-out check keeps its socket
    assert "no answer within 0.05s" in caplog.text
    await recheck.close()


async def test_a_sweep_skips_a_socket_whose_check_is_under_way() -> None:
    recheck = SessionRecheck(interval=0.01, check_timeout=3600)
    never = asyncio.Event()
    hung_calls = 0
    other_calls = 0

    async def hung() -> int | None:
        nonlocal hung_calls
        hung_calls += 1
        await never.wait()
        return None

    async def check() -> int | None:
        nonlocal other_calls
        other_calls += 1
        return None

    recheck.watch(1, hung, _kept)
    recheck.watch(2, check, _kept)
    recheck.poke(1)  # a poke's check of user 1 hangs ...
    async with asyncio.timeout(30):
        await _until(lambda: hung_calls == 1)
        start = other_calls
        await _until(lambda: other_calls >= start + 3)  # ... while sweeps go on without it
    assert hung_calls == 1  # no second check of a socket whose check is still under way
    await recheck.close()


async def test_pokes_and_sweeps_share_the_concurrency_bound() -> None:
    recheck = SessionRecheck(interval=3600, concurrency=2)
    gate = asyncio.Event()
    in_flight = most = done = 0
    bound_reached = asyncio.Event()
    all_done = asyncio.Event()

    async def check() -> int | None:
        nonlocal in_flight, most, done
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            bound_reached.set()
        await gate.wait()
        in_flight -= 1
        done += 1
        if done == 8:
            all_done.set()
        return None

    for user in (7, 8):
        for _ in range(4):  # tabs of one user
            recheck.watch(user, check, _kept)
    recheck.poke(7)
    recheck.poke(8)
    async with asyncio.timeout(30):
        await bound_reached.wait()
        gate.set()
        await all_done.wait()
    assert most == 2  # two pokes, yet never more checks at once than the bound
    await recheck.close()


async def test_a_poke_for_a_user_with_one_pending_is_collapsed() -> None:
    recheck = SessionRecheck(interval=3600, concurrency=1)
    phase = 1
    seen: list[int] = []
    second = asyncio.Event()

    async def check() -> int | None:
        seen.append(phase)
        if phase == 2:
            second.set()
        return None

    recheck.watch(7, check, _kept)
    for _ in range(3):  # three sign-outs in a row before any check started: one check
        recheck.poke(7)
    async with asyncio.timeout(30):
        await _until(lambda: seen)
        phase = 2
        recheck.poke(7)  # after the check started: checked again (it may have read too early)
        await second.wait()
    assert seen == [1, 2]
    await recheck.close()
