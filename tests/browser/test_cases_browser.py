"""The case desk (/cases) in headless Chromium: a complaint specialist signs in, sees an
unowned complaint (filed through the API), takes it, moves it to investigating and sees both
on the case timeline; an agent whose page still shows the complaint unowned tries to take it
and gets the `already_owned` refusal next to the action. Bookings: the urgent one is flagged
and confirmed from its detail pane. Screenshots in English and Chinese."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import update

from callcenter.app import SESSIONS
from callcenter.db.models import ComplaintRow
from callcenter.web.keys import TICKETS, USERS

PASSWORD = "correct horse battery"  # as the `server` fixture sets it
VIEWPORT = {"width": 1440, "height": 1000}
WAIT_MS = 30_000


async def api_as(url: str, username: str) -> tuple[aiohttp.ClientSession, dict[str, str]]:
    """A signed-in API session (cookie) and the headers for its writes (CSRF token)."""
    http = aiohttp.ClientSession(base_url=url)
    resp = await http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    token = (await resp.json())["csrf_token"]
    # the session cookie is sent explicitly: aiohttp's jar keeps no cookies for IP hosts
    cookie = "; ".join(f"{m.key}={m.value}" for m in resp.cookies.values())
    return http, {"X-CSRF-Token": token, "Cookie": cookie}


async def post(http: aiohttp.ClientSession, path: str, body: Any, headers: Any) -> Any:
    resp = await http.post(path, json=body, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def open_cases(context: Any, url: str, username: str) -> Any:
    from playwright.async_api import expect

    page = await context.new_page()
    await page.goto(url + "/cases")  # not signed in: to the login page and back
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await expect(page).to_have_url(re.compile(r"/cases$"))
    return page


async def test_specialist_takes_and_works_a_complaint(
    server: Any, browser: Any, shots: Path
) -> None:
    from playwright.async_api import expect

    app = server.app
    emma = await app[USERS].create(
        username="emma",
        password=PASSWORD,
        role="specialist",
        display_name="Emma Wang",
        language="en",
        group="complaints",
    )

    # alice files two complaints without a call (so nobody owns them yet) and an urgent booking
    http, headers = await api_as(server.url, "alice")
    try:
        late = await post(
            http,
            "/api/v1/complaints",
            {
                "customer_id": server.customer_id,
                "category": "billing",
                "severity": "high",
                "description": "Charged twice for the March invoice.",
            },
            headers,
        )
        fresh = await post(
            http,
            "/api/v1/complaints",
            {
                "customer_id": server.customer_id,
                "category": "delivery",
                "severity": "medium",
                "description": "Parcel arrived damaged <b>again</b>; wants a replacement.",
            },
            headers,
        )
        booking = await post(
            http,
            "/api/v1/bookings",
            {
                "customer_id": server.customer_id,
                "item": "20 boxes of A4 paper",
                "for_whom": "Shanghai office",
                "urgent": True,
            },
            headers,
        )
        await post(
            http,
            "/api/v1/bookings",
            {"customer_id": server.customer_id, "item": "Toner cartridges", "urgent": False},
            headers,
        )
    finally:
        await http.close()
    # the first one is long past both deadlines: it must show in red
    past = app[TICKETS].now() - timedelta(days=5)
    async with app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(ComplaintRow)
            .where(ComplaintRow.id == late["id"])
            .values(first_response_due=past, resolution_due=past)
        )

    emma_ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    bob_ctx = await browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = await open_cases(emma_ctx, server.url, "emma")
    bob = await open_cases(bob_ctx, server.url, "bob")  # an agent in alice's group, zh-CN
    await expect(page.locator("h1")).to_have_text("Case desk")
    await expect(bob.locator("h1")).to_have_text("工单台")

    # the overdue complaint is red and says so in words
    late_row = page.locator(f"#list-c tr[data-id='{late['id']}']")
    await expect(late_row).to_have_class(re.compile(r"\bbreached\b"), timeout=WAIT_MS)
    await expect(late_row).to_contain_text("overdue")
    color = await late_row.locator("td").nth(1).evaluate("e => getComputedStyle(e).color")
    assert color == "rgb(185, 28, 28)"

    # unowned filter; open the fresh complaint from the keyboard
    await page.select_option("#filter-c select[name=scope]", "unowned")
    await expect(page.locator("#list-c[aria-busy]")).to_have_count(0)  # the new list is in
    row = page.locator(f"#list-c tr[data-id='{fresh['id']}']")
    await expect(row).to_contain_text("unowned")
    await row.locator("button").focus()
    await page.keyboard.press("Enter")
    detail = page.locator("#detail-c")
    await expect(detail).to_be_focused()
    await expect(page.locator("#dc-h")).to_have_text(f"Complaint #{fresh['id']} · delivery")
    # user text is shown as text, never as markup
    await expect(page.locator("#dc-desc")).to_have_text(
        "Parcel arrived damaged <b>again</b>; wants a replacement."
    )
    await expect(page.locator("#dc-customer")).to_contain_text("张三")
    await expect(page.locator("#dc-customer")).to_contain_text("key customer")
    await expect(page.locator("#take-box")).to_be_visible()

    # bob opens the same complaint while it is still unowned
    await bob.locator(f"#list-c tr[data-id='{fresh['id']}'] button").click()
    await expect(bob.locator("#take-box")).to_be_visible()

    # emma takes it: first-contact ownership
    await page.click("#btn-take")
    await expect(page.locator("#dc-msg")).to_have_text("You own this complaint now.")
    await expect(page.locator("#dc-facts")).to_contain_text("Emma Wang (you)")
    await expect(page.locator("#take-box")).to_be_hidden()
    timeline = page.locator("#dc-timeline")
    await expect(timeline).to_contain_text("took ownership")
    await expect(timeline).to_contain_text("owner: — → Emma Wang (you)")

    # a resolve without an outcome is refused with the server's code, next to the form
    status = page.locator("#status-c")
    await status.locator("select[name=status]").select_option("resolved")
    await expect(status.locator("input[name=outcome]")).to_be_visible()
    await status.locator("button[type=submit]").click()
    await expect(status.locator(".msg")).to_contain_text("[outcome_required]")
    await expect(status.locator(".msg")).to_contain_text("Say what the outcome is")

    # open -> investigating, with a note: both on the timeline
    await status.locator("select[name=status]").select_option("investigating")
    await status.locator("textarea[name=note]").fill("Called the courier; photos requested.")
    await status.locator("textarea[name=note]").press("Tab")
    await page.keyboard.press("Enter")  # the Apply button has focus
    await expect(status.locator(".msg")).to_have_text("Status changed.")
    await expect(page.locator("#dc-facts")).to_contain_text("investigating")
    await expect(timeline).to_contain_text("started investigating")
    await expect(timeline).to_contain_text("status: open → investigating")
    await expect(timeline).to_contain_text("Called the courier; photos requested.")
    assert (await app[TICKETS].get_complaint(fresh["id"])).status == "investigating"
    await page.screenshot(path=str(shots / "cases-complaint-en.png"), full_page=True)

    # handover needs a person and a reason: checked before sending
    handover = page.locator("#handover-c")
    await handover.locator("button[type=submit]").click()
    await expect(handover.locator(".msg")).to_contain_text("choose who takes it over")
    await expect(handover.locator("select[name=to_user_id]")).to_have_attribute(
        "aria-invalid", "true"
    )

    # bob's page still offers "take": the server refuses, the page says why and catches up
    await bob.click("#btn-take")
    await expect(bob.locator("#dc-msg")).to_contain_text("[already_owned]")
    await expect(bob.locator("#dc-msg")).to_contain_text("此投诉已有负责人")
    await expect(bob.locator("#take-box")).to_be_hidden()
    await expect(bob.locator("#dc-facts")).to_contain_text("Emma Wang")
    await expect(bob.locator("#status-c")).to_be_hidden()  # not his: no status actions
    assert (await app[TICKETS].get_complaint(fresh["id"])).owner_id == emma.id
    await bob.screenshot(path=str(shots / "cases-complaint-zh-CN.png"), full_page=True)

    # resolve with an outcome; closing before the customer was told is refused
    await status.locator("select[name=status]").select_option("resolved")
    await status.locator("input[name=outcome]").fill("replacement sent")
    await status.locator("button[type=submit]").click()
    await expect(status.locator(".msg")).to_have_text("Status changed.")
    await expect(timeline).to_contain_text("outcome: — → replacement sent")
    await status.locator("select[name=status]").select_option("closed")
    await status.locator("button[type=submit]").click()
    await expect(status.locator(".msg")).to_contain_text("[customer_not_informed]")
    await expect(status.locator(".msg")).to_contain_text("Tell the customer the outcome")
    # the customer is called back: a note records it, then closing works
    note = page.locator("#note-c")
    await note.locator("textarea[name=note]").fill("Called back: replacement on its way.")
    await note.locator("input[name=customer_informed]").check()
    await note.locator("button[type=submit]").click()
    await expect(note.locator(".msg")).to_have_text("Note added.")
    await expect(timeline).to_contain_text("customer informed")
    await status.locator("select[name=status]").select_option("closed")
    await status.locator("button[type=submit]").click()
    await expect(status.locator(".msg")).to_have_text("Status changed.")
    await expect(timeline).to_contain_text("status: resolved → closed")
    closed = await app[TICKETS].get_complaint(fresh["id"])
    assert closed.status == "closed" and closed.customer_informed_at is not None
    # a closed complaint offers only the reopen
    await expect(status.locator("select[name=status] option")).to_have_text(
        ["— choose a status —", "reopen (back to investigating)"]
    )

    # Esc closes the pane; the complaint left the "unowned" list, so focus goes to the list
    await page.keyboard.press("Escape")
    await expect(detail).to_be_hidden()
    await expect(row).to_have_count(0)
    await expect(page.locator("#list-c")).to_be_focused()
    # in "mine" it is listed; Enter opens it, Esc returns focus to its row
    await page.select_option("#filter-c select[name=scope]", "mine")
    await expect(page.locator("#list-c[aria-busy]")).to_have_count(0)
    await row.locator("button").focus()
    await page.keyboard.press("Enter")
    await expect(detail).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(row.locator("button")).to_be_focused()

    # bookings: the urgent one is flagged; confirm it
    await page.click("#tab-b")
    brow = page.locator(f"#list-b tr[data-id='{booking['id']}']")
    await expect(brow).to_have_class(re.compile(r"\burgent\b"), timeout=WAIT_MS)
    await expect(brow).to_contain_text("Urgent")
    await expect(page.locator("#list-b tbody tr.urgent")).to_have_count(1)
    await brow.locator("button").click()
    await expect(page.locator("#db-urgent")).to_be_visible()
    bstatus = page.locator("#status-b")
    await bstatus.locator("select[name=status]").select_option("confirmed")
    await bstatus.locator("button[type=submit]").click()
    await expect(bstatus.locator(".msg")).to_have_text("Status changed.")
    await expect(page.locator("#db-timeline")).to_contain_text("status: new → confirmed")
    await expect(page.locator("#db-facts")).to_contain_text("confirmed")
    assert (await app[TICKETS].get_booking(booking["id"])).status == "confirmed"
    await page.screenshot(path=str(shots / "cases-bookings-en.png"), full_page=True)

    await asyncio.gather(emma_ctx.close(), bob_ctx.close())


async def test_the_complaint_list_pages_on_by_cursor_while_complaints_arrive(
    server: Any, browser: Any
) -> None:
    """53 complaints, 50 a page: while two new ones arrive, "Next" shows the 3 oldest, not
    two of the first page again (what offset paging did); "Previous" goes back to the top."""
    from playwright.async_api import expect

    tickets = server.app[TICKETS]
    alice = server.users["alice"]

    async def file(text: str) -> int:
        complaint = await tickets.create_complaint(
            actor_id=alice,
            actor_role="agent",
            customer_id=server.customer_id,
            category="billing",
            description=text,
        )
        return int(complaint.id)

    ids = [await file(f"complaint {i}") for i in range(53)]
    ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    page = await open_cases(ctx, server.url, "alice")
    rows = page.locator("#list-c tbody tr[data-id]")
    await expect(rows).to_have_count(50, timeout=WAIT_MS)
    await expect(page.locator("#count-c")).to_have_text("1–50 of 53")
    await expect(page.locator("#prev-c")).to_be_disabled()
    first_page = await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))")
    assert first_page == ids[::-1][:50]

    arrived = [await file("new 1"), await file("new 2")]
    await page.click("#next-c")
    await expect(page.locator("#count-c")).to_have_text("51–53 of 55", timeout=WAIT_MS)
    assert await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))") == ids[2::-1]
    await expect(page.locator("#next-c")).to_be_disabled()

    await page.click("#prev-c")
    await expect(page.locator("#count-c")).to_have_text("1–50 of 55", timeout=WAIT_MS)
    top = await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))")
    assert top[:2] == arrived[::-1] and top[2:] == ids[::-1][:48]
    await expect(page.locator("#prev-c")).to_be_disabled()
    await ctx.close()


async def test_next_while_a_page_loads_or_after_a_failed_load_moves_one_page(
    server: Any, browser: Any
) -> None:
    """60 complaints, 50 a page. A second Next while page 2 loads (a double click, a slow API)
    does not move on twice: the buttons wait for the page. A page that fails to load (503)
    leaves the list where it was, so Next again shows page 2 and Previous page 1."""
    from playwright.async_api import Route, expect

    tickets = server.app[TICKETS]
    for i in range(60):
        await tickets.create_complaint(
            actor_id=server.users["alice"],
            actor_role="agent",
            customer_id=server.customer_id,
            category="billing",
            description=f"complaint {i}",
        )
    ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    page = await open_cases(ctx, server.url, "alice")
    rows = page.locator("#list-c tbody tr[data-id]")
    count = page.locator("#count-c")
    await expect(count).to_have_text("1–50 of 60", timeout=WAIT_MS)
    first_page = await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))")

    held = asyncio.Event()
    release = asyncio.Event()
    fail = True

    async def later_pages(route: Route) -> None:
        if fail:  # the API down for a moment
            await route.fulfill(
                status=503,
                json={"error": {"code": "database_unavailable", "message": "try again"}},
            )
            return
        held.set()
        await release.wait()
        await route.continue_()

    await page.route(re.compile(r"/api/v1/complaints\?.*cursor="), later_pages)
    await page.click("#next-c")
    await expect(count).to_contain_text("database_unavailable", timeout=WAIT_MS)
    await expect(page.locator("#next-c")).to_be_enabled()  # a retry is possible
    await expect(page.locator("#prev-c")).to_be_disabled()  # still on page 1

    fail = False
    await page.click("#next-c")
    async with asyncio.timeout(WAIT_MS / 1000):
        await held.wait()
    await expect(page.locator("#next-c")).to_be_disabled()  # while page 2 loads
    await page.evaluate("document.getElementById('next-c').click()")  # the double click
    release.set()
    await expect(count).to_have_text("51–60 of 60", timeout=WAIT_MS)
    await expect(rows).to_have_count(10)
    await expect(page.locator("#next-c")).to_be_disabled()  # the last page

    await page.click("#prev-c")
    await expect(count).to_have_text("1–50 of 60", timeout=WAIT_MS)
    assert await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))") == first_page
    await expect(page.locator("#prev-c")).to_be_disabled()
    await ctx.close()
