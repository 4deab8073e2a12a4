"""The one routes table."""

from __future__ import annotations

from pathlib import Path

from aiohttp import WSCloseCode, web

from callcenter.calls import api as calls_api
from callcenter.console import api as console_api
from callcenter.customers import api as customers_api
from callcenter.tickets import api as tickets_api
from callcenter.users import api as users_api
from callcenter.users.model import POLICY
from callcenter.users.service import redact_numbers, sees_full_numbers
from callcenter.web import docs
from callcenter.web.api import ApiRouter, require_principal
from callcenter.web.auth import check_same_origin, resolve_principal
from callcenter.web.hub import SESSION_ENDED
from callcenter.web.keys import HUB

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
INDEX_HTML = WEB_DIR / "templates" / "index.html"


live_pages = ApiRouter(tag="live-page", scope=None, in_schema=False)


@live_pages.get("/", roles=POLICY["live:view"], page=True, summary="The live page")
async def index(request: web.Request) -> web.FileResponse:
    """GET /: the live page (calls, agents, queues, recent call log)."""
    return web.FileResponse(INDEX_HTML, headers={"Cache-Control": "no-cache"})


@live_pages.get("/ws", roles=POLICY["live:view"], summary="Live bus events (WebSocket)")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: live bus events, see callcenter.web.hub."""
    check_same_origin(request)
    principal = require_principal(request)
    full = sees_full_numbers(principal)

    async def check() -> int | None:
        # re-checked while the socket is open: sign-out or a disabled user ends the feed, and
        # a role change closes it so the browser reconnects with what the new role may see
        now = await resolve_principal(request)
        if now is None or now.user_id != principal.user_id:
            return SESSION_ENDED
        if now.role not in POLICY["live:view"] or sees_full_numbers(now) != full:
            return int(WSCloseCode.POLICY_VIOLATION)
        return None

    return await request.app[HUB].handle(
        request,
        redact=None if full else redact_numbers,
        check=check,
        user_id=principal.user_id,
    )


def setup_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.static("/static", STATIC_DIR, name="static", append_version=False),
        ]
    )
    # every route below is declared through an ApiRouter (roles, schemas, OpenAPI)
    for router in (
        live_pages,
        calls_api.health_router,
        calls_api.live_router,  # /api/v1/calls/summary, /live before /api/v1/calls/{uniqueid}
        calls_api.router,
        tickets_api.dispositions_router,
        customers_api.router,
        tickets_api.bookings_router,
        tickets_api.complaints_router,
        users_api.pages,
        users_api.router,
        users_api.me_router,
        users_api.users_router,
        users_api.audit_router,
        docs.router,
    ):
        app.add_routes(router.routes())
    app.add_routes(console_api.router.routes())
    from callcenter.console import cases  # the case desk page (GET /cases)

    app.add_routes(cases.router.routes())
    app.on_startup.append(docs.build_document)
