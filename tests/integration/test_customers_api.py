"""The customer archive over HTTP on the real app (SQLite and PostgreSQL): one record per
customer found by any number format, provisional records for unknown callers, completion,
merged history, number masking by role, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tickets_support import Client, Clock, Person, body_of, error_of, make_clocked_app, person

from callcenter.calls.model import CallbackRequest, CallRecord
from callcenter.web.keys import AUDIT, CALL_REPOSITORY, CUSTOMERS, TICKETS


@pytest.fixture
async def client(migrated_db_url: str, tmp_path: Path, aiohttp_client: Any) -> Client:
    c: Client = await aiohttp_client(make_clocked_app(migrated_db_url, tmp_path, Clock()))
    return c


@pytest.fixture
async def people(client: Client) -> dict[str, Person]:
    app = client.app
    return {
        "amy": await person(app, "amy", "agent", agent_interface="PJSIP/1001", group="bookings"),
        "quinn": await person(app, "quinn", "qa"),
        "sam": await person(app, "sam", "supervisor"),
    }


async def test_create_find_by_any_format_and_mask_for_qa(
    client: Client, people: dict[str, Person]
) -> None:
    amy, quinn = people["amy"], people["quinn"]
    created = await body_of(
        await client.post(
            "/api/v1/customers",
            headers=amy.headers,
            json={
                "name": "张敏",
                "numbers": ["0086 137 0013 7002", "021-62345678"],
                "tier": "key",
                "company": "上海远航贸易",
                "credit_grade": "A",
                "contact_user_id": amy.id,
            },
        ),
        201,
    )
    assert created["key_customer"] is True and created["contact_user_id"] == amy.id
    assert [n["normalised"] for n in created["numbers"]] == ["8613700137002", "862162345678"]
    cid = created["id"]
    for form in ("+86 137-0013-7002", "13700137002", "(021) 6234 5678"):
        found = await body_of(
            await client.get(
                "/api/v1/customers/lookup", params={"number": form}, headers=amy.headers
            ),
            200,
        )
        assert found["id"] == cid, form
    masked = await body_of(await client.get(f"/api/v1/customers/{cid}", headers=quinn.headers), 200)
    assert masked["numbers"][0]["raw"] == "008* *** **** 7002"
    assert masked["numbers"][0]["normalised"] == "861******7002"
    full = await body_of(await client.get(f"/api/v1/customers/{cid}", headers=amy.headers), 200)
    assert full["numbers"][0]["normalised"] == "8613700137002"
    # search by name, by number, with filters; totals are exact
    page = await body_of(
        await client.get("/api/v1/customers", params={"q": "13700137002"}, headers=amy.headers), 200
    )
    assert page["total"] == 1 and page["items"][0]["id"] == cid
    page = await body_of(
        await client.get(
            "/api/v1/customers", params={"q": "远航", "tier": "normal"}, headers=amy.headers
        ),
        200,
    )
    assert page["total"] == 0
    # a number belongs to one customer
    err = await error_of(
        await client.post(
            "/api/v1/customers",
            headers=amy.headers,
            json={"name": "someone", "numbers": ["13700137002"]},
        ),
        409,
    )
    assert err["code"] == "number_in_use"
    err = await error_of(
        await client.post(
            "/api/v1/customers", headers=amy.headers, json={"name": "x", "numbers": ["abc"]}
        ),
        422,
    )
    assert "numbers" in err["fields"]
    err = await error_of(
        await client.post(
            "/api/v1/customers", headers=amy.headers, json={"name": "", "tier": "vip"}
        ),
        422,
    )
    assert set(err["fields"]) == {"name", "tier"}
    err = await error_of(
        await client.post(
            "/api/v1/customers", headers=quinn.headers, json={"name": "qa cannot write"}
        ),
        403,
    )
    audit, _ = await client.app[AUDIT].list(entity_type="customer", entity_id=str(cid))
    actions = [(a.action, a.actor_user_id) for a in audit]
    assert ("create", amy.id) in actions and ("view", quinn.id) in actions


async def test_unknown_caller_gets_a_provisional_record_the_agent_completes(
    client: Client, people: dict[str, Person]
) -> None:
    amy, sam = people["amy"], people["sam"]
    first = await body_of(
        await client.post(
            "/api/v1/customers/provisional",
            headers=amy.headers,
            json={"number": "139 0013 9001", "call_uniqueid": "1700000000.3"},
        ),
        201,
    )
    assert first["created"] is True
    customer = first["customer"]
    assert customer["provisional"] is True and customer["name"] == "New caller 139 0013 9001"
    again = await body_of(
        await client.post(
            "/api/v1/customers/provisional", headers=amy.headers, json={"number": "+8613900139001"}
        ),
        200,
    )
    assert again["created"] is False and again["customer"]["id"] == customer["id"]
    err = await error_of(
        await client.post(
            "/api/v1/customers/provisional", headers=amy.headers, json={"number": "anonymous"}
        ),
        422,
    )
    assert "number" in err["fields"]
    page = await body_of(
        await client.get("/api/v1/customers?provisional=true", headers=sam.headers), 200
    )
    assert [c["id"] for c in page["items"]] == [customer["id"]]

    completed = await body_of(
        await client.patch(
            f"/api/v1/customers/{customer['id']}",
            headers=amy.headers,
            json={
                "name": "李秀英",
                "company": "杭州美食坊",
                "do_not_call": True,
                "add_numbers": ["0571-88886666"],
            },
        ),
        200,
    )
    assert completed["provisional"] is False and completed["name"] == "李秀英"
    assert completed["do_not_call"] is True and len(completed["numbers"]) == 2
    timeline = await body_of(
        await client.get(f"/api/v1/customers/{customer['id']}/timeline", headers=sam.headers), 200
    )
    assert [e["action"] for e in timeline] == ["create_provisional", "update"]
    update = timeline[1]
    assert update["actor_user_id"] == amy.id
    assert update["before"]["provisional"] is True and update["after"]["provisional"] is False
    assert update["before"]["name"] == "New caller 139 0013 9001"
    assert update["after"]["numbers"] == ["139 0013 9001", "0571-88886666"]
    err = await error_of(
        await client.patch(
            f"/api/v1/customers/{customer['id']}",
            headers=amy.headers,
            json={"contact_user_id": 9999},
        ),
        422,
    )
    assert err["fields"] == {"contact_user_id": "no such user"}
    # a bad number changes nothing, not even the other fields of the request
    other = await client.app[CUSTOMERS].create(name="someone else", numbers=["13300133010"])
    for extra, status, field in (
        ({"remove_numbers": ["not a number"]}, 422, "remove_numbers.0"),
        ({"add_numbers": ["13900139001", "x"]}, 422, "add_numbers.1"),
        ({"add_numbers": ["133 0013 3010"]}, 409, "add_numbers"),
    ):
        err = await error_of(
            await client.patch(
                f"/api/v1/customers/{customer['id']}",
                headers=amy.headers,
                json={"notes": "should not be saved", **extra},
            ),
            status,
        )
        assert field in err["fields"], err
    unchanged = await client.app[CUSTOMERS].get(customer["id"])
    assert unchanged is not None and unchanged.notes == ""
    assert other.id != customer["id"]
    err = await error_of(
        await client.patch("/api/v1/customers/424242", headers=amy.headers, json={"notes": "x"}),
        404,
    )
    assert err["code"] == "customer_not_found"


async def test_the_service_method_for_the_console(client: Client) -> None:
    repo = client.app[CUSTOMERS]
    made, created = await repo.find_or_create_provisional("+86 186 0018 6007")
    assert created and made.provisional
    found, created = await repo.find_or_create_provisional("18600186007")
    assert not created and found.id == made.id


async def test_history_merges_calls_bookings_complaints_and_callbacks(
    client: Client, people: dict[str, Person]
) -> None:
    amy, quinn = people["amy"], people["quinn"]
    app = client.app
    customer = await app[CUSTOMERS].create(name="王建国", numbers=["13800138000", "010-87654321"])
    base = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    calls = app[CALL_REPOSITORY]
    await calls.save_call(
        CallRecord(
            uniqueid="c-1",
            linkedid="c-1",
            channel="PJSIP/trunk-1",
            started_at=base,
            caller_number="+86 138 0013 8000",
            queue="bookings",
            agent="王芳",
            answered_at=base + timedelta(seconds=9),
            ended_at=base + timedelta(minutes=2),
        )
    )
    await calls.save_call(
        CallRecord(
            uniqueid="c-2",
            linkedid="c-2",
            channel="PJSIP/trunk-2",
            started_at=base + timedelta(days=1),
            caller_number="01087654321",
            queue="complaints",
            abandoned=True,
            ended_at=base + timedelta(days=1, minutes=1),
        )
    )
    await calls.save_call(  # someone else's call
        CallRecord(
            uniqueid="c-3",
            linkedid="c-3",
            channel="PJSIP/trunk-3",
            started_at=base,
            caller_number="13900000000",
        )
    )
    await calls.record_callback(
        CallbackRequest(
            call_uniqueid="c-2", number="010 8765 4321", requested_at=base + timedelta(days=1)
        )
    )
    tickets = app[TICKETS]
    await tickets.create_booking(
        actor_id=amy.id, customer_id=customer.id, item="freight", urgent=True
    )
    await tickets.create_complaint(
        actor_id=amy.id,
        actor_role="agent",
        customer_id=customer.id,
        category="delivery",
        description="late again",
        call_uniqueid="c-2",
    )
    history = await body_of(
        await client.get(f"/api/v1/customers/{customer.id}/history", headers=amy.headers), 200
    )
    kinds = [(i["kind"], i["ref"]) for i in history["items"]]
    assert len(kinds) == 5 and ("call", "c-3") not in kinds
    assert {k for k, _ in kinds} == {"call", "booking", "complaint", "callback"}
    ats = [i["at"] for i in history["items"]]
    assert ats == sorted(ats, reverse=True)
    assert kinds[-1] == ("call", "c-1")
    booking = next(i for i in history["items"] if i["kind"] == "booking")
    assert booking["summary"].startswith("URGENT freight") and booking["status"] == "new"
    masked = await body_of(
        await client.get(f"/api/v1/customers/{customer.id}/history", headers=quinn.headers), 200
    )
    numbers = {i["number"] for i in masked["items"] if i["number"]}
    assert numbers and all("*" in n for n in numbers)
    only_tickets = await body_of(
        await client.get(
            f"/api/v1/customers/{customer.id}/history?calls=false&limit=2", headers=amy.headers
        ),
        200,
    )
    assert len(only_tickets["items"]) == 2
    assert all(i["kind"] != "call" for i in only_tickets["items"])
    err = await error_of(
        await client.get("/api/v1/customers/999/history", headers=amy.headers), 404
    )
    assert err["code"] == "customer_not_found"
