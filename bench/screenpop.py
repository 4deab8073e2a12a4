"""Screen-pop latency and memory per connected agent (see bench/README.md, "Screen-pop").

    python bench/screenpop.py [--agents 500] [--calls 300] [--background 3700] [--rate 10]

Server process: the real app (`create_app`: AMI client, event pipeline, bus, ScreenPopService,
auth, SQLite) with the emulator embedded; a tap (a TCP relay between the emulator's AMI server
and our AMI client) notes when each `Event: AgentConnect` block leaves the emulator. A bare
aiohttp WebSocket fan-out (the baseline) gets a frame of the same size for the same agent
straight from the tap, in the same process, under the same load.
Client process: `--agents` WebSocket clients on /ws/agent (each signed in as its own agent)
plus as many on the baseline; it notes when each answered pop arrives. Both processes read
CLOCK_MONOTONIC, so the latencies are tap -> frame arrival across processes.
Background: `--background` AMI events/s (RTCPSent/RTCPReceived/DeviceStateChange/
ContactStatus, what a busy Asterisk sends besides call events) published by the emulator's
AMI server while the calls run; our AMI client must frame and decode every one of them.
Memory: RSS and tracemalloc of the server process before/after the idle clients connect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, DummyCookieJar, TCPConnector, WSMsgType, web  # noqa: E402

BENCH_DID = "5552000"
BENCH_QUEUE = "bench"


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


# ------------------------------------------------------------------------------ the AMI tap


@dataclass
class Tap:
    """TCP relay emulator -> AMI client; notes when each AgentConnect block passes."""

    upstream: tuple[str, int]
    on_connect: Callable[[str, str, float], None]
    seen: dict[str, float] = field(default_factory=dict)
    server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pump_up() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    up_writer.write(data)
            up_writer.close()

        async def pump_down() -> None:
            tail = b""
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    t = now()
                    writer.write(data)  # forward first: the tap adds no parse time
                    if b"AgentConnect" in data or b"AgentConnect" in tail + data[:32]:
                        tail = self._scan(tail + data, t)
                    else:
                        tail = (tail + data)[-64:]
            writer.close()

        await asyncio.gather(pump_up(), pump_down())

    def _scan(self, buf: bytes, t: float) -> bytes:
        blocks = buf.split(b"\r\n\r\n")
        for block in blocks[:-1]:
            start = block.find(b"Event: AgentConnect\r\n")
            if start < 0:
                continue
            fields = {}
            for line in block[start:].split(b"\r\n"):
                k, _, v = line.partition(b": ")
                fields[k.decode()] = v.decode("utf-8", "replace")
            uid, iface = fields.get("Uniqueid", ""), fields.get("Interface", "")
            if uid and uid not in self.seen:
                self.seen[uid] = t
                self.on_connect(iface, uid, t)
        return blocks[-1][-4096:]


# ------------------------------------------------------------------------------ baseline


class Baseline:
    """A bare aiohttp WebSocket fan-out: /ws?agent=<interface>; `send` writes one frame."""

    def __init__(self) -> None:
        self.clients: dict[str, set[web.WebSocketResponse]] = {}
        self.sending: set[asyncio.Future[None]] = set()
        self.app = web.Application()
        self.app.router.add_get("/ws", self.handle)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=25.0)
        await ws.prepare(request)
        agent = request.query.get("agent", "")
        self.clients.setdefault(agent, set()).add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            self.clients[agent].discard(ws)
        return ws

    def send(self, interface: str, frame: str) -> None:
        for ws in list(self.clients.get(interface, ())):
            task = asyncio.ensure_future(ws.send_str(frame))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)


# ------------------------------------------------------------------------------ client process


def client_main(conn: Connection) -> None:
    asyncio.run(_client(conn))


async def _client(conn: Connection) -> None:
    arrivals: dict[str, dict[str, float]] = {"app": {}, "base": {}}
    frames = {"app": 0, "base": 0}
    loop = asyncio.get_running_loop()
    sockets: dict[str, list[Any]] = {"app": [], "base": []}
    readers: dict[str, list[asyncio.Task[None]]] = {"app": [], "base": []}
    session = ClientSession(connector=TCPConnector(limit=0), cookie_jar=DummyCookieJar())

    async def reader(ws: Any, kind: str) -> None:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            t = now()
            frames[kind] += 1
            if kind == "app":
                if '"answered"' not in msg.data:
                    continue
                data = json.loads(msg.data)
                if data.get("type") == "pop" and data["pop"]["kind"] == "answered":
                    arrivals["app"].setdefault(data["pop"]["uniqueid"], t)
            else:
                arrivals["base"].setdefault(json.loads(msg.data)["uniqueid"], t)

    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "connect_app":
            _, url, cookies = cmd
            for cookie in cookies:
                ws = await session.ws_connect(
                    url, headers={"Cookie": f"cc_session={cookie}"}, autoping=True
                )
                sockets["app"].append(ws)
                readers["app"].append(asyncio.create_task(reader(ws, "app")))
            conn.send(("connected", len(cookies)))
        elif cmd[0] == "connect_base":
            _, url, agents = cmd
            for agent in agents:
                ws = await session.ws_connect(f"{url}?agent={agent}")
                sockets["base"].append(ws)
                readers["base"].append(asyncio.create_task(reader(ws, "base")))
            conn.send(("connected", len(agents)))
        elif cmd[0] == "close":  # the last `count` sockets of a kind
            _, kind, count = cmd
            for ws in sockets[kind][-count:]:
                await ws.close()
            for t in readers[kind][-count:]:
                t.cancel()
            del sockets[kind][-count:], readers[kind][-count:]
            conn.send(("closed", count))
        elif cmd[0] == "results":
            conn.send(("results", arrivals, frames))
        elif cmd[0] == "stop":
            for kind in sockets:
                for ws in sockets[kind]:
                    await ws.close()
                for t in readers[kind]:
                    t.cancel()
            await session.close()
            conn.send(("stopped",))
            return


# ------------------------------------------------------------------------------ server side


async def ask(conn: Connection, *cmd: Any) -> Any:
    conn.send(cmd)
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[k]


async def background(server: Any, rate: int, stop: asyncio.Event) -> int:
    """`rate` events/s on the emulator's AMI server, in 10 ms batches."""
    kinds = [
        (
            "RTCPSent",
            "reporting",
            [("Channel", "PJSIP/trunk-0000{n}"), ("SSRC", "0x{n:08x}"), ("PT", "200(SR)")],
        ),
        ("RTCPReceived", "reporting", [("Channel", "PJSIP/1001-0000{n}"), ("PT", "201(RR)")]),
        ("DeviceStateChange", "call", [("Device", "PJSIP/{n}"), ("State", "NOT_INUSE")]),
        ("ContactStatus", "system", [("URI", "sip:{n}@10.0.0.9"), ("ContactStatus", "Reachable")]),
    ]
    sent = 0
    per_batch = max(1, rate // 100)
    next_at = now()
    while not stop.is_set():
        for _ in range(per_batch):
            name, klass, fields = kinds[sent % len(kinds)]
            server.publish(name, klass, [(k, v.format(n=sent % 9973)) for k, v in fields])
            sent += 1
        next_at += 0.01
        await asyncio.sleep(max(0.0, next_at - now()))
    return sent


async def make_users(app: web.Application, agents: list[str]) -> list[str]:
    """One agent user per interface (cheap hashes: this is not a password bench) + a session
    each; returns the session cookies."""
    from argon2 import PasswordHasher

    from callcenter.app import SESSIONS
    from callcenter.users.repository import UserRepository
    from callcenter.users.service import Passwords
    from callcenter.web.keys import WEB_SESSIONS

    users = UserRepository(
        session_factory=app[SESSIONS],
        passwords=Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)),
    )
    cookies = []
    for i, iface in enumerate(agents):
        user = await users.create(
            username=f"bench{i:04d}",
            password="bench-password-1",
            role="agent",
            agent_interface=iface,
            language="en",
        )
        new = await app[WEB_SESSIONS].create(user.id, ip="127.0.0.1", user_agent="bench")
        cookies.append(new.cookie)
    return cookies


async def measure_idle(
    conn: Connection, what: str, count: int, connect: Callable[[], Awaitable[Any]]
) -> dict[str, float]:
    """Server memory per idle connection: connect `count` clients once and close them (so
    one-time costs - code paths, caches, database pages of their sign-ins, allocator arenas -
    are paid), then connect them again and measure that second step."""
    await connect()
    await asyncio.sleep(0.5)
    await ask(conn, "close", what, count)
    await asyncio.sleep(0.5)
    for _ in range(3):
        gc.collect()
    tracemalloc.start()
    rss0 = rss_bytes()
    snap0 = tracemalloc.take_snapshot()
    await connect()
    await asyncio.sleep(1.0)
    for _ in range(3):
        gc.collect()
    rss1 = rss_bytes()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    traced = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    if os.environ.get("SCREENPOP_MEMORY_TOP"):
        for stat in snap1.compare_to(snap0, "lineno")[:15]:
            print(f"  {what}: {stat.size_diff / count:8.0f} B/conn  {stat.traceback}", flush=True)
    return {
        "rss_per_conn": (rss1 - rss0) / count,
        "traced_per_conn": traced / count,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import callcenter.pipeline as pipeline_module
    from callcenter.app import AMI_ADDRESS, SESSIONS, create_app, start_site
    from callcenter.asterisk.events import AgentConnected, AmiEvent, decode_event
    from callcenter.asterisk.message import AmiMessage
    from callcenter.config import Settings
    from callcenter.console.notifier import SCREEN_POPS
    from callcenter.customers.repository import CustomerRepository
    from callcenter.pbxsim.callers import CallerModel
    from callcenter.pbxsim.emulator import Emulator, EmulatorConfig, Step
    from callcenter.pbxsim.queues import AgentProfile, QueueConfig

    tmp = Path(tempfile.mkdtemp(prefix="screenpop-"))
    agents = [f"PJSIP/{1001 + i}" for i in range(args.agents)]
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        flows_dir=ROOT / "ivr_flows",
        agi_port=0,
        ami_secret="bench-secret",
        log_level="WARNING",
    )
    base = Baseline()
    pad = "x" * args.frame_bytes

    def baseline_frame(iface: str, uid: str, t: float) -> None:
        base.send(iface, json.dumps({"uniqueid": uid, "interface": iface, "pad": pad}))

    holder: dict[str, Any] = {}

    class Pbx:
        def __init__(self, host: str, port: int) -> None:
            cfg = EmulatorConfig(
                ami_users={settings.ami_username: "bench-secret"},
                agi_host=host,
                agi_port=port,
                queues=[
                    QueueConfig(BENCH_QUEUE, strategy="rrmemory", member_delay=0.05, record=False)
                ],
                agents=[
                    AgentProfile(
                        iface,
                        f"Agent {iface[-4:]}",
                        answer_probability=1.0,
                        answer_delay=(0.2, 0.6),
                        talk_time=(1.0, 3.0),
                    )
                    for iface in agents
                ],
                tts=False,
            )
            self.emu = Emulator(config=cfg)
            self.emu.dialplan.add(
                "from-trunk",
                BENCH_DID,
                [Step("Answer"), Step("Queue", f"{BENCH_QUEUE},t,,,300"), Step("Hangup")],
            )
            holder["emu"] = self.emu
            self.tap: Tap | None = None

        async def start(self) -> tuple[str, int]:
            address = await self.emu.start()
            self.tap = Tap(upstream=address, on_connect=baseline_frame)
            holder["tap"] = self.tap
            return await self.tap.start()

        async def stop(self) -> None:
            if self.tap is not None:
                await self.tap.close()
            await self.emu.stop()

    app = create_app(settings, emulator=Pbx)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = await start_site(runner, "127.0.0.1", 0)
    base_runner = web.AppRunner(base.app, handle_signals=False)
    await base_runner.setup()
    base_port = await start_site(base_runner, "127.0.0.1", 0)
    print(f"app on :{port}, AMI via tap {app[AMI_ADDRESS]}, baseline on :{base_port}", flush=True)

    # probes (bench only): when the pipeline decodes AgentConnect, and its pop the service
    stages: dict[str, dict[str, float]] = {"pipeline": {}, "service": {}}
    to_decode = decode_event

    def probe_decode(msg: AmiMessage) -> AmiEvent | None:
        event = to_decode(msg)
        if type(event) is AgentConnected:
            stages["pipeline"].setdefault(event.uniqueid, now())
        return event

    setattr(pipeline_module, "decode_event", probe_decode)  # noqa: B010 - the module's global
    service = app[SCREEN_POPS]
    to_service = service.feed

    def probe_feed(payload: dict[str, Any]) -> None:
        if payload.get("type") == "agent.answered":
            stages["service"].setdefault(str(payload.get("uniqueid")), now())
        to_service(payload)

    service.feed = probe_feed  # type: ignore[method-assign]

    customers = CustomerRepository(session_factory=app[SESSIONS])
    for i in range(50):  # half the callers are in the archive
        await customers.create(
            name=f"Customer {i}",
            numbers=[f"1380013{i:04d}"],
            tier="key" if i % 5 == 0 else "normal",
        )
    # warm-up agents (phones outside the queue): connected first, so one-time costs (code paths,
    # caches, the database pool) are not counted as per-connection memory
    warm = [f"PJSIP/{9001 + i}" for i in range(args.warmup)]
    cookies = await make_users(app, agents + warm)
    warm_cookies, cookies = cookies[len(agents) :], cookies[: len(agents)]
    print(f"{len(cookies)} agent users signed in (+{len(warm)} for warm-up)", flush=True)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=client_main, args=(child,), daemon=True)
    proc.start()
    try:
        if warm:
            await ask(parent, "connect_app", f"http://127.0.0.1:{port}/ws/agent", warm_cookies)
            await ask(parent, "connect_base", f"http://127.0.0.1:{base_port}/ws", warm)
        mem_app = await measure_idle(
            parent,
            "app",
            len(cookies),
            lambda: ask(parent, "connect_app", f"http://127.0.0.1:{port}/ws/agent", cookies),
        )
        mem_base = await measure_idle(
            parent,
            "base",
            len(agents),
            lambda: ask(parent, "connect_base", f"http://127.0.0.1:{base_port}/ws", agents),
        )
        print(f"connected: {app[SCREEN_POPS].connection_count} console sockets", flush=True)

        stop = asyncio.Event()
        emu = holder["emu"]
        bg = asyncio.create_task(background(emu.server, args.background, stop))
        bg_start = now()
        calls = []
        for i in range(args.calls):
            caller = CallerModel(
                number=f"1380013{i % 100:04d}", name=f"Caller {i}", did=BENCH_DID, talk_limit=2.0
            )
            calls.append(emu.place_call(caller))
            await asyncio.sleep(1.0 / args.rate)
        await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(1.0)
        await app[SCREEN_POPS].drain()
        await asyncio.sleep(0.5)
        stop.set()
        bg_sent = await bg
        bg_rate = bg_sent / (now() - bg_start)
        _, arrivals, frames = await ask(parent, "results")
        await ask(parent, "stop")
    finally:
        proc.join(5)
        await base_runner.cleanup()
        await runner.cleanup()

    tap_times: dict[str, float] = holder["tap"].seen
    app_lat = [
        (arrivals["app"][u] - t) * 1000 for u, t in tap_times.items() if u in arrivals["app"]
    ]
    base_lat = [
        (arrivals["base"][u] - t) * 1000 for u, t in tap_times.items() if u in arrivals["base"]
    ]

    def segment(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
        values = [(end[u] - t) * 1000 for u, t in start.items() if u in end]
        return {"p50": pct(values, 50), "p99": pct(values, 99)}

    breakdown = {
        "tap->pipeline": segment(tap_times, stages["pipeline"]),
        "pipeline->service": segment(stages["pipeline"], stages["service"]),
        "service->client": segment(stages["service"], arrivals["app"]),
    }
    return {
        "breakdown": breakdown,
        "agents": args.agents,
        "calls": args.calls,
        "agent_connects": len(tap_times),
        "pops_matched": len(app_lat),
        "baseline_matched": len(base_lat),
        "background_rate": round(bg_rate),
        "frames": frames,
        "app_ms": {
            "p50": pct(app_lat, 50),
            "p99": pct(app_lat, 99),
            "max": max(app_lat or [0]),
            "mean": statistics.fmean(app_lat) if app_lat else float("nan"),
        },
        "base_ms": {
            "p50": pct(base_lat, 50),
            "p99": pct(base_lat, 99),
            "max": max(base_lat or [0]),
        },
        "mem_app": mem_app,
        "mem_base": mem_base,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=500)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rate", type=float, default=10.0, help="calls placed per second")
    p.add_argument("--background", type=int, default=3700, help="background AMI events/s")
    p.add_argument("--frame-bytes", type=int, default=1500, help="baseline frame padding")
    p.add_argument("--warmup", type=int, default=50, help="connections made before measuring")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("CALLCENTER_LOG_LEVEL", "WARNING")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    a, b = result["app_ms"], result["base_ms"]
    print(
        f"\n{result['agents']} agents connected, {result['calls']} calls, "
        f"{result['agent_connects']} AgentConnect seen, {result['pops_matched']} answered pops "
        f"matched; background {result['background_rate']} AMI events/s "
        f"(+ the calls' own events)"
    )
    print(f"{'path':<34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(f"{'app: AMI->pipeline->bus->WS':<34} {a['p50']:8.2f} {a['p99']:8.2f} {a['max']:8.2f}")
    print(f"{'baseline: tap->bare aiohttp WS':<34} {b['p50']:8.2f} {b['p99']:8.2f} {b['max']:8.2f}")
    for name, seg in result["breakdown"].items():
        print(f"{'  ' + name:<34} {seg['p50']:8.2f} {seg['p99']:8.2f}")
    ma, mb = result["mem_app"], result["mem_base"]
    print(
        f"memory per idle agent: app RSS {ma['rss_per_conn'] / 1024:.1f} KiB, traced "
        f"{ma['traced_per_conn'] / 1024:.1f} KiB; baseline RSS {mb['rss_per_conn'] / 1024:.1f} "
        f"KiB, traced {mb['traced_per_conn'] / 1024:.1f} KiB"
    )


if __name__ == "__main__":
    main()
