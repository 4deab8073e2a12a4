"""The error middleware: every failure becomes {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from callcenter.web.errors import CallNotFound, Conflict, TooManyRequests, ValidationFailed
from callcenter.web.middlewares import error_middleware


class _Body(BaseModel):
    n: int = Field(ge=1)


async def _not_found(request: web.Request) -> web.Response:
    raise CallNotFound("no call 1.2", fields={})


async def _invalid(request: web.Request) -> web.Response:
    raise ValidationFailed("bad query", fields={"limit": "must be at most 500"})


async def _pydantic(request: web.Request) -> web.Response:
    _Body.model_validate({"n": request.query.get("n", "0")})
    return web.json_response({"ok": True})


async def _limited(request: web.Request) -> web.Response:
    raise TooManyRequests("slow down", retry_after=7)


async def _rule(request: web.Request) -> web.Response:
    raise Conflict("already taken", code="already_owned")


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals")


def _app() -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/nf", _not_found)
    app.router.add_get("/invalid", _invalid)
    app.router.add_get("/pyd", _pydantic)
    app.router.add_get("/limited", _limited)
    app.router.add_get("/rule", _rule)
    app.router.add_get("/boom", _boom)
    return app


async def _error(resp: Any) -> dict[str, Any]:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    err: dict[str, Any] = body["error"]
    return err


async def test_typed_not_found_keeps_its_code(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/nf")
    assert resp.status == 404
    err = await _error(resp)
    assert err["code"] == "call_not_found"
    assert err["message"] == "no call 1.2"


async def test_rate_limited_says_when_to_retry(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/limited")
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await _error(resp))["code"] == "rate_limited"


async def test_a_rule_code_keeps_the_class_status(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/rule")
    assert resp.status == 409
    assert (await _error(resp))["code"] == "already_owned"
    assert Conflict("x").code == "conflict"


async def test_validation_failed_lists_fields(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/invalid")
    assert resp.status == 422
    err = await _error(resp)
    assert err == {
        "code": "validation_failed",
        "message": "bad query",
        "fields": {"limit": "must be at most 500"},
    }


async def test_pydantic_errors_become_422(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/pyd", params={"n": "x"})
    assert resp.status == 422
    err = await _error(resp)
    assert err["code"] == "validation_failed"
    assert "n" in err["fields"]
    ok = await client.get("/pyd", params={"n": "3"})
    assert ok.status == 200


async def test_unknown_route_and_method(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await _error(resp))["code"] == "route_not_found"
    resp = await client.post("/nf")
    assert resp.status == 405
    assert (await _error(resp))["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_unexpected_exception_is_500_without_details(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/boom")
    assert resp.status == 500
    err = await _error(resp)
    assert err["code"] == "internal_error"
    assert "secret" not in err["message"]
