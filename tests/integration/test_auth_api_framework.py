"""callcenter.web.api on a small aiohttp app with the real middlewares: the role/scope/CSRF
wrapper, query/body/path parsing with 422 field messages, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from openapi_spec_validator import validate
from pydantic import BaseModel, Field
from yarl import URL

from callcenter.users.model import Principal
from callcenter.web.api import (
    ANY_SCOPE,
    PRINCIPAL,
    ApiRouter,
    Page,
    PageQuery,
    build_openapi,
    iter_specs,
    json_response,
    parse_body,
    parse_path,
    parse_query,
    require_principal,
)
from callcenter.web.middlewares import error_middleware

Client = TestClient[Any, Any]


class ThingQuery(PageQuery):
    status: list[Literal["new", "done"]] = Field(default_factory=list)
    since: datetime | None = None
    name: str | None = Field(None, max_length=5)


class Part(BaseModel):
    qty: int = Field(ge=1)


class ThingIn(BaseModel):
    title: str = Field(min_length=1)
    parts: list[Part] = Field(default_factory=list)


class ThingOut(BaseModel):
    id: int
    title: str


class ThingPath(BaseModel):
    thing_id: int = Field(ge=1)


router = ApiRouter(tag="things", scope="tickets")


@router.get(
    "/things", roles={"agent", "admin"}, query=ThingQuery, response=Page[ThingOut], summary="L"
)
async def list_things(request: web.Request) -> web.Response:
    q = parse_query(request, ThingQuery)
    items = [ThingOut(id=1, title=",".join(q.status) or "all")]
    return json_response(Page[ThingOut](items=items, total=1, limit=q.limit, offset=q.offset))


@router.post("/things", roles={"admin"}, body=ThingIn, response=ThingOut, status=201, summary="C")
async def create_thing(request: web.Request) -> web.Response:
    body = await parse_body(request, ThingIn)
    return json_response(ThingOut(id=7, title=body.title), status=201)


@router.get(
    "/things/{thing_id}", roles={"admin"}, path_params=ThingPath, response=ThingOut, summary="G"
)
async def get_thing(request: web.Request) -> web.Response:
    path = parse_path(request, ThingPath)
    return json_response(ThingOut(id=path.thing_id, title=require_principal(request).username))


@router.get("/whoami", roles={"agent", "admin"}, scope=ANY_SCOPE, summary="W")
async def whoami(request: web.Request) -> web.Response:
    return json_response({"user": require_principal(request).username})


@router.get("/session-only", roles={"admin"}, scope=None, summary="S")
async def session_only(request: web.Request) -> web.Response:
    return json_response({"ok": True})


@router.get("/page", roles={"admin"}, page=True, summary="P")
async def page(request: web.Request) -> web.Response:
    return web.Response(text="<p>hi</p>", content_type="text/html")


@router.get("/open", roles=None, summary="O")
async def open_route(request: web.Request) -> web.Response:
    return json_response({"open": True})


PRINCIPALS = {
    "admin": Principal(1, "root", "Root", "admin", csrf_token="tok"),
    "agent": Principal(2, "amy", "Amy", "agent", csrf_token="tok"),
    "token-admin": Principal(1, "root", "Root", "admin", token_id=5, scopes=frozenset()),
    "token-read": Principal(
        1, "root", "Root", "admin", token_id=6, scopes=frozenset({"tickets:read"})
    ),
    "token-write": Principal(
        1, "root", "Root", "admin", token_id=7, scopes=frozenset({"tickets:write"})
    ),
}


@web.middleware
async def fake_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[PRINCIPAL] = PRINCIPALS.get(request.headers.get("X-As", ""))
    return await handler(request)


def make_app() -> web.Application:
    app = web.Application(middlewares=[error_middleware, fake_auth])
    app.add_routes(router.routes())
    return app


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    return await aiohttp_client(make_app())


async def _err(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = (await resp.json())["error"]
    return body


async def test_roles_scopes_and_csrf(client: Client) -> None:
    assert (await _err(await client.get("/things"), 401))["code"] == "unauthenticated"
    assert (await client.get("/things", headers={"X-As": "agent"})).status == 200
    assert (await client.get("/open")).status == 200
    forbidden = await _err(await client.post("/things", json={}, headers={"X-As": "agent"}), 403)
    assert forbidden["code"] == "forbidden"
    # CSRF for sessions on unsafe methods: header or form field
    no_csrf = await client.post("/things", json={"title": "x"}, headers={"X-As": "admin"})
    assert (await _err(no_csrf, 403))["code"] == "csrf_failed"
    ok = await client.post(
        "/things", json={"title": "x"}, headers={"X-As": "admin", "X-CSRF-Token": "tok"}
    )
    assert ok.status == 201 and (await ok.json()) == {"id": 7, "title": "x"}
    # tokens: the route's scope (tickets:read for GET, tickets:write otherwise), no CSRF
    assert (await client.get("/things", headers={"X-As": "token-admin"})).status == 403
    assert (await client.get("/things", headers={"X-As": "token-read"})).status == 200
    assert (await client.get("/things", headers={"X-As": "token-write"})).status == 403
    posted = await client.post("/things", json={"title": "y"}, headers={"X-As": "token-write"})
    assert posted.status == 201
    assert (await client.get("/whoami", headers={"X-As": "token-admin"})).status == 200
    assert (await client.get("/session-only", headers={"X-As": "token-read"})).status == 403
    assert (await client.get("/session-only", headers={"X-As": "admin"})).status == 200


async def test_pages_redirect_anonymous_users_to_sign_in(client: Client) -> None:
    resp = await client.get("/page?x=1&y=2", allow_redirects=False)
    assert resp.status == 303
    target = URL(resp.headers["Location"])
    assert target.path == "/login" and target.query["next"] == "/page?x=1&y=2"
    assert (await client.get("/page", headers={"X-As": "agent"})).status == 403


async def test_query_parsing(client: Client) -> None:
    h = {"X-As": "agent"}
    body = await (await client.get("/things?status=new&status=done&limit=5", headers=h)).json()
    assert body == {
        "items": [{"id": 1, "title": "new,done"}],
        "total": 1,
        "limit": 5,
        "offset": 0,
    }
    err = await _err(
        await client.get(
            "/things",
            params={"limit": "0", "status": "odd", "since": "soon", "bogus": "1", "name": "long!!"},
            headers=h,
        ),
        422,
    )
    assert err["code"] == "validation_failed"
    assert set(err["fields"]) == {"limit", "status.0", "since", "bogus", "name"}
    twice = await _err(await client.get("/things?limit=1&limit=2", headers=h), 422)
    assert twice["fields"] == {"limit": "given more than once"}


async def test_body_and_path_parsing(client: Client) -> None:
    h = {"X-As": "token-write"}
    wrong_type = await client.post("/things", data="title=x", headers=h)
    assert (await _err(wrong_type, 415))["code"] == "unsupported_media_type"
    bad_json = await client.post(
        "/things", data="{", headers={**h, "Content-Type": "application/json"}
    )
    assert (await _err(bad_json, 422))["fields"] == {"__root__": "not valid JSON"}
    empty = await client.post("/things", data="", headers={**h, "Content-Type": "application/json"})
    assert (await _err(empty, 422))["fields"] == {"__root__": "a JSON object is required"}
    nested = await client.post("/things", json={"title": "", "parts": [{"qty": 0}]}, headers=h)
    assert set((await _err(nested, 422))["fields"]) == {"title", "parts.0.qty"}
    not_object = await client.post("/things", json=[1, 2], headers=h)
    assert (await _err(not_object, 422))["code"] == "validation_failed"

    admin = {"X-As": "admin"}
    assert (await (await client.get("/things/12", headers=admin)).json())["id"] == 12
    assert set((await _err(await client.get("/things/x", headers=admin), 422))["fields"]) == {
        "thing_id"
    }
    assert (await _err(await client.get("/things/0", headers=admin), 422))["code"] == (
        "validation_failed"
    )


def test_openapi_document_is_valid_and_complete() -> None:
    app = make_app()
    doc = build_openapi(app)
    validate(doc)  # OpenAPI 3.1 meta-schema
    paths = doc["paths"]
    assert "/page" not in paths  # HTML pages stay out
    listing = paths["/things"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"limit", "offset", "status", "since", "name"}
    assert params["limit"]["schema"]["maximum"] == 200 and not params["limit"]["required"]
    assert params["since"]["schema"] == {"format": "date-time", "title": "Since", "type": "string"}
    assert params["status"]["schema"]["type"] == "array"
    assert listing["security"] == [{"cookieAuth": []}, {"bearerAuth": ["tickets:read"]}]
    assert listing["x-roles"] == ["admin", "agent"]
    assert set(listing["responses"]) == {"200", "401", "403", "422"}
    page_ref = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page_schema = doc["components"]["schemas"][page_ref.rsplit("/", 1)[-1]]
    assert page_schema["properties"]["items"]["items"]["$ref"].endswith("/ThingOut")
    create = paths["/things"]["post"]
    assert create["requestBody"]["required"] is True
    assert set(create["responses"]) == {"201", "401", "403", "413", "415", "422"}
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert create["security"][1] == {"bearerAuth": ["tickets:write"]}
    one = paths["/things/{thing_id}"]["get"]
    assert one["parameters"][0]["in"] == "path" and one["parameters"][0]["required"] is True
    assert one["parameters"][0]["schema"]["type"] == "integer"
    assert "404" in one["responses"]
    assert paths["/open"]["get"]["security"] == []
    assert paths["/session-only"]["get"]["security"] == [{"cookieAuth": []}]
    assert paths["/whoami"]["get"]["security"] == [{"cookieAuth": []}, {"bearerAuth": []}]
    # every $ref resolves
    text = str(doc)
    for name in doc["components"]["schemas"]:
        assert name.replace("_", "").isalnum() or "-" in name
    assert "#/$defs" not in text


def test_every_route_declares_its_roles_or_is_public() -> None:
    with pytest.raises(ValueError, match="empty roles"):
        router.get("/nobody", roles=set(), summary="x")
    specs = [spec for _, spec in iter_specs(make_app())]
    assert all(spec is not None for spec in specs)
    assert {s.path for s in specs if s is not None and s.public} == {"/open"}
