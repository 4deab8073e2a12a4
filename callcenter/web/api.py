"""The API framework: declare a route once, get validation, the role check and OpenAPI from it.

    router = ApiRouter(tag="customers")
    @router.get("/api/v1/customers", query=CustomerQuery, response=Page[CustomerOut],
                roles=POLICY["customers:read"], summary="List customers")
    async def list_customers(request: web.Request) -> web.Response:
        q = parse_query(request, CustomerQuery)
        ...
        return json_response(page)

Contract of the wrapper every decorated handler gets (`authorize`):
- `roles=None` means public; otherwise the principal the auth middleware put into
  `request[PRINCIPAL]` must exist (401 `unauthenticated`; HTML pages redirect to /login) and
  have one of `roles` (403 `forbidden`).
- API tokens also need the route's `scope` (default "<router scope>:read" for GET,
  "<router scope>:write" otherwise; `scope=None` on a route or router: sessions only).
- Browser sessions must send the session's CSRF token on POST/PUT/PATCH/DELETE: header
  `X-CSRF-Token` or form field `csrf_token` (403 `csrf_failed`).

`build_openapi(app)` walks the app's router, so every decorated route of every router is in the
document; undecorated routes are not (the role-matrix test fails on those).
"""

from __future__ import annotations

import hmac
import re
import types
import typing
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar, cast
from urllib.parse import quote

import pydantic_core
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaMode

from callcenter.users.model import Principal
from callcenter.web.errors import Forbidden, Unauthorized, UnsupportedMediaType, ValidationFailed
from callcenter.web.middlewares import validation_fields

__all__ = [
    "ANY_SCOPE",
    "PRINCIPAL",
    "ApiRouter",
    "CsrfFailed",
    "ErrorBody",
    "ErrorDetail",
    "Handler",
    "Page",
    "PageQuery",
    "RouteSpec",
    "build_openapi",
    "current_principal",
    "iter_specs",
    "json_response",
    "parse_body",
    "parse_path",
    "parse_query",
    "require_principal",
    "route_spec",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ANY_SCOPE: Final = "*"  # route scope any valid API token may use (e.g. GET /api/v1/me)
# the auth middleware sets it on every request (None = anonymous)
PRINCIPAL = web.RequestKey[Principal | None]("principal")
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_LIMIT: Final = 200
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")
_SPEC_ATTR = "__api_route_spec__"

_ERROR_TEXT: Final[Mapping[int, str]] = {
    400: "Bad request",
    401: "Not signed in (code `unauthenticated`)",
    403: "Role or token scope not allowed (`forbidden`), or CSRF token missing (`csrf_failed`)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "Body must be application/json",
    422: "Invalid input; `fields` maps each bad field to a message",
    429: "Too many attempts; see Retry-After",
    503: "A backend is unavailable",
}


class CsrfFailed(Forbidden):
    code = "csrf_failed"


# ------------------------------------------------------------------------------ shared schemas


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code")
    message: str
    fields: dict[str, str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error response: `{"error": {"code", "message", "fields"}}`."""

    error: ErrorDetail


class PageQuery(BaseModel):
    """Base for list queries: `limit` (1..200, default 50) and `offset`."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000_000)


class Page(BaseModel, Generic[T]):
    """One page of a list: `items`, the `total` matching, and the `limit`/`offset` asked for."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int
    offset: int


# ------------------------------------------------------------------------------ route specs


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Everything declared about one route (method + path)."""

    method: str
    path: str
    name: str
    tag: str
    summary: str
    description: str
    roles: frozenset[str] | None
    scope: str | None
    query: type[BaseModel] | None
    body: type[BaseModel] | None
    path_params: type[BaseModel] | None
    response: Any
    status: int
    errors: tuple[int, ...]
    page: bool
    in_schema: bool
    response_content_type: str
    extra_responses: Mapping[int, str] = field(default_factory=dict)

    @property
    def public(self) -> bool:
        return self.roles is None

    def path_param_names(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)


def route_spec(handler: object) -> RouteSpec | None:
    """The spec of a handler wrapped by ApiRouter, or None for a plain aiohttp handler."""
    spec = getattr(handler, _SPEC_ATTR, None)
    return spec if isinstance(spec, RouteSpec) else None


def iter_specs(app: web.Application) -> Iterator[tuple[web.AbstractRoute, RouteSpec | None]]:
    """Every route of `app` (HEAD duplicates skipped) with its spec, if it was declared."""
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        yield route, route_spec(route.handler)


# ------------------------------------------------------------------------------ principal


def current_principal(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


def require_principal(request: web.Request) -> Principal:
    principal = current_principal(request)
    if principal is None:
        raise Unauthorized("sign in first")
    return principal


async def authorize(request: web.Request, spec: RouteSpec) -> None:
    """The role, scope and CSRF check for one request (see the module docstring)."""
    if spec.roles is None:
        return
    principal = current_principal(request)
    if principal is None:
        if spec.page and request.method == "GET":
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
        raise Unauthorized("sign in first")
    if principal.role not in spec.roles:
        raise Forbidden(f"role {principal.role!r} may not {spec.method} {spec.path}")
    if principal.via_token:
        if spec.scope is None:
            raise Forbidden("this route is not available to API tokens")
        if spec.scope != ANY_SCOPE and spec.scope not in principal.scopes:
            raise Forbidden(f"token lacks scope {spec.scope!r}")
    elif request.method in UNSAFE_METHODS:
        await check_csrf(request, principal)


async def check_csrf(request: web.Request, principal: Principal) -> None:
    """A cookie-authenticated unsafe request must echo its session's CSRF token."""
    expected = principal.csrf_token
    sent = request.headers.get(CSRF_HEADER)
    if not sent and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailed(f"missing or wrong CSRF token (send header {CSRF_HEADER})")


# ------------------------------------------------------------------------------ router


class ApiRouter:
    """Collects decorated handlers of one domain; `routes()` gives them to aiohttp.

    `scope`: the token-scope resource of this router's routes (default: `tag`); None means the
    routes are for browser sessions only. `in_schema=False` keeps a router (HTML pages,
    WebSocket) out of the OpenAPI document.
    """

    def __init__(
        self, *, tag: str, scope: str | Literal[False] | None = False, in_schema: bool = True
    ) -> None:
        self.tag = tag
        self.scope_resource: str | None = tag if scope is False else scope
        self.in_schema = in_schema
        self._routes: list[tuple[RouteSpec, Handler]] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        roles: Collection[str] | None,
        summary: str,
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        path_params: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        errors: Collection[int] = (),
        scope: str | Literal[False] | None = False,
        name: str | None = None,
        description: str | None = None,
        page: bool = False,
        in_schema: bool | None = None,
        response_content_type: str = "application/json",
        extra_responses: Mapping[int, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a route. `roles` is required (None = public), so no route forgets it."""
        method = method.upper()
        if roles is not None and not roles:
            raise ValueError(f"{method} {path}: empty roles; use roles=None for a public route")
        if scope is False:
            resource = self.scope_resource
            verb = "read" if method in ("GET", "HEAD") else "write"
            resolved_scope = f"{resource}:{verb}" if resource else None
        else:
            resolved_scope = scope

        def decorate(handler: Handler) -> Handler:
            spec = RouteSpec(
                method=method,
                path=path,
                name=name or handler.__name__,
                tag=self.tag,
                summary=summary,
                description=description or (handler.__doc__ or "").strip(),
                roles=None if roles is None else frozenset(roles),
                scope=resolved_scope,
                query=query,
                body=body,
                path_params=path_params,
                response=response,
                status=status,
                errors=tuple(sorted(set(errors))),
                page=page,
                in_schema=(self.in_schema and not page) if in_schema is None else in_schema,
                response_content_type=response_content_type,
                extra_responses=dict(extra_responses or {}),
            )

            async def wrapper(request: web.Request) -> web.StreamResponse:
                await authorize(request, spec)
                return await handler(request)

            wrapper.__name__ = handler.__name__
            wrapper.__qualname__ = handler.__qualname__
            wrapper.__doc__ = handler.__doc__
            wrapper.__module__ = handler.__module__
            setattr(wrapper, _SPEC_ATTR, spec)
            self._routes.append((spec, wrapper))
            return wrapper

        return decorate

    def get(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kwargs)

    @property
    def specs(self) -> list[RouteSpec]:
        return [spec for spec, _ in self._routes]

    def routes(self) -> list[web.RouteDef]:
        """aiohttp route definitions, in declaration order (declare fixed paths before
        `{param}` patterns that would match them)."""
        return [
            web.RouteDef(spec.method, spec.path, handler, {"name": f"{self.tag}.{spec.name}"})
            for spec, handler in self._routes
        ]


# ------------------------------------------------------------------------------ parsing


def _is_multi(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_multi(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return origin in (list, tuple, set, frozenset)


def _raise_validation(exc: ValidationError, message: str) -> typing.NoReturn:
    fields = validation_fields(exc)
    if "__root__" in fields:
        fields["__root__"] = fields["__root__"].removeprefix("Value error, ")
    raise ValidationFailed(message, fields=fields) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query string as `model` (list-typed fields take repeated keys); 422 otherwise."""
    multi = {name for name, f in model.model_fields.items() if _is_multi(f.annotation)}
    raw: dict[str, Any] = {}
    for name in set(request.query):
        values = request.query.getall(name)
        if name in multi:
            raw[name] = values
        elif len(values) > 1:
            raise ValidationFailed("invalid query", fields={name: "given more than once"})
        else:
            raw[name] = values[0]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        _raise_validation(exc, "invalid query")


def parse_path(request: web.Request, model: type[M]) -> M:
    """The path parameters ({name} in the route) as `model`; 422 otherwise."""
    try:
        return model.model_validate(dict(request.match_info))
    except ValidationError as exc:
        _raise_validation(exc, "invalid path parameter")


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body as `model`: 415 unless application/json, 422 with field messages."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()
    if not raw.strip():
        raise ValidationFailed("empty body", fields={"__root__": "a JSON object is required"})
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise ValidationFailed("invalid JSON", fields={"__root__": "not valid JSON"}) from None
        _raise_validation(exc, "invalid body")


def json_response(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response from pydantic models, lists/dicts of them, dataclasses or plain data."""
    return web.Response(
        body=pydantic_core.to_json(value),
        status=status,
        content_type="application/json",
        headers=headers,
    )


# ------------------------------------------------------------------------------ OpenAPI


def _strip_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    # a query/path parameter cannot be JSON null: absent means "not given"
    schema = dict(schema)
    options = schema.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1 and len(rest) < len(options):
            schema.pop("anyOf")
            schema.update(rest[0])
    if schema.get("default", ...) is None:
        schema.pop("default")
    return schema


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return cast(Mapping[str, Any], defs[ref.rsplit("/", 1)[-1]])
    return schema


def _error_response(text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def build_openapi(
    app: web.Application | Sequence[RouteSpec],
    *,
    title: str = "callcenter API",
    version: str = "1",
    cookie_name: str = "cc_session",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every declared route of `app` that is in the schema."""
    if isinstance(app, web.Application):
        specs = [s for _, s in iter_specs(app) if s is not None and s.in_schema]
    else:
        specs = [s for s in app if s.in_schema]
    inputs: list[tuple[Any, JsonSchemaMode, TypeAdapter[Any]]] = [
        ("ErrorBody", "serialization", TypeAdapter(ErrorBody))
    ]
    for i, spec in enumerate(specs):
        for kind, model, mode in (
            ("query", spec.query, "validation"),
            ("body", spec.body, "validation"),
            ("path", spec.path_params, "validation"),
            ("response", spec.response, "serialization"),
        ):
            if model is not None:
                inputs.append(((i, kind), cast(JsonSchemaMode, mode), TypeAdapter(model)))
    schemas, top = TypeAdapter.json_schemas(inputs, ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = dict(top.get("$defs", {}))

    paths: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(specs):
        op = _operation(i, spec, schemas, defs)
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", spec.path)
        paths.setdefault(path, {})[spec.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Sign in with POST /api/v1/auth/login (cookie session; send the CSRF token "
                "from the login response or GET /api/v1/me as X-CSRF-Token on unsafe "
                "methods) or use an API token as `Authorization: Bearer <token>`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": cookie_name},
                "bearerAuth": {"type": "http", "scheme": "bearer"},
            },
        },
        "tags": sorted(({"name": t} for t in {s.tag for s in specs}), key=lambda t: t["name"]),
    }


def _operation(
    i: int, spec: RouteSpec, schemas: Mapping[Any, Any], defs: Mapping[str, Any]
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{spec.tag}.{spec.name}",
        "tags": [spec.tag],
        "summary": spec.summary,
    }
    if spec.description:
        op["description"] = spec.description
    parameters: list[dict[str, Any]] = []
    path_props: Mapping[str, Any] = {}
    if spec.path_params is not None:
        path_props = _resolve(schemas[((i, "path"), "validation")], defs).get("properties", {})
    for name in spec.path_param_names():
        schema = _strip_nullable(path_props.get(name, {"type": "string"}))
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if spec.query is not None:
        qschema = _resolve(schemas[((i, "query"), "validation")], defs)
        required = set(qschema.get("required", []))
        for name, prop in qschema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": _strip_nullable(prop),
            }
            if "description" in prop:
                param["description"] = prop["description"]
            parameters.append(param)
    if parameters:
        op["parameters"] = parameters
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[((i, "body"), "validation")]}},
        }
    responses: dict[str, Any] = {}
    if spec.status == 204 or spec.response is None:
        responses[str(spec.status)] = {"description": "Done"}
    else:
        responses[str(spec.status)] = {
            "description": "OK",
            "content": {
                spec.response_content_type: {"schema": schemas[((i, "response"), "serialization")]}
            },
        }
    codes = set(spec.errors)
    if spec.roles is not None:
        codes |= {401, 403}
    if spec.query is not None or spec.body is not None or spec.path_param_names():
        codes.add(422)
    if spec.path_param_names():
        codes.add(404)
    if spec.body is not None:
        codes |= {413, 415}
    for code in sorted(codes):
        responses[str(code)] = _error_response(_ERROR_TEXT.get(code, "Error"))
    if 429 in codes:
        responses["429"]["headers"] = {
            "Retry-After": {
                "description": "seconds until another attempt may succeed",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    for code, text in spec.extra_responses.items():
        responses[str(code)] = {"description": text}
    op["responses"] = responses
    if spec.roles is None:
        op["security"] = []
    else:
        op["security"] = [{"cookieAuth": []}] + (
            [{"bearerAuth": [] if spec.scope == ANY_SCOPE else [spec.scope]}] if spec.scope else []
        )
        op["x-roles"] = sorted(spec.roles)
        if spec.scope:
            op["x-token-scope"] = spec.scope
    return op
