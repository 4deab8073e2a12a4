"""The one routes table."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from callcenter.calls import api as calls_api
from callcenter.console import api as console_api
from callcenter.web.keys import HUB

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
INDEX_HTML = WEB_DIR / "templates" / "index.html"


async def index(request: web.Request) -> web.FileResponse:
    """GET /: the live page (calls, agents, queues, recent call log)."""
    return web.FileResponse(INDEX_HTML, headers={"Cache-Control": "no-cache"})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: live bus events, see callcenter.web.hub."""
    return await request.app[HUB].handle(request)


def setup_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.get("/", index, name="index"),
            web.get("/ws", websocket, name="ws"),
            web.get("/healthz", calls_api.healthz, name="healthz"),
            web.get("/api/v1/calls", calls_api.list_calls, name="calls"),
            # fixed paths before the {uniqueid} pattern
            web.get("/api/v1/calls/summary", calls_api.calls_summary, name="calls_summary"),
            web.get("/api/v1/calls/live", calls_api.live_calls, name="calls_live"),
            web.get("/api/v1/calls/{uniqueid}", calls_api.get_call, name="call"),
            web.get("/api/v1/agents", calls_api.list_agents, name="agents"),
            web.get("/api/v1/queues", calls_api.list_queues, name="queues"),
            web.static("/static", STATIC_DIR, name="static", append_version=False),
        ]
    )
    app.add_routes(console_api.router.routes())
