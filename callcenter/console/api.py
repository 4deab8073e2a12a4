"""The agent console over HTTP: the page (GET /console), the screen-pop WebSocket
(GET /ws/agent) and the agent's own state (GET/POST /api/v1/agent/state)."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from callcenter.agents.model import AgentState
from callcenter.agents.notifier import agent_state_to_dict
from callcenter.asterisk.errors import AmiActionError, AmiError
from callcenter.console.model import AgentStateIn, AgentStateOut, QueueMemberOut
from callcenter.console.notifier import AGENT_CONTROL, SCREEN_POPS
from callcenter.console.service import DispositionRequired, MemberView
from callcenter.users.model import LANGUAGES, POLICY, Principal
from callcenter.web.api import ApiRouter, json_response, parse_body, require_principal
from callcenter.web.auth import check_same_origin, resolve_principal
from callcenter.web.errors import Conflict, ServiceUnavailable
from callcenter.web.hub import SESSION_ENDED, close_socket, transport_aborter
from callcenter.web.keys import LIVE_AGENTS

router = ApiRouter(tag="console", scope=None)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
CONSOLE_HTML = WEB_DIR / "templates" / "console.html"
I18N_DIR = WEB_DIR / "static" / "i18n"
ROLES = POLICY["console:use"]


class DispositionMissing(Conflict):
    code = "disposition_required"


class NoAgentInterface(Conflict):
    code = "no_agent_interface"


class PbxRefused(Conflict):
    code = "pbx_refused"


@cache
def _strings(language: str) -> dict[str, str]:
    data = json.loads((I18N_DIR / f"console.{language}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def _script_json(value: Any) -> str:
    # JSON inside <script type="application/json">: "</" and "<!--" must not appear raw
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def render_console(principal: Principal) -> str:
    language = principal.language if principal.language in LANGUAGES else "zh-CN"
    strings = _strings(language)
    boot = {
        "language": language,
        "csrf": principal.csrf_token or "",
        "user": {
            "id": principal.user_id,
            "username": principal.username,
            "display_name": principal.display_name,
            "role": principal.role,
            "agent_interface": principal.agent_interface,
        },
        "strings": strings,
    }
    page = CONSOLE_HTML.read_text(encoding="utf-8")
    return (
        page.replace("{{lang}}", html.escape(language))
        .replace("{{title}}", html.escape(strings.get("title", "Console")))
        .replace("{{boot}}", _script_json(boot))
    )


def _agent(request: web.Request, interface: str | None) -> AgentState | None:
    if interface is None or LIVE_AGENTS not in request.app:
        return None
    for agent in request.app[LIVE_AGENTS].agents():
        if agent.interface == interface:
            return agent
    return None


async def _state_out(request: web.Request, principal: Principal) -> AgentStateOut:
    interface = principal.agent_interface
    agent = _agent(request, interface)
    control = request.app[AGENT_CONTROL]
    pending = await control.outstanding(interface, principal.user_id) if interface else []
    if agent is None:
        return AgentStateOut(interface=interface, status="logged_out", pending_dispositions=pending)
    return AgentStateOut(
        interface=interface,
        status=agent.status,
        paused_reason=agent.paused_reason,
        since=agent.since.isoformat(),
        queues=[
            QueueMemberOut(queue=m.queue, paused=m.paused, paused_reason=m.paused_reason)
            for m in agent.queues
        ],
        pending_dispositions=pending,
    )


@router.get(
    "/console",
    roles=ROLES,
    summary="The agent console page",
    page=True,
    in_schema=False,
    response_content_type="text/html",
)
async def console_page(request: web.Request) -> web.Response:
    """The agent console (HTML), in the user's language."""
    principal = require_principal(request)
    return web.Response(
        text=render_console(principal),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


@router.get("/ws/agent", roles=ROLES, summary="Screen-pops of the signed-in agent", in_schema=False)
async def agent_socket(request: web.Request) -> web.StreamResponse:
    """WebSocket: `hello`, then `pop` frames (numbered per agent) and `state` frames, only for
    the signed-in user's own phone. Query `last_seq` + `epoch` replays missed pops."""
    principal = require_principal(request)
    check_same_origin(request)
    service = request.app[SCREEN_POPS]
    last_seq: int | None
    try:
        last_seq = int(request.query["last_seq"]) if "last_seq" in request.query else None
    except ValueError:
        last_seq = None
    epoch = request.query.get("epoch")
    ws = web.WebSocketResponse(heartbeat=25.0, max_msg_size=4096)
    await ws.prepare(request)
    abort = transport_aborter(request)
    if service.closing:
        await close_socket(
            ws, code=1001, message=b"server shutdown", abort=abort, bound=service.close_timeout
        )
        return ws
    interface = principal.agent_interface

    async def check() -> int | None:
        # the session is re-checked while the socket is open: sign-out, disabled user, role
        # or phone taken away all end the pops
        now = await resolve_principal(request)
        if now is None or now.user_id != principal.user_id:
            return SESSION_ENDED
        if now.role not in ROLES or now.agent_interface != interface:
            return int(WSCloseCode.POLICY_VIOLATION)
        return None

    conn = None
    if interface is None:  # a supervisor without a phone: no pops, but a valid socket
        await ws.send_str(json.dumps({"type": "hello", "epoch": service.epoch, "seq": 0}))
    else:
        agent = _agent(request, interface)
        conn = service.attach(
            ws,
            interface=interface,
            user_id=principal.user_id,
            last_seq=last_seq,
            epoch=epoch,
            state=agent_state_to_dict(agent) if agent is not None else None,
            abort=abort,
        )

    async def end(code: int, reason: bytes) -> None:
        if conn is not None:
            service.forget(conn)  # not one more pop for this tab
        await close_socket(ws, code=code, message=reason, abort=abort, bound=service.close_timeout)

    watched = service.recheck.watch(principal.user_id, check, end)  # no task of its own
    try:
        async for msg in ws:
            if conn is not None and msg.type is WSMsgType.TEXT and msg.data == "ping":
                conn.push('{"type":"pong"}')
    finally:
        service.recheck.unwatch(watched)
        if conn is not None:
            await service.detach(conn)
    return ws


@router.get(
    "/api/v1/agent/state",
    roles=ROLES,
    response=AgentStateOut,
    summary="The signed-in agent's state",
)
async def get_agent_state(request: web.Request) -> web.Response:
    """The state Asterisk last reported for the user's phone, and the calls still waiting for
    a disposition."""
    return json_response(await _state_out(request, require_principal(request)))


@router.post(
    "/api/v1/agent/state",
    roles=ROLES,
    body=AgentStateIn,
    response=AgentStateOut,
    errors=(409, 503),
    summary="Choose available / paused (with a reason) / wrap-up / logged out",
)
async def set_agent_state(request: web.Request) -> web.Response:
    """Applies the state to the user's queue membership in Asterisk (QueuePause with reason,
    QueueAdd, QueueRemove). 409 `disposition_required` while an answered call has no
    disposition (wrap-up cannot end), 409 `no_agent_interface` for a user without a phone."""
    principal = require_principal(request)
    body = await parse_body(request, AgentStateIn)
    interface = principal.agent_interface
    if interface is None:
        raise NoAgentInterface("this user has no phone (agent_interface) to take calls on")
    agent = _agent(request, interface)
    member = MemberView(
        queues=tuple(m.queue for m in agent.queues) if agent is not None else (),
        name=agent.name if agent is not None else principal.display_name,
        static=tuple(m.queue for m in agent.queues if m.membership == "static")
        if agent is not None
        else (),
    )
    try:
        await request.app[AGENT_CONTROL].set_state(
            interface=interface,
            user_id=principal.user_id,
            state=body.state,
            reason=body.reason,
            member=member,
        )
    except DispositionRequired as exc:
        raise DispositionMissing(
            "file a disposition for the last call before leaving wrap-up",
            fields={"calls": ",".join(exc.uniqueids)},
        ) from None
    except LookupError as exc:
        raise ServiceUnavailable(str(exc)) from None
    except AmiActionError as exc:
        raise PbxRefused(f"Asterisk refused: {exc}") from None
    except AmiError as exc:
        raise ServiceUnavailable(f"Asterisk: {exc}") from None
    return json_response(await _state_out(request, principal))
