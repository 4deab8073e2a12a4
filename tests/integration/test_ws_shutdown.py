"""Server shutdown (what `callcenter serve` does on SIGTERM) is not held up by a WebSocket
client that stopped reading: its close is bounded, then its connection is aborted, and the
cleanup contexts behind the sockets (AMI/AGI stop, database flush) still run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from test_web_hub import _stuck_client, _until_peer_gone
from users_support import add_user, make_app

from callcenter.web.keys import HUB, WEB_SESSIONS


async def test_shutdown_finishes_despite_a_client_that_stopped_reading(tmp_path: Path) -> None:
    app = make_app(f"sqlite+aiosqlite:///{tmp_path}/callcenter.db", tmp_path)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sup = await add_user(app, "sup", "supervisor")
    session = await app[WEB_SESSIONS].create(sup.id, ip="127.0.0.1", user_agent="test")
    hub = app[HUB]
    stuck = _stuck_client(port, "/ws", session.cookie)
    try:
        for _ in range(3000):  # the handshake reaches the hub
            if hub.client_count == 1:
                break
            await asyncio.sleep(0.01)
        note = "x" * 65536
        sent = 0
        # until the hub drops it as too slow (kernel buffers and its outbox full)
        while hub.client_count == 1 and sent < 2000:
            hub.broadcast("calls", {"note": note, "i": sent})
            sent += 1
            await asyncio.sleep(0)
        assert hub.client_count == 0

        # on_shutdown closes the sockets, then every cleanup context exits (database last); it
        # used to hang in on_shutdown until SIGKILL
        async with asyncio.timeout(60):
            await runner.cleanup()
            await _until_peer_gone(stuck)  # the stuck connection was aborted
    finally:
        stuck.close()
