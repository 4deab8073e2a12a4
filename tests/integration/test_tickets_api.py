"""Bookings, complaints (first-contact ownership, handover, status machine, deadlines, breach
notification, timeline), dispositions and statistics over HTTP on the real app, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tickets_support import (
    Client,
    Clock,
    Person,
    body_of,
    error_of,
    make_clocked_app,
    person,
)

from callcenter.app import BUS
from callcenter.calls.model import CallRecord
from callcenter.tickets.notifier import TICKETS as TICKETS_CHANNEL
from callcenter.tickets.notifier import BreachChecker
from callcenter.web.keys import AUDIT, CALL_REPOSITORY, CUSTOMERS, TICKET_NOTIFIER, TICKETS


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(migrated_db_url: str, tmp_path: Path, aiohttp_client: Any, clock: Clock) -> Client:
    c: Client = await aiohttp_client(make_clocked_app(migrated_db_url, tmp_path, clock))
    return c


@pytest.fixture
async def people(client: Client) -> dict[str, Person]:
    app = client.app
    return {
        "amy": await person(app, "amy", "agent", agent_interface="PJSIP/1001", group="bookings"),
        "bob": await person(app, "bob", "agent", agent_interface="PJSIP/1002", group="bookings"),
        "carl": await person(app, "carl", "agent", agent_interface="PJSIP/1007", group="technical"),
        "sue": await person(
            app, "sue", "specialist", agent_interface="PJSIP/1003", group="complaints"
        ),
        "quinn": await person(app, "quinn", "qa"),
        "sam": await person(app, "sam", "supervisor"),
        "ada": await person(app, "ada", "admin"),
    }


@pytest.fixture
async def customer_id(client: Client) -> int:
    customer = await client.app[CUSTOMERS].create(name="王建国", numbers=["+86 138-0013-8000"])
    return int(customer.id)


# ------------------------------------------------------------------------------ bookings


async def test_booking_lifecycle_with_timeline(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    amy = people["amy"]
    created = await body_of(
        await client.post(
            "/api/v1/bookings",
            headers=amy.headers,
            json={
                "customer_id": customer_id,
                "item": "2 tickets Shanghai-Beijing",
                "scheduled_for": "2026-12-05T09:30:00+08:00",
                "for_whom": "王建国 + 1",
                "urgent": True,
                "call_uniqueid": "1700000000.1",
            },
        ),
        201,
    )
    assert created["status"] == "new" and created["urgent"] is True
    assert created["created_by"] == amy.id and created["call_uniqueid"] == "1700000000.1"
    assert created["scheduled_for"].startswith("2026-12-05T01:30:00")  # stored in UTC
    bid = created["id"]

    confirmed = await body_of(
        await client.post(
            f"/api/v1/bookings/{bid}/status",
            headers=amy.headers,
            json={"status": "confirmed", "note": "seats held"},
        ),
        200,
    )
    assert confirmed["status"] == "confirmed"
    # new -> fulfilled skipped confirmed earlier; confirmed -> new is never allowed
    err = await error_of(
        await client.post(
            f"/api/v1/bookings/{bid}/status", headers=amy.headers, json={"status": "new"}
        ),
        409,
    )
    assert err["code"] == "invalid_transition"
    await body_of(
        await client.post(
            f"/api/v1/bookings/{bid}/status", headers=amy.headers, json={"status": "fulfilled"}
        ),
        200,
    )
    err = await error_of(
        await client.post(
            f"/api/v1/bookings/{bid}/status", headers=amy.headers, json={"status": "cancelled"}
        ),
        409,
    )
    assert err["code"] == "invalid_transition"
    err = await error_of(
        await client.patch(f"/api/v1/bookings/{bid}", headers=amy.headers, json={"item": "x"}),
        409,
    )
    assert err["code"] == "booking_final"

    timeline = await body_of(
        await client.get(f"/api/v1/bookings/{bid}/timeline", headers=amy.headers), 200
    )
    assert [e["action"] for e in timeline] == ["create", "confirmed", "fulfilled"]
    assert all(e["actor_user_id"] == amy.id for e in timeline)
    assert timeline[1]["before"] == {"status": "new"}
    assert timeline[1]["after"] == {"status": "confirmed"}
    assert timeline[1]["note"] == "seats held"
    assert timeline[0]["after"]["item"] == "2 tickets Shanghai-Beijing"


async def test_booking_update_records_before_and_after(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    amy = people["amy"]
    b = await body_of(
        await client.post(
            "/api/v1/bookings", headers=amy.headers, json={"customer_id": customer_id, "item": "a"}
        ),
        201,
    )
    updated = await body_of(
        await client.patch(
            f"/api/v1/bookings/{b['id']}",
            headers=amy.headers,
            json={"item": "b", "urgent": True},
        ),
        200,
    )
    assert updated["item"] == "b" and updated["urgent"] is True
    timeline = await body_of(
        await client.get(f"/api/v1/bookings/{b['id']}/timeline", headers=amy.headers), 200
    )
    assert timeline[-1]["action"] == "update"
    assert timeline[-1]["before"] == {"item": "a", "urgent": False}
    assert timeline[-1]["after"] == {"item": "b", "urgent": True}


async def test_invalid_input_gets_field_messages(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    amy = people["amy"]
    err = await error_of(
        await client.post(
            "/api/v1/bookings",
            headers=amy.headers,
            json={"customer_id": customer_id, "item": "", "scheduled_for": "2026-12-05T09:30"},
        ),
        422,
    )
    assert err["code"] == "validation_failed"
    assert set(err["fields"]) == {"item", "scheduled_for"}
    err = await error_of(
        await client.post(
            "/api/v1/bookings", headers=amy.headers, json={"customer_id": 999999, "item": "x"}
        ),
        422,
    )
    assert err["fields"] == {"customer_id": "no such customer"}
    err = await error_of(
        await client.post(
            "/api/v1/complaints",
            headers=amy.headers,
            json={"customer_id": customer_id, "category": "delivery", "severity": "urgent"},
        ),
        422,
    )
    assert set(err["fields"]) == {"severity", "description"}
    err = await error_of(
        await client.post(
            "/api/v1/bookings/1/status", headers=amy.headers, json={"status": "done"}
        ),
        422,
    )
    assert "status" in err["fields"]
    err = await error_of(
        await client.get("/api/v1/complaints?limit=0&status=nope", headers=amy.headers), 422
    )
    assert set(err["fields"]) == {"limit", "status.0"}
    err = await error_of(await client.get("/api/v1/bookings/abc", headers=amy.headers), 422)
    assert "booking_id" in err["fields"]
    # what PostgreSQL could not store is refused up front: NUL characters, ids over 32 bits
    err = await error_of(
        await client.post(
            "/api/v1/complaints",
            headers=amy.headers,
            json={"customer_id": 2**31, "category": "a\x00b", "description": "d"},
        ),
        422,
    )
    assert set(err["fields"]) == {"customer_id", "category"}
    assert "NUL" in err["fields"]["category"]
    err = await error_of(await client.get("/api/v1/complaints?q=%00", headers=amy.headers), 422)
    assert set(err["fields"]) == {"q"}
    err = await error_of(
        await client.get("/api/v1/calls/a%00b/disposition", headers=amy.headers), 422
    )
    assert set(err["fields"]) == {"uniqueid"}


async def test_bookings_visible_to_own_group_only_for_agents(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    amy, bob, carl = people["amy"], people["bob"], people["carl"]
    ids = []
    for who in (amy, bob, carl):
        b = await body_of(
            await client.post(
                "/api/v1/bookings",
                headers=who.headers,
                json={"customer_id": customer_id, "item": f"by {who.user.username}"},
            ),
            201,
        )
        ids.append(b["id"])

    async def listed(who: Person, query: str = "") -> list[int]:
        page = await body_of(await client.get(f"/api/v1/bookings{query}", headers=who.headers), 200)
        return [b["id"] for b in page["items"]]

    assert await listed(amy) == [ids[1], ids[0]]  # amy + bob (both "bookings"), newest first
    assert await listed(carl) == [ids[2]]
    assert await listed(people["quinn"]) == ids[::-1]
    assert await listed(people["sam"], f"?created_by={amy.id}") == [ids[0]]
    assert (
        await error_of(await client.get(f"/api/v1/bookings/{ids[0]}", headers=carl.headers), 404)
    )["code"] == "booking_not_found"
    # QA reads but never writes
    err = await error_of(
        await client.post(
            "/api/v1/bookings",
            headers=people["quinn"].headers,
            json={"customer_id": customer_id, "item": "x"},
        ),
        403,
    )
    assert err["code"] == "forbidden"


async def test_list_filters_and_pagination(
    client: Client, people: dict[str, Person], customer_id: int, clock: Clock
) -> None:
    sam = people["sam"]
    for i in range(5):
        clock.now += timedelta(minutes=1)
        await body_of(
            await client.post(
                "/api/v1/bookings",
                headers=sam.headers,
                json={"customer_id": customer_id, "item": f"item {i}", "urgent": i % 2 == 0},
            ),
            201,
        )
    page = await body_of(
        await client.get("/api/v1/bookings?limit=2&offset=1", headers=sam.headers), 200
    )
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [b["item"] for b in page["items"]] == ["item 3", "item 2"]
    page = await body_of(await client.get("/api/v1/bookings?urgent=true", headers=sam.headers), 200)
    assert page["total"] == 3
    since = (clock.now - timedelta(seconds=90)).isoformat()
    page = await body_of(
        await client.get("/api/v1/bookings", params={"since": since}, headers=sam.headers), 200
    )
    assert [b["item"] for b in page["items"]] == ["item 4", "item 3"]


# ------------------------------------------------------------------------------ complaints


async def _complaint(client: Client, who: Person, customer_id: int, **extra: Any) -> Any:
    body = {"customer_id": customer_id, "category": "delivery", "description": "parcel late"}
    body.update(extra)
    return await body_of(
        await client.post("/api/v1/complaints", headers=who.headers, json=body), 201
    )


async def test_first_contact_ownership_take_and_handover(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    amy, bob, sue, sam = people["amy"], people["bob"], people["sue"], people["sam"]
    from_call = await _complaint(client, amy, customer_id, call_uniqueid="1700000000.7")
    assert from_call["owner_id"] == amy.id and from_call["calls"] == ["1700000000.7"]

    filed = await _complaint(client, sam, customer_id)
    assert filed["owner_id"] is None
    cid = filed["id"]
    # nobody acts on an unowned complaint before taking it
    err = await error_of(
        await client.post(
            f"/api/v1/complaints/{cid}/status",
            headers=sue.headers,
            json={"status": "investigating"},
        ),
        403,
    )
    assert err["code"] == "complaint_unowned"
    taken = await body_of(
        await client.post(f"/api/v1/complaints/{cid}/take", headers=sue.headers), 200
    )
    assert taken["owner_id"] == sue.id
    sid = await person(client.app, "sid", "specialist", group="complaints")
    err = await error_of(
        await client.post(f"/api/v1/complaints/{cid}/take", headers=sid.headers), 409
    )
    assert err["code"] == "already_owned"
    # an owned complaint of another group is out of a bookings agent's sight
    assert (
        await error_of(
            await client.post(f"/api/v1/complaints/{cid}/take", headers=amy.headers), 404
        )
    )["code"] == "complaint_not_found"
    # not the owner: no status change, no handover
    err = await error_of(
        await client.post(
            f"/api/v1/complaints/{cid}/status",
            headers=sid.headers,
            json={"status": "investigating"},
        ),
        403,
    )
    assert err["code"] == "not_case_owner"
    err = await error_of(
        await client.post(
            f"/api/v1/complaints/{cid}/handover",
            headers=sid.headers,
            json={"to_user_id": sid.id, "reason": "mine now"},
        ),
        403,
    )
    assert err["code"] == "not_case_owner"
    # a handover needs a reason and a valid new owner
    err = await error_of(
        await client.post(
            f"/api/v1/complaints/{cid}/handover",
            headers=sue.headers,
            json={"to_user_id": bob.id, "reason": "   "},
        ),
        422,
    )
    assert "reason" in err["fields"]
    err = await error_of(
        await client.post(
            f"/api/v1/complaints/{cid}/handover",
            headers=sue.headers,
            json={"to_user_id": people["quinn"].id, "reason": "qa"},
        ),
        409,
    )
    assert err["code"] == "invalid_new_owner"
    err = await error_of(
        await client.post(
            f"/api/v1/complaints/{cid}/handover",
            headers=sue.headers,
            json={"to_user_id": 999999, "reason": "x"},
        ),
        422,
    )
    assert err["fields"] == {"to_user_id": "no such user"}
    handed = await body_of(
        await client.post(
            f"/api/v1/complaints/{cid}/handover",
            headers=sue.headers,
            json={"to_user_id": bob.id, "reason": "technical fault: route 3"},
        ),
        200,
    )
    assert handed["owner_id"] == bob.id
    # a supervisor reassigns without owning it
    back = await body_of(
        await client.post(
            f"/api/v1/complaints/{cid}/handover",
            headers=sam.headers,
            json={"to_user_id": sue.id, "reason": "bob is off sick"},
        ),
        200,
    )
    assert back["owner_id"] == sue.id

    timeline = await body_of(
        await client.get(f"/api/v1/complaints/{cid}/timeline", headers=sam.headers), 200
    )
    assert [e["action"] for e in timeline] == ["create", "take", "handover", "handover"]
    handover = timeline[2]
    assert handover["actor_user_id"] == sue.id
    assert handover["before"] == {"owner_id": sue.id} and handover["after"] == {"owner_id": bob.id}
    assert handover["note"] == "technical fault: route 3"
    audit, _ = await client.app[AUDIT].list(entity_type="complaint", entity_id=str(cid))
    assert {"create", "take", "handover"} <= {a.action for a in audit}


async def test_complaint_status_machine(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    amy = people["amy"]
    c = await _complaint(client, amy, customer_id, call_uniqueid="u-1", severity="high")
    cid = c["id"]

    async def move(status: str, expect: int, **extra: Any) -> Any:
        return await body_of(
            await client.post(
                f"/api/v1/complaints/{cid}/status",
                headers=amy.headers,
                json={"status": status, **extra},
            ),
            expect,
        )

    assert (await move("closed", 409))["error"]["code"] == "invalid_transition"
    assert (await move("escalated", 409))["error"]["code"] == "invalid_transition"
    started = await move("investigating", 200, note="checking with the depot")
    assert started["first_responded_at"] is not None
    assert (await move("escalated", 200))["status"] == "escalated"
    assert (await move("resolved", 409))["error"]["code"] == "outcome_required"
    resolved = await move("resolved", 200, outcome="compensated")
    assert resolved["outcome"] == "compensated" and resolved["resolved_at"] is not None
    assert (await move("closed", 409))["error"]["code"] == "customer_not_informed"
    noted = await body_of(
        await client.post(
            f"/api/v1/complaints/{cid}/notes",
            headers=amy.headers,
            json={"note": "called back, customer accepts", "customer_informed": True},
        ),
        200,
    )
    assert noted["customer_informed_at"] is not None
    closed = await move("closed", 200)
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    reopened = await move("investigating", 200, note="customer rang again")
    assert reopened["reopen_count"] == 1 and reopened["closed_at"] is None
    assert reopened["customer_informed_at"] is None
    resolved = await move("resolved", 200)  # the earlier outcome stands
    closed = await move("closed", 200, customer_informed=True)
    assert closed["status"] == "closed"

    timeline = await body_of(
        await client.get(f"/api/v1/complaints/{cid}/timeline", headers=amy.headers), 200
    )
    actions = [e["action"] for e in timeline]
    assert actions == [
        "create",
        "start",
        "escalate",
        "resolve",
        "customer_informed",
        "close",
        "reopen",
        "resolve",
        "close",
    ]
    reopen = timeline[6]
    assert reopen["before"]["status"] == "closed" and reopen["after"]["status"] == "investigating"
    assert reopen["before"]["reopen_count"] == 0 and reopen["after"]["reopen_count"] == 1
    assert reopen["note"] == "customer rang again"


async def test_complaint_edit_link_call_and_visibility(
    client: Client, people: dict[str, Person], customer_id: int, clock: Clock
) -> None:
    amy, carl, sue, quinn = people["amy"], people["carl"], people["sue"], people["quinn"]
    c = await _complaint(client, amy, customer_id, call_uniqueid="u-1", severity="low")
    cid = c["id"]
    updated = await body_of(
        await client.patch(
            f"/api/v1/complaints/{cid}",
            headers=amy.headers,
            json={"severity": "critical", "note": "customer threatens to cancel"},
        ),
        200,
    )
    assert updated["severity"] == "critical"
    assert updated["first_response_due"] < c["first_response_due"]
    linked = await body_of(
        await client.post(
            f"/api/v1/complaints/{cid}/calls", headers=amy.headers, json={"call_uniqueid": "u-2"}
        ),
        200,
    )
    assert linked["calls"] == ["u-1", "u-2"]
    # other group's agent: not visible; specialist and QA: visible
    assert (
        await error_of(await client.get(f"/api/v1/complaints/{cid}", headers=carl.headers), 404)
    )["code"] == "complaint_not_found"
    for who in (sue, quinn):
        await body_of(await client.get(f"/api/v1/complaints/{cid}", headers=who.headers), 200)
    page = await body_of(await client.get("/api/v1/complaints", headers=carl.headers), 200)
    assert page["total"] == 0
    # search by id, by number in another format, by customer name
    for q in (str(cid), "13800138000", "建国"):
        page = await body_of(
            await client.get("/api/v1/complaints", params={"q": q}, headers=quinn.headers), 200
        )
        assert [x["id"] for x in page["items"]] == [cid], q
    page = await body_of(
        await client.get("/api/v1/complaints", params={"q": "nobody"}, headers=quinn.headers), 200
    )
    assert page["total"] == 0
    page = await body_of(
        await client.get(
            "/api/v1/complaints",
            params=[("status", "open"), ("status", "investigating"), ("owner_id", str(amy.id))],
            headers=quinn.headers,
        ),
        200,
    )
    assert page["total"] == 1


async def test_deadlines_in_business_hours_and_breach_notified_once(
    client: Client, people: dict[str, Person], customer_id: int, clock: Clock
) -> None:
    # Saturday 2026-12-05 19:00 Shanghai: 1 h left that day, Sunday closed
    clock.now = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    amy, sam = people["amy"], people["sam"]
    c = await _complaint(client, amy, customer_id, call_uniqueid="u-9", severity="critical")
    # 2 business hours: Sat 19:00-20:00 + Mon 08:00-09:00 (Shanghai) = Mon 01:00 UTC
    assert c["first_response_due"].startswith("2026-12-07T01:00:00")
    # 1 business day: the close of Monday
    assert c["resolution_due"].startswith("2026-12-07T12:00:00")
    assert c["breached"] is False
    other = await _complaint(client, amy, customer_id, call_uniqueid="u-10", severity="low")

    checker = BreachChecker(
        source=client.app[TICKETS], notifier=client.app[TICKET_NOTIFIER], interval=60
    )
    async with client.app[BUS].subscribe(TICKETS_CHANNEL) as messages:
        assert await checker.check_once() == []
        clock.now = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)  # Monday 09:30
        found = await checker.check_once()
        assert [(b.complaint.id, b.kind) for b in found] == [(c["id"], "first_response")]
        channel, payload = await asyncio.wait_for(anext(aiter(messages)), 5)
        assert channel == TICKETS_CHANNEL
        assert payload["type"] == "complaint.breached" and payload["kind"] == "first_response"
        assert payload["complaint"]["id"] == c["id"]
        assert await checker.check_once() == []  # notified once

    shown = await body_of(
        await client.get(f"/api/v1/complaints/{c['id']}", headers=sam.headers), 200
    )
    assert shown["breached"] is True and shown["first_response_breached"] is True
    assert shown["resolution_breached"] is False
    calm = await body_of(
        await client.get(f"/api/v1/complaints/{other['id']}", headers=sam.headers), 200
    )
    assert calm["breached"] is False
    overdue = await body_of(
        await client.get("/api/v1/complaints?overdue=true", headers=sam.headers), 200
    )
    assert [x["id"] for x in overdue["items"]] == [c["id"]]
    timeline = await body_of(
        await client.get(f"/api/v1/complaints/{c['id']}/timeline", headers=sam.headers), 200
    )
    assert timeline[-1]["action"] == "first_response_breached"
    assert timeline[-1]["actor_user_id"] is None

    # Monday 21:00: the critical one missed its resolution (close of Monday), the low one its
    # first response (8 business hours: Sat 19-20 + Mon 08-15)
    clock.now = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    found = await checker.check_once()
    assert sorted((b.complaint.id, b.kind) for b in found) == [
        (c["id"], "resolution"),
        (other["id"], "first_response"),
    ]

    stats = await body_of(await client.get("/api/v1/complaints/stats", headers=sam.headers), 200)
    assert stats["total"] == 2 and stats["overdue"] == 2 and stats["breached"] == 2
    assert stats["by_category"] == {"delivery": 2}
    assert stats["by_status"] == {"open": 2}
    assert stats["by_severity"] == {"critical": 1, "low": 1}
    assert stats["by_outcome"] == {"none": 2}
    assert (await error_of(await client.get("/api/v1/complaints/stats", headers=amy.headers), 403))[
        "code"
    ] == "forbidden"


async def test_concurrent_takes_give_one_owner(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    c = await _complaint(client, people["sam"], customer_id)
    takers = [people["amy"], people["bob"], people["sue"]]
    responses = await asyncio.gather(
        *(client.post(f"/api/v1/complaints/{c['id']}/take", headers=p.headers) for p in takers)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 409, 409]
    final = await body_of(
        await client.get(f"/api/v1/complaints/{c['id']}", headers=people["sam"].headers), 200
    )
    winner = next(p for p, r in zip(takers, responses, strict=True) if r.status == 200)
    assert final["owner_id"] == winner.id


# ------------------------------------------------------------------------------ dispositions


async def test_disposition_by_the_handling_agent(client: Client, people: dict[str, Person]) -> None:
    amy, bob = people["amy"], people["bob"]
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    await client.app[CALL_REPOSITORY].save_call(
        CallRecord(
            uniqueid="1700000000.5",
            linkedid="1700000000.5",
            channel="PJSIP/trunk-00000001",
            started_at=start,
            caller_number="13800138000",
            agent="王芳",
            agent_interface="PJSIP/1001",
            answered_at=start + timedelta(seconds=20),
            ended_at=start + timedelta(minutes=3),
            agents=("王芳",),
        )
    )
    url = "/api/v1/calls/1700000000.5/disposition"
    assert (await error_of(await client.get(url, headers=amy.headers), 404))[
        "code"
    ] == "disposition_not_found"
    err = await error_of(
        await client.post(
            url, headers=bob.headers, json={"category": "booking", "outcome": "done"}
        ),
        403,
    )
    assert err["code"] == "not_call_handler"
    err = await error_of(await client.post(url, headers=amy.headers, json={"category": ""}), 422)
    assert set(err["fields"]) == {"category", "outcome"}
    saved = await body_of(
        await client.post(
            url, headers=amy.headers, json={"category": "booking", "outcome": "booked"}
        ),
        200,
    )
    assert saved["user_id"] == amy.id and saved["outcome"] == "booked"
    corrected = await body_of(
        await client.post(
            url,
            headers=amy.headers,
            json={"category": "booking", "outcome": "booked", "note": "2 seats"},
        ),
        200,
    )
    assert corrected["id"] == saved["id"] and corrected["note"] == "2 seats"
    got = await body_of(await client.get(url, headers=amy.headers), 200)
    assert got["note"] == "2 seats"
    everyone = await body_of(
        await client.get(
            "/api/v1/calls/1700000000.5/dispositions", headers=people["quinn"].headers
        ),
        200,
    )
    assert [d["user_id"] for d in everyone] == [amy.id]
    # a call not in the log yet (written when it ends): the agent's own pop is trusted
    await body_of(
        await client.post(
            "/api/v1/calls/1700000099.1/disposition",
            headers=bob.headers,
            json={"category": "enquiry", "outcome": "answered"},
        ),
        200,
    )


# ------------------------------------------------------------------------------ cursor paging


async def _pages(client: Client, path: str, headers: Any, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following `next` (no offsets)."""
    pages: list[dict[str, Any]] = []
    query = {k: str(v) for k, v in params.items()}
    while True:
        page = await body_of(await client.get(path, params=query, headers=headers), 200)
        pages.append(page)
        if page["next"] is None:
            return pages
        query["cursor"] = page["next"]


async def test_cursor_pages_repeat_no_booking_while_new_ones_arrive(
    client: Client, people: dict[str, Person], customer_id: int, clock: Clock
) -> None:
    sam = people["sam"]

    async def book(item: str, urgent: bool = False) -> int:
        created = await body_of(
            await client.post(
                "/api/v1/bookings",
                headers=sam.headers,
                json={"customer_id": customer_id, "item": item, "urgent": urgent},
            ),
            201,
        )
        return int(created["id"])

    for i in range(7):  # pairs created at the same moment: the id breaks the tie
        if i % 2 == 0:
            clock.now += timedelta(minutes=1)
        await book(f"old {i}", urgent=i != 3)
    seen: list[str] = []
    query = {"limit": "2"}
    while True:
        page = await body_of(
            await client.get("/api/v1/bookings", params=query, headers=sam.headers), 200
        )
        seen += [b["item"] for b in page["items"]]
        clock.now += timedelta(minutes=1)
        await book(f"new after {len(seen)}")  # newest first: lands before the cursor
        if page["next"] is None:
            break
        assert page["offset"] == 0 and page["limit"] == 2
        query["cursor"] = page["next"]
    assert seen == [f"old {i}" for i in (6, 5, 4, 3, 2, 1, 0)]  # none repeated, none missed

    urgent = await _pages(client, "/api/v1/bookings", sam.headers, limit=2, urgent="true")
    items = [b["item"] for p in urgent for b in p["items"]]
    assert items == [f"old {i}" for i in (6, 5, 4, 2, 1, 0)]  # the filter holds on every page
    assert all(p["total"] == 6 for p in urgent)
    assert len(urgent) == 3 and len(urgent[-1]["items"]) == 2  # a full last page: next null

    oldest = await _pages(client, "/api/v1/bookings", sam.headers, limit=3, order="oldest")
    items = [b["item"] for p in oldest for b in p["items"]]
    assert items[:7] == [f"old {i}" for i in range(7)] and len(items) == 7 + 4


async def test_cursor_pages_of_complaints_keep_filters_and_search(
    client: Client, people: dict[str, Person], customer_id: int, clock: Clock
) -> None:
    sam = people["sam"]
    other = await client.app[CUSTOMERS].create(name="李四", numbers=["+86 139-0000-0000"])
    for i in range(6):
        clock.now += timedelta(minutes=1)
        await body_of(
            await client.post(
                "/api/v1/complaints",
                headers=sam.headers,
                json={
                    "customer_id": customer_id if i % 3 else other.id,
                    "category": "billing",
                    "severity": "low",
                    "description": f"c{i}",
                },
            ),
            201,
        )
    pages = await _pages(client, "/api/v1/complaints", sam.headers, limit=2, q="13800138000")
    assert [c["description"] for p in pages for c in p["items"]] == ["c5", "c4", "c2", "c1"]
    assert [len(p["items"]) for p in pages] == [2, 2]
    pages = await _pages(client, "/api/v1/complaints", sam.headers, limit=4, status="open")
    assert [c["description"] for p in pages for c in p["items"]] == [
        f"c{i}" for i in range(5, -1, -1)
    ]


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not a cursor"},
        {"cursor": "eyJ4IjoxfQ"},  # base64 of {"x":1}
        {"cursor": ""},
        {"cursor": "W10"},  # []
    ],
)
async def test_a_bad_cursor_is_refused_with_a_field_message(
    client: Client, people: dict[str, Person], query: dict[str, str]
) -> None:
    for path in ("/api/v1/bookings", "/api/v1/complaints"):
        err = await error_of(
            await client.get(path, params=query, headers=people["sam"].headers), 422
        )
        assert set(err["fields"]) == {"cursor"}


async def test_a_cursor_goes_with_its_order_and_not_with_an_offset(
    client: Client, people: dict[str, Person], customer_id: int
) -> None:
    sam = people["sam"]
    for i in range(3):
        await body_of(
            await client.post(
                "/api/v1/bookings",
                headers=sam.headers,
                json={"customer_id": customer_id, "item": f"b{i}"},
            ),
            201,
        )
    page = await body_of(
        await client.get("/api/v1/bookings", params={"limit": "1"}, headers=sam.headers), 200
    )
    cursor = page["next"]
    assert isinstance(cursor, str)
    for params in ({"cursor": cursor, "offset": "1"}, {"cursor": cursor, "order": "oldest"}):
        err = await error_of(
            await client.get("/api/v1/bookings", params=params, headers=sam.headers), 422
        )
        assert set(err["fields"]) == {"cursor"}


async def test_the_openapi_document_declares_cursor_paging(client: Client) -> None:
    doc = await body_of(await client.get("/api/openapi.json"), 200)
    schemas = doc["components"]["schemas"]
    for path, page in (
        ("/api/v1/bookings", "BookingPage"),
        ("/api/v1/complaints", "ComplaintPage"),
    ):
        params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        assert params["cursor"]["schema"]["type"] == "string"
        assert "next" in params["cursor"]["description"]
        assert params["order"]["schema"]["enum"] == ["newest", "oldest"]
        nxt = schemas[page]["properties"]["next"]
        assert {"type": "string"} in nxt.get("anyOf", [nxt])
