"""The users admin API, the call log's privacy rules (QA sees masked numbers, agents see their
own calls), the OpenAPI document and the browsable docs page of the real app."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from users_support import add_role_users, add_user, login, make_app

from callcenter.calls.model import CallRecord
from callcenter.web.keys import AUDIT, CALL_REPOSITORY

Client = TestClient[Any, Any]


@pytest.fixture
async def client(migrated_db_url: str, tmp_path: Path, aiohttp_client: Any) -> Client:
    c: Client = await aiohttp_client(make_app(migrated_db_url, tmp_path))
    await add_role_users(c.app)
    return c


async def _json(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_admin_manages_users(client: Client) -> None:
    csrf = {"X-CSRF-Token": (await login(client, "admin"))["csrf_token"]}
    created = await _json(
        await client.post(
            "/api/v1/users",
            json={
                "username": "  Wang.Fang ",
                "password": "long-enough-1",
                "role": "agent",
                "display_name": "王芳",
                "group": "bookings",
                "skills": ["product", "all-round"],
                "agent_interface": "PJSIP/1009",
                "language": "en",
            },
            headers=csrf,
        ),
        201,
    )
    assert created["username"] == "wang.fang" and created["skills"] == ["all-round", "product"]
    assert "password" not in str(created) and "hash" not in str(created)

    dup = await client.post(
        "/api/v1/users",
        json={
            "username": "x1",
            "password": "long-enough-1",
            "role": "qa",
            "agent_interface": "PJSIP/1009",
        },
        headers=csrf,
    )
    assert (await _json(dup, 409))["error"]["code"] == "conflict"
    bad = await client.post(
        "/api/v1/users",
        json={"username": "a b", "password": "short", "role": "boss", "group": "sales"},
        headers=csrf,
    )
    assert set((await _json(bad, 422))["error"]["fields"]) == {
        "username",
        "password",
        "role",
        "group",
    }

    page = await _json(await client.get("/api/v1/users", params={"role": "agent"}))
    assert [u["username"] for u in page["items"]] == ["agent", "wang.fang"]
    assert page["total"] == 2
    found = await _json(await client.get("/api/v1/users", params={"q": "FANG"}))
    assert [u["display_name"] for u in found["items"]] == ["王芳"]
    assert (await _json(await client.get("/api/v1/users/999999"), 404))["error"]["code"] == (
        "not_found"
    )

    uid = created["id"]
    changed = await _json(
        await client.patch(
            f"/api/v1/users/{uid}",
            json={"role": "specialist", "group": "complaints", "agent_interface": None},
            headers=csrf,
        )
    )
    assert (changed["role"], changed["group"], changed["agent_interface"]) == (
        "specialist",
        "complaints",
        None,
    )
    nulls = await client.patch(f"/api/v1/users/{uid}", json={"role": None}, headers=csrf)
    assert (await _json(nulls, 422))["error"]["code"] == "validation_failed"
    unknown = await client.patch(f"/api/v1/users/{uid}", json={"password": "x"}, headers=csrf)
    assert "password" in (await _json(unknown, 422))["error"]["fields"]


async def test_supervisor_reads_users_but_cannot_change_them(client: Client) -> None:
    csrf = {"X-CSRF-Token": (await login(client, "supervisor"))["csrf_token"]}
    assert (await client.get("/api/v1/users")).status == 200
    resp = await client.post(
        "/api/v1/users",
        json={"username": "z1", "password": "long-enough", "role": "admin"},
        headers=csrf,
    )
    assert resp.status == 403


async def test_qa_sees_masked_numbers_and_agents_only_their_calls(client: Client) -> None:
    repo = client.app[CALL_REPOSITORY]
    now = datetime.now(UTC)
    for uid, iface, number in (
        ("1.1", "PJSIP/1001", "13812348000"),
        ("1.2", "PJSIP/1002", "13987654321"),
    ):
        await repo.save_call(
            CallRecord(
                uniqueid=uid,
                linkedid=uid,
                channel="PJSIP/trunk-1",
                started_at=now,
                caller_number=number,
                agent_interface=iface,
                agent="x",
                ended_at=now,
            )
        )
    await login(client, "qa")
    calls = await _json(await client.get("/api/v1/calls"))
    assert sorted(c["caller_number"] for c in calls["items"]) == ["138****8000", "139****4321"]
    one = await _json(await client.get("/api/v1/calls/1.1"))
    assert one["caller_number"] == "138****8000"

    await login(client, "agent")  # linked to PJSIP/1001
    mine = await _json(await client.get("/api/v1/calls"))
    assert [c["uniqueid"] for c in mine["items"]] == ["1.1"]
    assert mine["items"][0]["caller_number"] == "13812348000"
    assert (await client.get("/api/v1/calls/1.2")).status == 404
    other = await client.get("/api/v1/calls", params={"agent": "PJSIP/1002"})
    assert (await _json(other, 422))["error"]["fields"] == {"agent": "you see your own calls"}

    await login(client, "specialist")
    assert (await _json(await client.get("/api/v1/calls")))["total"] == 2


async def test_openapi_document_covers_every_api_route(client: Client) -> None:
    doc = await _json(await client.get("/api/openapi.json"))
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    for expected in (
        ("GET", "/api/v1/calls"),
        ("GET", "/api/v1/calls/{uniqueid}"),
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/users"),
        ("PATCH", "/api/v1/users/{user_id}"),
        ("GET", "/api/v1/audit"),
        ("GET", "/healthz"),
    ):
        assert expected in ops
    assert not any(p in ("/", "/ws", "/login", "/api/docs") for _, p in ops)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["cookieAuth"] == {"type": "apiKey", "in": "cookie", "name": "cc_session"}
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    calls = doc["paths"]["/api/v1/calls"]["get"]
    assert {p["name"] for p in calls["parameters"]} >= {"since", "until", "limit", "offset"}
    assert "UserCreate" in doc["components"]["schemas"]


async def test_docs_page_uses_vendored_assets_only(client: Client) -> None:
    page = await client.get("/api/docs")
    html = await page.text()
    assert page.status == 200 and "swagger-ui" in html
    assert "http://" not in html and "https://" not in html
    for asset in (
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/static/vendor/swagger-ui/LICENSE",
        "/static/api-docs.js",
    ):
        resp = await client.get(asset)
        assert resp.status == 200, asset
    init = await (await client.get("/static/api-docs.js")).text()
    assert '"/api/openapi.json"' in init and "validatorUrl: null" in init


async def test_qa_member_of_no_group_keeps_defaults(client: Client) -> None:
    user = await add_user(client.app, "q2", "qa")
    assert user.group is None and user.skills == () and user.language == "zh-CN"


async def test_audit_details_are_made_json_safe_and_bounded(client: Client) -> None:
    audit = client.app[AUDIT]
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await audit.record(
        None,
        "view",
        "customer",
        42,
        {"at": when, "ids": (1, 2), "nested": {"x": {1, 2} and "set"}, "blob": "x" * 10_000},
        ip="10.0.0.1",
        actor_user_id=7,
    )
    entries, total = await audit.list(entity_type="customer", entity_id="42")
    assert total == 1
    entry = entries[0]
    assert entry.actor_user_id == 7 and entry.ip == "10.0.0.1" and entry.action == "view"
    assert entry.details["at"] == str(when) and entry.details["ids"] == [1, 2]
    assert entry.details["nested"] == {"x": "set"}
    assert entry.details.get("truncated") is True and "blob" not in entry.details
