"""The API's own description: GET /api/openapi.json (built from every declared route) and the
browsable page GET /api/docs (vendored swagger-ui, no CDN)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from callcenter.web.api import ApiRouter, build_openapi, json_response
from callcenter.web.auth import SESSION_COOKIE

DOCS_HTML = Path(__file__).resolve().parent / "templates" / "api_docs.html"
OPENAPI = web.AppKey[dict[str, object]]("openapi_document")

router = ApiRouter(tag="docs", scope=None, in_schema=False)


async def build_document(app: web.Application) -> None:
    """on_startup: the router is frozen by then, so the document is built once, here."""
    app[OPENAPI] = build_openapi(app, cookie_name=SESSION_COOKIE)


@router.get("/api/openapi.json", roles=None, summary="OpenAPI 3.1 document")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI], headers={"Cache-Control": "no-cache"})


@router.get(
    "/api/docs",
    roles=None,
    summary="Browsable API documentation",
    response_content_type="text/html",
)
async def api_docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DOCS_HTML, headers={"Cache-Control": "no-cache"})
