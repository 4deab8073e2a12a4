"""The case desk page (GET /cases): complaint specialists, agents and supervisors work
complaints and bookings in the browser. The page is static HTML + cases.js calling the ticket
API (callcenter/tickets/api.py); this module renders it in the user's language with the boot
data the script needs (CSRF token, the user, the status transition tables, a staff directory
for names and the handover picker)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from callcenter.tickets.service import (
    BOOKING_TRANSITIONS,
    COMPLAINT_TRANSITIONS,
    HANDLER_ROLES,
    OWNER_ROLES,
)
from callcenter.users.model import LANGUAGES, POLICY, Principal, User
from callcenter.web.api import ApiRouter, require_principal
from callcenter.web.keys import SETTINGS, USERS

__all__ = [
    "CASES_HTML",
    "MAX_STAFF",
    "ROLES",
    "cases_page",
    "render_cases",
    "router",
    "staff_directory",
    "strings",
    "transition_table",
]

router = ApiRouter(tag="cases-page", scope=None, in_schema=False)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
CASES_HTML = WEB_DIR / "templates" / "cases.html"
I18N_DIR = WEB_DIR / "static" / "i18n"
# agent, specialist, supervisor, admin: the people who work tickets
ROLES = POLICY["tickets:write"]
# the staff directory in the page is bounded; beyond it names show as "#id"
MAX_STAFF: Final = 2000


@cache
def strings(language: str) -> dict[str, str]:
    """The page's strings in `language` (zh-CN or en), from static/i18n/cases.<lang>.json."""
    data = json.loads((I18N_DIR / f"cases.{language}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


COMPLAINT_ORDER: Final = ("open", "investigating", "escalated", "resolved", "closed")
BOOKING_ORDER: Final = ("new", "confirmed", "fulfilled", "cancelled")


def transition_table(
    pairs: Iterable[tuple[str, str]], order: Sequence[str] = ()
) -> dict[str, list[str]]:
    """{from status: [allowed next statuses]} from (from, to) pairs; next statuses in
    lifecycle `order` (unknown ones last, by name), so the page lists them naturally."""
    rank = {status: i for i, status in enumerate(order)}
    table: dict[str, set[str]] = {}
    for frm, to in pairs:
        table.setdefault(frm, set()).add(to)
    return {
        frm: sorted(tos, key=lambda s: (rank.get(s, len(rank)), s))
        for frm, tos in sorted(table.items())
    }


def staff_directory(users: Iterable[User]) -> list[dict[str, Any]]:
    """Names for owner and timeline ids, and who can be handed a complaint (`can_own`: an
    active agent, specialist, supervisor or admin). No usernames or phones: names only."""
    return [
        {
            "id": u.id,
            "name": u.display_name or u.username,
            "role": u.role,
            "group": u.group,
            "can_own": (not u.disabled) and u.role in OWNER_ROLES,
        }
        for u in users
    ]


def _script_json(value: Any) -> str:
    # JSON inside <script type="application/json">: "</" and "<!--" must not appear raw
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def render_cases(
    principal: Principal,
    staff: list[dict[str, Any]],
    *,
    timezone: str,
    template: str | None = None,
) -> str:
    """The page for `principal`: localised title, boot JSON (no user-supplied text is put in
    the HTML itself; the script renders data with textContent)."""
    language = principal.language if principal.language in LANGUAGES else "zh-CN"
    text = strings(language)
    boot: Mapping[str, Any] = {
        "language": language,
        "timezone": timezone,
        "csrf": principal.csrf_token or "",
        "user": {
            "id": principal.user_id,
            "display_name": principal.display_name or principal.username,
            "role": principal.role,
            # supervisors/admins act on complaints they do not own (reassign, status)
            "handler": principal.role in HANDLER_ROLES,
        },
        "staff": staff,
        "complaint_transitions": transition_table(COMPLAINT_TRANSITIONS, COMPLAINT_ORDER),
        "booking_transitions": transition_table(
            ((frm, to) for frm, tos in BOOKING_TRANSITIONS.items() for to in tos),
            BOOKING_ORDER,
        ),
        "strings": text,
    }
    page = template if template is not None else CASES_HTML.read_text(encoding="utf-8")
    return (
        page.replace("{{lang}}", html.escape(language))
        .replace("{{title}}", html.escape(text.get("title", "Cases")))
        .replace("{{boot}}", _script_json(boot))
    )


@router.get(
    "/cases",
    roles=ROLES,
    summary="The case desk page (complaints and bookings)",
    page=True,
    response_content_type="text/html",
)
async def cases_page(request: web.Request) -> web.Response:
    """The case desk (HTML), in the user's language."""
    principal = require_principal(request)
    users, _ = await request.app[USERS].list(limit=MAX_STAFF)
    page = render_cases(principal, staff_directory(users), timezone=request.app[SETTINGS].timezone)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})
