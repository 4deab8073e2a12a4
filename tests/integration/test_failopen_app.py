"""Telephony fails open: the whole app (create_app + the emulator over real AMI/FastAGI sockets)
starts and routes callers while PostgreSQL is refused (through a TCP proxy we control) or Redis
is not there; /healthz says why, the API answers 503 `database_unavailable`; once the database
is reachable the migrations run, the call finished during the outage reaches the call log and
everything works again. A database lost at run time is held and caught up the same way, and
what a server stopped during the outage held is written at its next start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from failopen_support import SwitchProxy, call, closed_port, make_app, settings_for
from sqlalchemy import text
from sqlalchemy.engine import make_url

from callcenter.app import CALL_LOG, DATABASE, IVR_RECORDER
from callcenter.db.engine import create_engine
from callcenter.db.migrate import head_revision
from callcenter.pbxsim.emulator import Emulator
from callcenter.web.keys import USERS, WEB_SESSIONS

pytestmark = pytest.mark.postgres


async def _db_rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[SwitchProxy]:
    target = make_url(pg_url)
    p = SwitchProxy((target.host or "127.0.0.1", target.port or 5432))
    try:
        yield p
    finally:
        await p.close()


def _through(proxy: SwitchProxy, pg_url: str) -> str:
    """The PostgreSQL URL that goes through `proxy`."""
    return (
        make_url(pg_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )


async def _health(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/healthz")
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def test_starts_routes_and_catches_up_when_postgres_was_down(
    pg_url: str, proxy: SwitchProxy, tmp_path: Path, aiohttp_client: Any
) -> None:
    via_proxy = _through(proxy, pg_url)
    emulators: list[Emulator] = []
    app = make_app(settings_for(via_proxy, tmp_path), emulators)
    client = await aiohttp_client(app)  # starts although PostgreSQL refuses
    database = app[DATABASE]
    assert not database.available

    status, body = await _health(client)
    assert status == 503
    db = body["components"]["db"]
    assert db["ok"] is False and "ConnectionRefusedError" in db["detail"], db
    assert body["components"]["ami"]["ok"] is True  # AMI tracking goes on

    resp = await client.get("/api/v1/calls", headers={"Authorization": "Bearer anything"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "database_unavailable"
    assert resp.headers["Retry-After"].isdigit()
    page = await client.get("/", headers={"Cookie": "cc_session=x", "Accept": "text/html"})
    assert page.status == 503 and page.content_type == "text/html"
    assert "Database unavailable" in await page.text()

    # the IVR answers; the lookup fails open (unknown caller: language menu, then 2 complaints)
    summary = await call(app, emulators[0], "13800138000", "1", "2")
    assert summary.agi_status == "SUCCESS", summary
    assert summary.ivr_queue == "complaints", summary
    assert summary.outcome == "answered", summary
    assert app[CALL_LOG].held >= 1  # finished during the outage, kept
    assert app[IVR_RECORDER].held >= 1

    await proxy.open()
    async with asyncio.timeout(30):
        await database.wait_until_ready()
    assert app[CALL_LOG].held == 0 and app[IVR_RECORDER].held == 0

    rows = await _db_rows(pg_url, "SELECT version_num FROM alembic_version")
    assert [r[0] for r in rows] == [head_revision()]
    rows = await _db_rows(
        pg_url,
        "SELECT queue, agent FROM calls WHERE uniqueid = :u",
        u=summary.uniqueid,
    )
    assert rows and rows[0][0] == "complaints" and rows[0][1], rows
    rows = await _db_rows(
        pg_url,
        "SELECT node FROM ivr_steps WHERE call_uniqueid = :u ORDER BY seq",
        u=summary.uniqueid,
    )
    assert [r[0] for r in rows][-2:] == ["main", "complaints_queue"], rows  # the path, kept

    status, body = await _health(client)
    assert body["components"]["db"] == {"ok": True, "detail": "postgresql"}, body
    assert status == 200, body

    # sign-in and the call log work again through the same app
    user = await app[USERS].create(
        username="sup", password="correct horse battery", role="supervisor"
    )
    new = await app[WEB_SESSIONS].create(user.id, ip="127.0.0.1", user_agent="test")
    resp = await client.get(
        f"/api/v1/calls/{summary.uniqueid}", headers={"Cookie": f"cc_session={new.cookie}"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["queue"] == "complaints"


async def test_a_database_lost_at_run_time_is_retried_and_nothing_is_lost(
    pg_url: str, proxy: SwitchProxy, tmp_path: Path, aiohttp_client: Any
) -> None:
    via_proxy = _through(proxy, pg_url)
    await proxy.open()
    emulators: list[Emulator] = []
    app = make_app(settings_for(via_proxy, tmp_path), emulators)
    client = await aiohttp_client(app)
    database = app[DATABASE]
    assert database.available

    proxy.cut()  # PostgreSQL goes away under us
    summary = await call(app, emulators[0], "13900139000", "1", "4", "1")
    assert summary.ivr_queue == "technical", summary
    status, body = await _health(client)
    assert status == 503 and body["components"]["db"]["ok"] is False, body
    assert not database.available and database.outages == 1
    assert app[CALL_LOG].held >= 1

    await proxy.open()
    async with asyncio.timeout(30):
        await database.wait_until_ready()
    rows = await _db_rows(pg_url, "SELECT queue FROM calls WHERE uniqueid = :u", u=summary.uniqueid)
    assert [r[0] for r in rows] == ["technical"]
    assert (await _health(client))[0] == 200


async def test_records_held_when_the_server_stops_are_written_at_the_next_start(
    pg_url: str, proxy: SwitchProxy, tmp_path: Path, aiohttp_client: Any
) -> None:
    via_proxy = _through(proxy, pg_url)
    emulators: list[Emulator] = []
    app = make_app(settings_for(via_proxy, tmp_path), emulators)
    client = await aiohttp_client(app)  # PostgreSQL refused all along
    summary = await call(app, emulators[0], "13700137000", "1", "3")
    assert summary.ivr_queue == "general", summary
    assert app[CALL_LOG].held >= 1 and app[IVR_RECORDER].held >= 1
    await client.close()  # stopped during the outage
    spool = tmp_path / "data" / "spool"
    assert (spool / "call_log.jsonl").exists() and (spool / "ivr_steps.jsonl").exists()

    await proxy.open()
    emulators.clear()
    app = make_app(settings_for(via_proxy, tmp_path), emulators)
    await aiohttp_client(app)
    async with asyncio.timeout(30):
        await app[DATABASE].wait_until_ready()
    rows = await _db_rows(pg_url, "SELECT queue FROM calls WHERE uniqueid = :u", u=summary.uniqueid)
    assert [r[0] for r in rows] == ["general"]
    rows = await _db_rows(
        pg_url,
        "SELECT node FROM ivr_steps WHERE call_uniqueid = :u ORDER BY seq",
        u=summary.uniqueid,
    )
    assert [r[0] for r in rows][-2:] == ["main", "general_queue"], rows
    assert not (spool / "call_log.jsonl").exists() and not (spool / "ivr_steps.jsonl").exists()


async def test_starts_and_routes_when_redis_is_not_there(
    sqlite_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    settings = settings_for(sqlite_url, tmp_path, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    emulators: list[Emulator] = []
    app: web.Application = make_app(settings, emulators)
    client = await aiohttp_client(app)
    summary = await call(app, emulators[0], "13700137000", "1", "1", "1")
    assert summary.agi_status == "SUCCESS" and summary.ivr_queue == "bookings", summary
    status, body = await _health(client)
    assert status == 503
    assert body["components"]["bus"] == {"ok": False, "detail": "redis unreachable"}
    assert body["components"]["db"]["ok"] is True
    rows = await _db_rows(
        sqlite_url, "SELECT queue FROM calls WHERE uniqueid = :u", u=summary.uniqueid
    )
    assert [r[0] for r in rows] == ["bookings"]
