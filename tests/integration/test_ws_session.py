"""Open WebSockets follow their session: signing out, a disabled user or a session ended
elsewhere closes /ws/agent (screen-pops) and /ws (live feed) with 4401, and no frame goes out
after that."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from users_support import PASSWORD, add_user, login, make_app

from callcenter.console.notifier import SCREEN_POPS
from callcenter.web.keys import HUB, USERS, WEB_SESSIONS

ALICE = "PJSIP/1001"
SESSION_ENDED = 4401  # the close code of a socket whose session is gone


def _ringing(caller: str) -> dict[str, Any]:
    return {
        "type": "agent.ringing",
        "interface": ALICE,
        "uniqueid": "1700000000.1",
        "caller_number": caller,
        "caller_name": "VIP customer",
    }


async def _closed_with(ws: ClientWebSocketResponse) -> int | None:
    """Reads until the server closes the socket; the frames before it must not be pops."""
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code
        assert msg.type is WSMsgType.TEXT
        assert json.loads(msg.data).get("type") != "pop"


async def _client(db_url: str, tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(make_app(db_url, tmp_path))
    return client


async def test_sign_out_closes_the_agents_socket_at_once(
    db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client = await _client(db_url, tmp_path, aiohttp_client)
    app = client.app
    app[SCREEN_POPS].recheck_interval = 3600  # no timer: only the sign-out can wake the check
    await add_user(app, "alice", "agent", agent_interface=ALICE)
    body = await login(client, "alice")
    ws = await client.ws_connect("/ws/agent")
    hello = json.loads((await ws.receive(timeout=30)).data)
    assert hello["type"] == "hello"

    resp = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert resp.status in (200, 204)
    assert await _closed_with(ws) == SESSION_ENDED
    app[SCREEN_POPS].feed(_ringing("13800138000"))
    assert app[SCREEN_POPS].connection_count == 0
    await app[SCREEN_POPS].drain()  # its archive lookup ends before the app stops


async def test_disabling_a_user_closes_their_live_feed_at_once(
    db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client = await _client(db_url, tmp_path, aiohttp_client)
    app = client.app
    app[HUB].recheck_interval = 3600  # no timer: only the admin's change can wake the check
    sup = await add_user(app, "sup", "supervisor")
    await add_user(app, "root", "admin")
    mine = await app[WEB_SESSIONS].create(sup.id, ip="127.0.0.1", user_agent="test")
    ws = await client.ws_connect("/ws", headers={"Cookie": f"cc_session={mine.cookie}"})
    admin = await login(client, "root")

    resp = await client.patch(
        f"/api/v1/users/{sup.id}",
        json={"disabled": True},
        headers={"X-CSRF-Token": admin["csrf_token"]},
    )
    assert resp.status == 200, await resp.text()
    assert await _closed_with(ws) == SESSION_ENDED
    assert app[HUB].client_count == 0


async def test_a_session_ended_by_another_process_is_noticed_by_the_timer(
    db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client = await _client(db_url, tmp_path, aiohttp_client)
    app = client.app
    app[HUB].recheck_interval = 0.05
    app[SCREEN_POPS].recheck_interval = 0.05
    alice = await add_user(app, "alice", "agent", agent_interface=ALICE)
    sup = await add_user(app, "sup", "supervisor")
    agent_session = await app[WEB_SESSIONS].create(alice.id, ip="127.0.0.1", user_agent="t")
    sup_session = await app[WEB_SESSIONS].create(sup.id, ip="127.0.0.1", user_agent="t")
    pops = await client.ws_connect(
        "/ws/agent", headers={"Cookie": f"cc_session={agent_session.cookie}"}
    )
    assert json.loads((await pops.receive(timeout=30)).data)["type"] == "hello"
    feed = await client.ws_connect("/ws", headers={"Cookie": f"cc_session={sup_session.cookie}"})

    # straight to the database, as a sign-out or an admin in another server process would
    await app[USERS].update(alice.id, disabled=True)
    await app[WEB_SESSIONS].delete(sup_session.session_id)
    # both read at once, as browsers do: a close frame left unread while the server closes
    # the connection (the two close independently) is seen as 1006 by aiohttp's client
    closed = await asyncio.gather(_closed_with(pops), _closed_with(feed))
    assert list(closed) == [SESSION_ENDED, SESSION_ENDED]
    app[SCREEN_POPS].feed(_ringing("13800138000"))
    assert app[SCREEN_POPS].connection_count == 0
    await app[SCREEN_POPS].drain()  # its archive lookup ends before the app stops


async def test_a_live_session_keeps_its_socket(
    db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client = await _client(db_url, tmp_path, aiohttp_client)
    app = client.app
    app[SCREEN_POPS].recheck_interval = 0.01
    await add_user(app, "alice", "agent", agent_interface=ALICE, password=PASSWORD)
    await login(client, "alice")
    ws = await client.ws_connect("/ws/agent")
    assert json.loads((await ws.receive(timeout=30)).data)["type"] == "hello"
    for _ in range(3):  # several checks pass: other users' sign-outs do not touch this socket
        app[SCREEN_POPS].recheck.poke()
        app[SCREEN_POPS].feed(_ringing("13800138000"))
        frame = json.loads((await ws.receive(timeout=30)).data)
        assert frame["type"] in ("pop", "pop.update")
        assert frame["pop"]["caller_number"] == "13800138000"
    await app[SCREEN_POPS].drain()
    await ws.close()
