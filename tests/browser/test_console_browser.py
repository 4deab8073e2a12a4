"""The issue's browser scenario in headless Chromium: agent 1 signs in, the emulator rings them
with a known caller, the screen-pop shows that customer, the agent files a complaint from it
(keyboard shortcut), files the disposition before leaving wrap-up; agent 2, signed in in
another browser context, never sees the pop."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from callcenter.app import SESSIONS
from callcenter.console.notifier import SCREEN_POPS
from callcenter.db.models import (
    BookingRow,
    ComplaintCallRow,
    ComplaintRow,
    CustomerRow,
    DispositionRow,
)
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.web.keys import USERS

ALICE, BOB = "PJSIP/1001", "PJSIP/1002"  # as the `server` fixture links them
PASSWORD = "correct horse battery"
VIEWPORT = {"width": 1440, "height": 960}
WAIT_MS = 30_000


async def sign_in(context: Any, url: str, username: str) -> Any:
    from playwright.async_api import expect

    page = await context.new_page()
    await page.goto(url + "/console")  # not signed in: to the login page and back
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await expect(page).to_have_url(re.compile(r"/console$"))
    await expect(page.locator("#conn")).to_have_class("live", timeout=WAIT_MS)
    return page


async def test_screen_pop_complaint_and_privacy(server: Any, browser: Any, shots: Path) -> None:
    from playwright.async_api import expect

    alice_ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    bob_ctx = await browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    alice = await sign_in(alice_ctx, server.url, "alice")
    bob = await sign_in(bob_ctx, server.url, "bob")
    await expect(alice.locator("h1")).to_have_text("Agent console")
    await expect(bob.locator("h1")).to_have_text("坐席工作台")
    await expect(alice.locator("#user-phone")).to_have_text(ALICE)

    # the emulator rings agent 1 with the seeded key customer (Chinese, menu 2 = complaints)
    caller = CallerModel(
        number="+86 138 0013 8000",
        name="ZHANG SAN",
        language="zh",
        keys=[KeyPlan("1", delay=0.5), KeyPlan("2", delay=0.5)],
        talk_limit=60.0,
    )
    call = server.emu.place_call(caller)

    await expect(alice.locator("#pop-card")).to_be_visible(timeout=WAIT_MS)
    await expect(alice.locator("#pop-number")).to_have_text("+86 138 0013 8000")
    await expect(alice.locator("#pop-customer")).to_contain_text("张三")
    await expect(alice.locator("#pop-customer")).to_contain_text("上海星辰贸易有限公司")
    await expect(alice.locator("#pop-key")).to_be_visible()
    await expect(alice.locator("#pop-queue")).to_have_text("complaints")
    await expect(alice.locator("#pop-digits")).to_contain_text("main: 2")
    await expect(alice.locator("#pop-kind")).to_have_text("Connected", timeout=WAIT_MS)
    await alice.screenshot(path=str(shots / "console-pop-en.png"), full_page=True)

    # one keystroke opens the complaint form, pre-filled from the call
    await alice.keyboard.press("Alt+C")
    form = alice.locator("#complaint-form")
    await expect(form).to_be_visible()
    await expect(form.locator("select[name=category]")).to_be_focused()
    await expect(form.locator(".ctx")).to_contain_text(f"#{server.customer_id}")
    await form.locator("select[name=category]").select_option("delivery")
    await form.locator("select[name=severity]").select_option("high")
    await form.locator("textarea[name=description]").fill("Parcel arrived damaged, second time.")
    await alice.screenshot(path=str(shots / "console-complaint-en.png"), full_page=True)
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".msg")).to_contain_text("Saved", timeout=WAIT_MS)

    summary = await call
    async with server.app[SESSIONS]() as session:
        complaint = (
            await session.scalars(
                select(ComplaintRow).where(ComplaintRow.customer_id == server.customer_id)
            )
        ).one()
        linked = await session.scalars(
            select(ComplaintCallRow.call_uniqueid).where(
                ComplaintCallRow.complaint_id == complaint.id
            )
        )
        assert list(linked) == [summary.uniqueid]
    assert (complaint.category, complaint.severity) == ("delivery", "high")
    assert complaint.owner_id == server.users["alice"]  # first contact owns it

    # the call ended: wrap-up cannot end before the disposition
    await expect(alice.locator("#pop-kind")).to_have_text("Call ended", timeout=WAIT_MS)
    await expect(alice.locator("#pending")).to_be_visible()
    await alice.keyboard.press("Escape")
    await alice.keyboard.press("Alt+1")  # available
    await expect(alice.locator("#state-msg")).to_contain_text("disposition")
    dispo = alice.locator("#disposition-form")
    await expect(dispo).to_be_visible()
    await dispo.locator("select[name=category]").select_option("complaint")
    await dispo.locator("select[name=outcome]").select_option("follow_up")
    await dispo.locator("button[type=submit]").click()
    await expect(dispo.locator(".msg")).to_contain_text("Saved", timeout=WAIT_MS)
    await expect(alice.locator("#pending")).to_be_hidden()
    await alice.keyboard.press("Alt+1")
    await expect(alice.locator("#state-now")).to_have_text("Available", timeout=WAIT_MS)
    async with server.app[SESSIONS]() as session:
        filed = await session.scalar(
            select(DispositionRow).where(DispositionRow.call_uniqueid == summary.uniqueid)
        )
    assert filed is not None and filed.user_id == server.users["alice"]

    # agent 2 saw nothing of it
    await expect(bob.locator("#pop-card")).to_be_hidden()
    await expect(bob.locator("#recent-list li")).to_have_count(0)
    assert server.app[SCREEN_POPS].recent(BOB) == []
    await bob.screenshot(path=str(shots / "console-idle-zh-CN.png"), full_page=True)

    # the same console in Chinese, in a second tab: a new tab shows the latest pop
    await server.app[USERS].update(server.users["alice"], language="zh-CN")
    tab = await alice_ctx.new_page()
    await tab.goto(server.url + "/console")
    await expect(tab.locator("h1")).to_have_text("坐席工作台")
    await expect(tab.locator("#pop-customer")).to_contain_text("张三", timeout=WAIT_MS)
    await expect(tab.locator("#pop-key")).to_have_text("大客户")
    await tab.screenshot(path=str(shots / "console-pop-zh-CN.png"), full_page=True)

    await asyncio.gather(alice_ctx.close(), bob_ctx.close())


async def test_unknown_caller_booking_opens_a_provisional_customer(
    server: Any, browser: Any, shots: Path
) -> None:
    from playwright.async_api import expect

    ctx = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    page = await sign_in(ctx, server.url, "alice")
    caller = CallerModel(
        number="13912345678",
        name="",
        language="zh",
        keys=[KeyPlan("1", delay=0.5), KeyPlan("1", delay=0.5)],  # bookings
        talk_limit=60.0,
    )
    call = server.emu.place_call(caller)
    await expect(page.locator("#pop-number")).to_have_text("13912345678", timeout=WAIT_MS)
    await expect(page.locator("#pop-customer")).to_contain_text("Unknown caller")
    await expect(page.locator("#pop-key")).to_be_hidden()

    await page.keyboard.press("Alt+B")
    form = page.locator("#booking-form")
    await expect(form).to_be_visible()
    await expect(form.locator("input[name=item]")).to_be_focused()
    await page.keyboard.type("Table for 6, private room")
    await form.locator("input[name=urgent]").check()
    await form.locator("input[name=item]").press("Enter")  # submits the form
    await expect(form.locator(".msg")).to_contain_text("Saved", timeout=WAIT_MS)
    summary = await call

    async with server.app[SESSIONS]() as session:
        booking = (
            await session.scalars(
                select(BookingRow).where(BookingRow.call_uniqueid == summary.uniqueid)
            )
        ).one()
        customer = await session.get(CustomerRow, booking.customer_id)
    assert booking.item == "Table for 6, private room" and booking.urgent is True
    assert customer is not None and customer.provisional is True
    await ctx.close()
