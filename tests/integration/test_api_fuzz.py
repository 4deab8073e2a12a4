"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

The real app (create_app, SQLite) listens on a loopback port in a background thread; for every
operation in GET /api/openapi.json schemathesis generates requests from the schemas, sends them
signed in as an admin (session cookie + CSRF token), and checks: no undocumented 5xx, only
documented status codes and content types, bodies matching the response schemas.

Bounded: a fixed number of examples per operation, derandomised (the same cases every run).
Operations that would end the fuzzing session (sign-out) are left out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok
from users_support import add_user, make_app

from callcenter.web.keys import WEB_SESSIONS

T = TypeVar("T")
EXAMPLES = 15
SKIP = {
    ("POST", "/api/v1/auth/logout"),  # would end the session the fuzzer uses
}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


class ServerThread:
    """An aiohttp app on 127.0.0.1:<ephemeral> in its own event loop thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server")
        self.runner = web.AppRunner(app, handle_signals=False)
        self.port = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def start(self) -> str:
        self.thread.start()
        self.run(self._start())
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    def stop(self) -> None:
        try:
            self.run(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


def fuzzer(
    operation: Any,
    base: str,
    http: requests.Session,
    headers: dict[str, str],
    op_checks: list[Any],
) -> Callable[[], None]:
    """A bounded, derandomised hypothesis test of one operation."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base, session=http, headers=headers)
        case.validate_response(response, checks=op_checks)

    result: Callable[[], None] = fuzz
    return result


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    srv = ServerThread(make_app(sqlite_url, tmp_path))
    base = srv.start()
    try:
        yield srv, base
    finally:
        srv.stop()


def test_api_fuzz_no_5xx_and_schema_conformance(server: tuple[ServerThread, str]) -> None:
    srv, base = server
    admin = srv.run(add_user(srv.app, "fuzzadmin", "admin"))
    srv.run(add_user(srv.app, "fuzzagent", "agent", agent_interface="PJSIP/1001"))
    session = srv.run(srv.app[WEB_SESSIONS].create(admin.id, ip=None, user_agent="fuzz"))
    headers = {"Cookie": f"cc_session={session.cookie}", "X-CSRF-Token": session.csrf_token}

    document = requests.get(f"{base}/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=base)

    http = requests.Session()
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in SKIP:
            operations.append(operation)
    assert len(operations) >= 15, [op.label for op in operations]

    failures: list[str] = []
    for operation in operations:
        # /healthz documents its 503 (the PBX is absent here): status conformance covers it
        op_checks = CHECKS[1:] if operation.path == "/healthz" else CHECKS

        fuzz = fuzzer(operation, base, http, headers, op_checks)
        try:
            fuzz()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # collect per operation, report all at the end
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")

    # the session survived the fuzzing (nothing signed the fuzzer out by accident)
    me = http.get(f"{base}/api/v1/me", headers=headers, timeout=10)
    assert me.status_code == 200, me.text
    assert not failures, "\n\n".join(failures)


def test_fuzzer_would_notice_a_server_error() -> None:
    """The checks used above really fail on an undocumented 5xx (guard against a vacuous run)."""
    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/x": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    }
                }
            }
        },
    }
    schema = schemathesis.openapi.from_dict(document)
    result = next(iter(schema.get_all_operations()))
    assert isinstance(result, Ok)
    operation = result.ok()
    case = operation.Case()
    response = requests.Response()
    response.status_code = 500
    response._content = b'{"error": {}}'
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request("GET", "http://127.0.0.1/x").prepare()
    response.url = "http://127.0.0.1/x"
    with pytest.raises(BaseExceptionGroup) as info:
        case.validate_response(response, checks=CHECKS)
    assert "Server error" in str(info.value) and "Undocumented status code" in str(info.value)
