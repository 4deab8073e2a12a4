"""RedisBus failure behaviour against real redis-server processes (a private one per test where
the test stops and restarts it, so the shared test server is never disturbed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from callcenter.bus import keys
from callcenter.bus.base import Payload
from callcenter.bus.redis import RedisBus, RedisSubscription

pytestmark = pytest.mark.redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A throwaway redis-server on 127.0.0.1, stoppable and restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = sync_redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except sync_redis.ConnectionError:
                    if self.proc.poll() is not None:
                        break
                    time.sleep(0.025)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("redis-server is not installed but CI=true")
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def next_item(messages: AsyncIterator[tuple[str, Payload]]) -> tuple[str, Payload]:
    async with asyncio.timeout(20):  # a hang guard, not a timing assertion
        return await anext(messages)


async def test_publish_to_unreachable_redis_does_not_raise() -> None:
    bus = RedisBus(url=f"redis://127.0.0.1:{free_port()}/0", retry_interval=0.0)
    try:
        await bus.publish(keys.CALLS, {"n": 1})
        await bus.publish(keys.CALLS, {"n": 2})
        assert bus.publish_failures == 2
        assert bus.published == 0
        assert await bus.ping() is False
    finally:
        await bus.close()


async def test_publish_recovers_after_redis_restart(redis_process: RedisProcess) -> None:
    bus = RedisBus(url=redis_process.url, retry_interval=0.0)
    try:
        await bus.publish(keys.CALLS, {"n": 1})
        assert bus.published == 1
        redis_process.stop()
        await bus.publish(keys.CALLS, {"n": 2})  # dropped, logged, no exception
        assert bus.publish_failures == 1
        redis_process.start()
        await bus.publish(keys.CALLS, {"n": 3})
        assert bus.published == 2
    finally:
        await bus.close()


async def test_subscriber_survives_a_redis_restart(redis_process: RedisProcess) -> None:
    bus = RedisBus(
        url=redis_process.url, retry_interval=0.02, max_retry_interval=0.1, poll_interval=0.1
    )
    try:
        async with bus.subscribe(keys.CALLS) as messages:
            await bus.publish(keys.CALLS, {"n": "before"})
            assert await next_item(messages) == (keys.CALLS, {"n": "before"})

            redis_process.stop()
            reader = asyncio.create_task(next_item(messages))
            # the reader notices the broken connection and keeps retrying; Redis comes back
            await asyncio.sleep(0)
            redis_process.start()
            assert isinstance(messages, RedisSubscription)
            async with asyncio.timeout(20):
                await messages.wait_connected(reconnects=1)
            await bus.publish(keys.CALLS, {"n": "after"})
            assert await reader == (keys.CALLS, {"n": "after"})
            assert messages.reconnects >= 1
    finally:
        await bus.close()


async def test_subscribe_while_redis_is_down_starts_delivering_once_it_is_up(
    redis_process: RedisProcess,
) -> None:
    redis_process.stop()
    bus = RedisBus(
        url=redis_process.url, retry_interval=0.02, max_retry_interval=0.1, poll_interval=0.1
    )
    try:
        async with bus.subscribe(keys.AGENTS) as messages:
            assert isinstance(messages, RedisSubscription)
            assert not messages.connected
            reader = asyncio.create_task(next_item(messages))
            redis_process.start()
            async with asyncio.timeout(20):
                await messages.wait_connected()
            await bus.publish(keys.AGENTS, {"agent": "PJSIP/1001"})
            assert await reader == (keys.AGENTS, {"agent": "PJSIP/1001"})
    finally:
        await bus.close()


async def test_malformed_messages_on_the_channel_are_skipped(
    redis_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(url=redis_url, prefix=redis_prefix)
    try:
        async with bus.subscribe(keys.CALLS) as messages:
            assert isinstance(messages, RedisSubscription)
            raw = bus.client
            await raw.publish(keys.key(keys.CALLS, prefix=redis_prefix), b"not json \xff")
            await raw.publish(keys.key(keys.CALLS, prefix=redis_prefix), "[1, 2]")
            await bus.publish(keys.CALLS, {"ok": True})
            assert await next_item(messages) == (keys.CALLS, {"ok": True})
            assert messages.malformed == 2
    finally:
        await bus.close()


async def test_prefixes_keep_installations_apart(redis_url: str, redis_prefix: str) -> None:
    ours = RedisBus(url=redis_url, prefix=redis_prefix + "a:")
    theirs = RedisBus(url=redis_url, prefix=redis_prefix + "b:")
    try:
        async with ours.subscribe(keys.CALLS) as messages:
            await theirs.publish(keys.CALLS, {"from": "b"})
            await ours.publish(keys.CALLS, {"from": "a"})
            assert await next_item(messages) == (keys.CALLS, {"from": "a"})
    finally:
        await ours.close()
        await theirs.close()


async def test_a_burst_of_publishes_shares_a_bounded_pool(
    redis_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(url=redis_url, prefix=redis_prefix, publish_connections=2)
    try:
        async with bus.subscribe(keys.CALLS) as messages:
            await asyncio.gather(*(bus.publish(keys.CALLS, {"n": i}) for i in range(200)))
            assert bus.published == 200 and bus.publish_failures == 0
            got = [await next_item(messages) for _ in range(200)]
        assert sorted(p["n"] for _, p in got) == list(range(200))
    finally:
        await bus.close()
