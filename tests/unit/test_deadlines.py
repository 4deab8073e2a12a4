"""FixedTimeout: bounded waits sharing one delay behave as asyncio.timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest

from callcenter.deadlines import FixedTimeout


def current() -> asyncio.Task[object]:
    task = asyncio.current_task()
    assert task is not None
    return task


async def test_a_wait_that_ends_in_time_returns_its_result() -> None:
    bound = FixedTimeout(5.0)
    async with bound.bound(current()):
        await asyncio.sleep(0)
    assert bound.pending == 1  # left for the timer, which has not run yet


async def test_a_wait_past_the_deadline_raises_timeout_and_the_task_goes_on() -> None:
    bound = FixedTimeout(0.01)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        async with bound.bound(current()):
            await never
    assert current().cancelling() == 0
    await asyncio.sleep(0)  # not cancelled again
    assert bound.pending == 0


async def test_waits_expire_in_order_and_ended_ones_are_skipped() -> None:
    bound = FixedTimeout(0.02)
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outcomes: dict[str, str] = {}

    async def wait(name: str, until: asyncio.Future[None]) -> None:
        try:
            async with bound.bound(current()):
                await until
        except TimeoutError:
            outcomes[name] = "timeout"
        else:
            outcomes[name] = "done"

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    tasks = [
        asyncio.create_task(wait("early", release)),
        asyncio.create_task(wait("stuck-1", never)),
        asyncio.create_task(wait("stuck-2", never)),
    ]
    await asyncio.sleep(0)
    release.set_result(None)
    await asyncio.gather(*tasks)
    assert outcomes == {"early": "done", "stuck-1": "timeout", "stuck-2": "timeout"}
    assert bound.pending == 0


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    bound = FixedTimeout(5.0)
    entered = asyncio.Event()

    async def wait() -> None:
        async with bound.bound(current()):
            entered.set()
            await asyncio.get_running_loop().create_future()

    task = asyncio.create_task(wait())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_during_an_expired_wait_is_not_swallowed() -> None:
    # as with asyncio.timeout: a cancel request besides the timeout's own stays a cancel
    bound = FixedTimeout(0.01)
    entered = asyncio.Event()

    async def wait() -> None:
        async with bound.bound(current()):
            entered.set()
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                current().cancel()  # a second request while the timeout's is handled
                raise

    task = asyncio.create_task(wait())
    await entered.wait()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_waits_of_one_bound() -> None:
    bound = FixedTimeout(0.01)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        async with bound.bound(current()), bound.bound(current()):
            await never
    assert current().cancelling() == 0


def test_a_new_loop_starts_afresh() -> None:
    bound = FixedTimeout(0.01)

    async def once() -> str:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with bound.bound(current()):
                await never
        except TimeoutError:
            return "timeout"
        return "done"

    async def stranded() -> None:
        # a wait left queued when its loop stops
        async with bound.bound(current()):
            pass

    asyncio.run(stranded())
    assert asyncio.run(once()) == "timeout"
    assert asyncio.run(once()) == "timeout"


def test_one_bound_serves_one_running_loop_at_a_time() -> None:
    bound = FixedTimeout(5.0)

    async def start_elsewhere() -> None:
        async with bound.bound(current()):
            pass

    def in_a_thread() -> BaseException | None:
        # another event loop, in its own thread, while a wait of the first one is active
        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(start_elsewhere())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return errors[0] if errors else None

    async def scenario() -> BaseException | None:
        async with bound.bound(current()):
            return await asyncio.to_thread(in_a_thread)

    error = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and "one event loop at a time" in str(error)
    assert in_a_thread() is None  # the first loop is closed now: the bound moves on


def test_the_delay_is_fixed() -> None:
    bound = FixedTimeout(0.5)
    assert bound.delay == 0.5
    with pytest.raises(AttributeError):
        bound.delay = 1.0  # type: ignore[misc]
