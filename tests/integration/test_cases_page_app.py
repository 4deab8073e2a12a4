"""GET /cases on the real app (SQLite and PostgreSQL): who may open it, the language, the
CSRF token and staff directory in its boot data, and its static files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from users_support import add_role_users, add_user, login, make_app

from callcenter.web.keys import USERS

Client = TestClient[Any, Any]


def boot_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="cases-boot" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


async def test_cases_page_roles_language_and_boot(
    db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client: Client = await aiohttp_client(make_app(db_url, tmp_path))
    users = await add_role_users(client.app)
    gone = await add_user(client.app, "gone", "specialist", display_name="Gone Gao")
    await client.app[USERS].update(gone.id, disabled=True)

    anonymous = await client.get("/cases", allow_redirects=False)
    assert anonymous.status == 303
    assert anonymous.headers["Location"].startswith("/login?next=")

    for role in ("agent", "specialist", "supervisor", "admin"):
        client.session.cookie_jar.clear()
        signed = await login(client, role)
        resp = await client.get("/cases")
        assert resp.status == 200, role
        assert resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-store"
        page = await resp.text()
        boot = boot_of(page)
        assert boot["csrf"] == signed["csrf_token"]
        assert boot["user"]["id"] == users[role].id
        assert boot["user"]["role"] == role
        assert boot["user"]["handler"] is (role in ("supervisor", "admin"))
        staff = {s["id"]: s for s in boot["staff"]}
        assert staff[users["qa"].id]["can_own"] is False
        assert staff[gone.id]["can_own"] is False and staff[gone.id]["name"] == "Gone Gao"
        assert staff[users["specialist"].id]["can_own"] is True
        assert "/static/cases.js" in page and "/static/cases.css" in page

    # QA reviewers read tickets through the API but have no case desk
    client.session.cookie_jar.clear()
    await login(client, "qa")
    refused = await client.get("/cases", allow_redirects=False)
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "forbidden"


async def test_cases_page_follows_the_users_language(
    sqlite_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client: Client = await aiohttp_client(make_app(sqlite_url, tmp_path))
    await add_user(client.app, "wang", "specialist", language="zh-CN", display_name="王芳")
    await add_user(client.app, "emma", "specialist", language="en", display_name="Emma")
    await login(client, "wang")
    page = await (await client.get("/cases")).text()
    assert '<html lang="zh-CN">' in page and "<title>工单台</title>" in page
    assert boot_of(page)["strings"]["take"] == "接手此投诉"
    client.session.cookie_jar.clear()
    await login(client, "emma")
    page = await (await client.get("/cases")).text()
    assert '<html lang="en">' in page and "<title>Case desk</title>" in page
    assert boot_of(page)["timezone"] == "Asia/Shanghai"


async def test_cases_static_files_are_served(
    sqlite_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    client: Client = await aiohttp_client(make_app(sqlite_url, tmp_path))
    for path, kind in (
        ("/static/cases.js", "javascript"),
        ("/static/cases.css", "css"),
        ("/static/i18n/cases.en.json", "json"),
        ("/static/i18n/cases.zh-CN.json", "json"),
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert kind in resp.content_type, (path, resp.content_type)
