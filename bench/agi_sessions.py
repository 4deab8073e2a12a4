"""FastAGI benchmark: 1,000 concurrent IVR sessions against (a) our AgiServer running
ivr_flows/hotline.yaml, (b) panoramisk 1.4's fast_agi.Application running the same
hotline.yaml through the same flow engine (the goal's baseline: only the server differs) and
(c) panoramisk running a hand-coded handler that sends the same command sequence without any
flow engine (a stricter baseline: the flow engine's work is charged to ours only); with
--agi-only also (d) our AgiServer running that hand-coded handler (the AGI layer without the
flow engine); with --floor also (e) the floor: the least any FastAGI server must do for that
flow (raw non-blocking sockets on the loop's reader callbacks, canned command bytes, replies
checked only for "200 result="), no framework at all.

Each server runs in its own process; the load comes from the emulator's FastAGI client
(`callcenter.pbxsim.agi_client.run_agi_call`) in --client-procs other processes, with the
simulated clock sped up so prompts take no real time. Rounds alternate between the servers so
that background load on the machine hits all alike; medians are reported. Per server:

* completed calls/s (wall clock, all sessions started at once),
* server CPU ms per call (process_time of the server process; kernel part from getrusage; time
  in the garbage collector from gc.callbacks), how busy the server was, the clients' CPU,
* with --server-cpu, completed calls/s again with every server capped at that many CPUs: the
  load generator shares this machine's CPUs, so uncapped calls/s is bound by both; capped, the
  server alone is what limits it (as when Asterisk runs on its own host),
* for our server, the p50/p99/max of the time between a reply having been parsed by our
  server and our next command being written (the `timing` hook of AgiServer, switched on only
  for extra rounds after the measured ones: it costs a clock read and a call per command).

With --loop both (the default) every server runs twice, once on asyncio's default event loop and
once on uvloop, all in the same alternating rounds. The load generators run on --client-loop
(default uvloop: the cheaper load generator, the same for every server).

Usage:  python bench/agi_sessions.py [--calls 1000] [--rounds 5] [--client-procs 2] [--agi-only]
            [--floor] [--loop asyncio|uvloop|both] [--client-loop asyncio|uvloop]
            [--malloc-mmap-threshold BYTES] [--server-cpu CPUS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callcenter.pbxsim.agi_client import run_agi_call  # noqa: E402
from callcenter.pbxsim.callers import CallerModel, KeyPlan  # noqa: E402
from callcenter.pbxsim.pbx import Ids, RealClock  # noqa: E402

OPEN_NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Shanghai
LANGS = {"1": "zh", "2": "en"}
QUEUES = {"2": "complaints", "3": "general"}


# ---------------------------------------------------------------------------------------------
# servers (run in a child process)


class _Customers:
    """In-memory customer lookup (same for both servers)."""

    async def lookup(self, number: str) -> Any:
        return None


class _NullRecorder:
    async def record_steps(self, steps: Any) -> None:
        return None

    async def record_callback(self, req: Any) -> None:
        return None


async def _serve_ours(pipe: Connection) -> None:
    from callcenter.asterisk.agi import AgiServer
    from callcenter.ivr.runner import IvrRunner
    from callcenter.ivr.service import FlowRegistry

    gaps: list[float] = []

    def hook(
        *, command: str, previous_reply_at: float | None, sent_at: float, reply_at: float
    ) -> None:
        if previous_reply_at is not None:
            gaps.append(sent_at - previous_reply_at)

    flows = FlowRegistry(directory=ROOT / "ivr_flows")
    errors = flows.refresh()
    assert not errors, errors
    runner = IvrRunner(
        flows=flows,
        customers=_Customers(),
        recorder=_NullRecorder(),
        calendar=None,
        clock=lambda: OPEN_NOW,
        lookup_timeout=0.5,
        default_queue="general",
        operator_queue="operator",
    )
    server = AgiServer(router=runner, operator_queue="operator", port=0)
    await server.start()

    def timing(on: bool) -> None:
        server.timing = hook if on else None

    await _control_loop(pipe, server.port, gaps, timing)
    await server.close()


async def _serve_agi_only(pipe: Connection) -> None:
    """Our AgiServer with panoramisk's hand-coded handler: the AGI layer without the flow engine."""
    from callcenter.asterisk.agi import AgiConnection, AgiServer, StaticRouter

    customers = _Customers()

    async def hotline(conn: AgiConnection) -> None:
        number = conn.env.callerid or ""
        async with asyncio.timeout(0.5):
            await customers.lookup(number)
        res = await conn.stream_file("hotline/choose-language", "12")
        lang = LANGS.get(res.digit or "", "zh")
        await conn.set_variable("CALLCENTER_LANGUAGE", lang)
        await conn.stream_file(f"{lang}/hotline/welcome")
        res = await conn.stream_file(f"{lang}/hotline/main-menu", "0123456789*#")
        key = res.digit or ""
        queue = QUEUES.get(key, "general")
        await conn.stream_file(f"{lang}/hotline/please-hold")
        await conn.set_variable("IVR_QUEUE", queue)
        await conn.set_variable("QUEUE_PRIO", "0")
        await conn.set_variable("IVR_CHOICE", key)
        await conn.set_variable(
            "CALLCENTER_IVR_PATH", f"lookup,language,hours,main,{key},{queue}_queue"
        )

    server = AgiServer(router=StaticRouter({"hotline": hotline}), operator_queue="operator", port=0)
    await server.start()
    await _control_loop(pipe, server.port, None)
    await server.close()


async def _serve_panoramisk(pipe: Connection) -> None:
    from panoramisk.fast_agi import Application

    customers = _Customers()
    app = Application(loop=asyncio.get_running_loop())

    def digit(res: dict[str, Any]) -> str:
        code = int(res.get("result", ("0", ""))[0] or 0)
        return chr(code) if code > 0 else ""

    async def hotline(request: Any) -> None:
        # Hand-coded equivalent of hotline.yaml for callers who pick a language during the
        # question and a direct queue during the main menu (the benchmark's callers).
        number = request.headers.get("agi_callerid", "")
        async with asyncio.timeout(0.5):  # not wait_for: no task per lookup, as ours
            await customers.lookup(number)
        res = await request.send_command('STREAM FILE hotline/choose-language "12"')
        lang = LANGS.get(digit(res), "zh")
        await request.send_command(f"SET VARIABLE CALLCENTER_LANGUAGE {lang}")
        await request.send_command(f'STREAM FILE {lang}/hotline/welcome ""')
        res = await request.send_command(f"STREAM FILE {lang}/hotline/main-menu 0123456789*#")
        key = digit(res)
        queue = QUEUES.get(key, "general")
        await request.send_command(f'STREAM FILE {lang}/hotline/please-hold ""')
        await request.send_command(f"SET VARIABLE IVR_QUEUE {queue}")
        await request.send_command("SET VARIABLE QUEUE_PRIO 0")
        await request.send_command(f"SET VARIABLE IVR_CHOICE {key}")
        path = f"lookup,language,hours,main,{key},{queue}_queue"
        await request.send_command(f"SET VARIABLE CALLCENTER_IVR_PATH {path}")

    app.add_route("hotline", hotline)
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    await _control_loop(pipe, port, None)
    server.close()


async def _serve_panoramisk_flow(pipe: Connection) -> None:
    """panoramisk's fast_agi running hotline.yaml itself: the same flow engine as ours, driven
    over ``request.send_command``, with what our runner does around it (the lookup and the
    steps' flush each bounded by a ``FixedTimeout``, the steps recorded as the engine yields
    them). The server is the only difference from ours."""
    from panoramisk.fast_agi import Application

    from callcenter.asterisk.agi import format_command
    from callcenter.calls.model import IvrStep
    from callcenter.deadlines import FixedTimeout
    from callcenter.ivr.engine import (
        HUNG_UP,
        Ack,
        Digits,
        HoursCheck,
        Lookup,
        LookupResult,
        Play,
        Reply,
        SetVar,
        Step,
        run_flow,
    )
    from callcenter.ivr.service import FlowRegistry

    flows = FlowRegistry(directory=ROOT / "ivr_flows")
    assert not flows.refresh()
    flow = flows.get("hotline")
    assert flow is not None
    customers, recorder = _Customers(), _NullRecorder()
    app = Application(loop=asyncio.get_running_loop())
    ack, no_digits = Ack(), Digits()
    lookup_bound, flush_bound = FixedTimeout(0.5), FixedTimeout(2.0)

    async def hotline(request: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        env = request.headers
        engine = run_flow(
            flow,
            calendar=flows.calendar,
            caller=env.get("agi_callerid"),
            default_queue="general",
            operator_queue="operator",
            variables={
                "UNIQUEID": env.get("agi_uniqueid", ""),
                "CALLER_NAME": env.get("agi_calleridname", ""),
                "DNID": env.get("agi_dnid", ""),
            },
        )
        steps: list[tuple[Any, ...]] = []
        reply: Reply = None
        try:
            while True:
                cmd = engine.send(reply)
                kind = type(cmd)
                if kind is Step:
                    step = (len(steps) + 1, OPEN_NOW, cmd.node, cmd.kind, cmd.input, cmd.result)
                    steps.append(step)
                    reply = ack
                elif kind is Play:
                    res = await request.send_command(
                        format_command("STREAM FILE", cmd.file, cmd.escape_digits)[:-1]
                    )
                    if "error" in res:
                        reply = HUNG_UP
                    else:
                        code = int(res["result"][0] or 0)
                        reply = Digits(chr(code)) if code > 0 else no_digits
                elif kind is SetVar:
                    res = await request.send_command(
                        format_command("SET VARIABLE", cmd.name, cmd.value)[:-1]
                    )
                    reply = HUNG_UP if "error" in res else ack
                elif kind is HoursCheck:
                    reply = OPEN_NOW
                elif kind is Lookup:
                    try:
                        async with lookup_bound.bound(task):
                            reply = LookupResult(await customers.lookup(cmd.number))
                    except Exception:
                        reply = LookupResult(None, failed=True)
                else:
                    raise TypeError(f"the bench's flow does not use {cmd!r}")
        except StopIteration:
            pass
        uniqueid = env.get("agi_uniqueid", "")
        async with flush_bound.bound(task):
            await recorder.record_steps([IvrStep(uniqueid, *step) for step in steps])

    app.add_route("hotline", hotline)
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    await _control_loop(pipe, port, None)
    server.close()


async def _serve_floor(pipe: Connection) -> None:
    """The floor (see the module docstring): per call one accept, one recv per reply, one send
    per command, one close, and nothing else. No real server can cost less per call."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    listener.setblocking(False)

    def commands(lang: str, key: str) -> list[bytes]:
        queue = QUEUES.get(key, "general")
        path = f"lookup,language,hours,main,{key},{queue}_queue"
        return [
            f"SET VARIABLE CALLCENTER_LANGUAGE {lang}\n".encode(),
            f'STREAM FILE {lang}/hotline/welcome ""\n'.encode(),
            f"STREAM FILE {lang}/hotline/main-menu 0123456789*#\n".encode(),
            f'STREAM FILE {lang}/hotline/please-hold ""\n'.encode(),
            f"SET VARIABLE IVR_QUEUE {queue}\n".encode(),
            b"SET VARIABLE QUEUE_PRIO 0\n",
            f"SET VARIABLE IVR_CHOICE {key}\n".encode(),
            f"SET VARIABLE CALLCENTER_IVR_PATH {path}\n".encode(),
        ]

    canned = {(lang, key): commands(lang, key) for lang in LANGS.values() for key in "0123"}

    class Call:
        __slots__ = ("buf", "commands", "sock", "step")

        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.buf, self.step, self.commands = sock, b"", -1, canned["zh", "0"]

    def close(call: Call) -> None:
        loop.remove_reader(call.sock.fileno())
        call.sock.close()

    def digit(reply: bytes, default: str) -> str:
        code = int(reply[11:].split(b" ", 1)[0] or 0)
        return chr(code) if code > 0 else default

    def readable(call: Call) -> None:
        try:
            data = call.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            close(call)
            return
        buf = call.buf + data
        if not buf.endswith(b"\n") or (call.step < 0 and not buf.endswith(b"\n\n")):
            call.buf = buf
            return
        call.buf = b""
        step = call.step
        call.step = step + 1
        if step < 0:  # the agi_* block is complete
            call.sock.send(b'STREAM FILE hotline/choose-language "12"\n')
            return
        if not buf.startswith(b"200 result=") or step >= len(call.commands):
            close(call)  # a HANGUP or an error, or the flow's end
            return
        if step == 0:
            call.commands = canned[LANGS.get(digit(buf, ""), "zh"), "0"]
        elif step == 3:
            key = digit(buf, "0")
            lang = "zh" if call.commands is canned["zh", "0"] else "en"
            call.commands = canned[lang, key if key in "123" else "0"]
        call.sock.send(call.commands[step])

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), readable, Call(sock))

    loop.add_reader(listener.fileno(), accept)
    await _control_loop(pipe, listener.getsockname()[1], None)
    loop.remove_reader(listener.fileno())
    listener.close()


async def _control_loop(
    pipe: Connection,
    port: int,
    gaps: list[float] | None,
    timing: Callable[[bool], None] | None = None,
) -> None:
    """Serves the bench's requests: "mark" (start counting), "report", "timing on"/"timing off"
    (the reply-to-command timing hook, for the latency round only), "stop"."""
    import gc

    loop = asyncio.get_running_loop()
    gc_time = [0.0, 0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        # perf_counter, not process_time: this runs twice per collection, and the process CPU
        # clock is a system call here (0.6 us against 0.04 us)
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]

    gc.callbacks.append(gc_timer)
    # Both servers: start-up objects (imports, flows) are moved out of the collector's way,
    # as a long-running service would do after start-up; the sessions' garbage is still collected.
    gc.collect()
    gc.freeze()
    pipe.send(port)
    cpu0 = time.process_time()
    sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        if msg == "mark":
            cpu0 = time.process_time()
            sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            gc_time[0] = 0.0
            if gaps is not None:
                gaps.clear()
            pipe.send("ok")
        elif msg == "report":
            pipe.send(
                {
                    "cpu": time.process_time() - cpu0,
                    "sys": resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0,
                    "gc": gc_time[0],
                    "gaps": list(gaps or []),
                }
            )
        elif msg in ("timing on", "timing off"):
            if timing is not None:
                timing(msg == "timing on")
            pipe.send("ok")
        elif msg == "stop":
            return


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None = asyncio's default event loop."""
    if loop == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def _server_process(kind: str, loop: str, pipe: Connection) -> None:
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    serve = {
        "ours": _serve_ours,
        "panoramisk": _serve_panoramisk,
        "panoramisk-flow": _serve_panoramisk_flow,
        "agi-only": _serve_agi_only,
        "floor": _serve_floor,
    }
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(serve[kind](pipe))


# ---------------------------------------------------------------------------------------------
# load generator (run in its own process(es), so that calls/s is not the bench process's limit)


def callers(n: int, seed: int) -> list[CallerModel]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lang = rng.choice("12")
        menu = rng.choice("23")
        out.append(
            CallerModel(
                number=f"138{i:08d}",
                name="张三",
                keys=(KeyPlan(lang, delay=0.5), KeyPlan(menu, delay=0.5)),
            )
        )
    return out


async def run_round(port: int, population: list[CallerModel]) -> tuple[float, float, list[str]]:
    """All calls at once; returns (start, end) on the system-wide monotonic clock and the
    queues the completed calls were routed to."""
    clock = RealClock(speed=1_000_000.0)
    ids = Ids()  # one id source per process: distinct uniqueids, no per-call id set-up

    async def one(c: CallerModel) -> str | None:
        res = await run_agi_call(
            host="127.0.0.1",
            port=port,
            script="hotline",
            caller=c,
            clock=clock,
            ids=ids,
            connect_timeout=60,
        )
        if res.status == "SUCCESS" and "IVR_QUEUE" in res.variables:
            return res.variables["IVR_QUEUE"]
        return None

    t0 = time.monotonic()
    results = await asyncio.gather(*(one(c) for c in population))
    t1 = time.monotonic()
    return t0, t1, [r for r in results if r is not None]


def _client_process(pipe: Connection, population: list[CallerModel], loop: str) -> None:
    import gc
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    gc.freeze()
    while True:
        msg = pipe.recv()
        if msg is None:
            return
        port, n = msg
        cpu0 = time.process_time()
        sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        # No collector passes inside the measured window (they would interrupt the load for
        # the servers alike); the round's garbage is collected right after, within its CPU.
        gc.disable()
        try:
            with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                t0, t1, routed = runner.run(run_round(port, population[:n]))
        finally:
            gc.enable()
        gc.collect()
        sys1 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        pipe.send((t0, t1, time.process_time() - cpu0, sys1 - sys0, routed))


class _ClientProcs:
    """`k` load-generator processes, each running its share of the calls concurrently."""

    def __init__(self, population: list[CallerModel], k: int, loop: str = "uvloop") -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[tuple[Any, Connection]] = []
        for i in range(k):
            parent, child = ctx.Pipe()
            share = population[i::k]
            proc = ctx.Process(target=_client_process, args=(child, share, loop), daemon=True)
            proc.start()
            self.procs.append((proc, parent))

    def run(self, port: int, n: int | None = None) -> tuple[float, float, float, list[str]]:
        """(wall seconds, client CPU seconds, of which kernel, routed queues) of one round."""
        for _, pipe in self.procs:
            pipe.send((port, n if n is not None else 10**9))
        reps = [pipe.recv() for _, pipe in self.procs]
        wall = max(r[1] for r in reps) - min(r[0] for r in reps)
        return (
            wall,
            sum(r[2] for r in reps),
            sum(r[3] for r in reps),
            [q for r in reps for q in r[4]],
        )

    def stop(self) -> None:
        for proc, pipe in self.procs:
            pipe.send(None)
            proc.join(5)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


class _CpuCap:
    """A CPU quota for one server process (its own cgroup: v2 ``cpu.max`` or v1 CFS quota), so
    that the server, not the load generator sharing its machine, is what limits calls/s.
    Needs a writable cgroup hierarchy (root); ``set(None)`` lifts the cap."""

    PERIOD_US = 10_000  # short periods: a throttled server stalls for at most a few ms

    def __init__(self, name: str, pid: int) -> None:
        v2 = Path("/sys/fs/cgroup")
        v1 = Path("/sys/fs/cgroup/cpu")
        controllers = v2 / "cgroup.subtree_control"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            self.dir, self.v2 = v2 / f"callcenter-bench-{os.getpid()}-{name}", True
        elif (v1 / "cpu.cfs_quota_us").exists():
            self.dir, self.v2 = v1 / f"callcenter-bench-{os.getpid()}-{name}", False
        else:
            raise SystemExit("--server-cpu needs a cgroup CPU controller (v2 cpu.max or v1 cpu)")
        try:
            self.dir.mkdir()
            (self.dir / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise SystemExit(f"--server-cpu: cannot set up {self.dir}: {exc}") from exc
        if not self.v2:
            (self.dir / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))

    def set(self, cpus: float | None) -> None:
        quota = -1 if cpus is None else max(1000, round(cpus * self.PERIOD_US))
        if self.v2:
            limit = "max" if quota < 0 else str(quota)
            (self.dir / "cpu.max").write_text(f"{limit} {self.PERIOD_US}")
        else:
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota))

    def remove(self) -> None:
        """After the process has exited (a cgroup with processes cannot be removed)."""
        with contextlib.suppress(OSError):
            self.dir.rmdir()


class _ServerProc:
    def __init__(self, kind: str, loop: str, capped: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.kind = f"{kind}/{loop}"
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_server_process, args=(kind, loop, child), daemon=True)
        self.proc.start()
        assert self.proc.pid is not None
        self.cap = _CpuCap(f"{kind}-{loop}", self.proc.pid) if capped else None
        self.port: int = self.pipe.recv()

    def measure(self, clients: _ClientProcs, calls: int) -> dict[str, Any]:
        self.pipe.send("mark")
        self.pipe.recv()
        wall, client_cpu, client_sys, routed = clients.run(self.port)
        self.pipe.send("report")
        rep = self.pipe.recv()
        done = len(routed)
        if done != calls:
            print(f"  {self.kind}: only {done}/{calls} completed", file=sys.stderr)
        return {
            "rate": done / wall,
            "cpu": rep["cpu"] / max(done, 1) * 1000,
            "busy": rep["cpu"] / wall,
            "gc": rep["gc"] / max(done, 1) * 1000,
            "sys": rep["sys"] / max(done, 1) * 1000,
            "client_cpu": client_cpu / max(done, 1) * 1000,
            "client_sys": client_sys / max(done, 1) * 1000,
            "gaps": rep["gaps"],
            "routed": routed,
        }

    def set_timing(self, on: bool) -> None:
        self.pipe.send("timing on" if on else "timing off")
        self.pipe.recv()

    def stop(self) -> None:
        self.pipe.send("stop")
        self.proc.join(5)
        if self.cap is not None:
            self.cap.remove()


def bench(
    calls: int,
    rounds: int,
    client_procs: int,
    kinds: tuple[str, ...] = ("ours", "panoramisk"),
    loops: tuple[str, ...] = ("asyncio",),
    client_loop: str = "uvloop",
    server_cpu: float | None = None,
) -> dict[str, dict[str, Any]]:
    """All servers (kind x event loop, keyed "kind/loop") run side by side; rounds alternate
    between them so that background load on the machine affects all alike. Medians over the
    rounds are reported. With ``server_cpu``, as many rounds again with every server capped at
    that many CPUs (``capped``)."""
    population = callers(calls, seed=7)
    clients = _ClientProcs(population, client_procs, client_loop)
    capped = server_cpu is not None
    servers = {f"{k}/{lp}": _ServerProc(k, lp, capped) for lp in loops for k in kinds}
    out: dict[str, dict[str, Any]] = {
        k: {"rounds": [], "capped": [], "gaps": [], "queues": {}} for k in servers
    }
    try:
        for srv in servers.values():
            clients.run(srv.port, 50 // client_procs)  # warm-up
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for kind in order:
                m = servers[kind].measure(clients, calls)
                res = out[kind]
                res["rounds"].append(m)
                routed = m["routed"]
                res["queues"] = {q: routed.count(q) for q in sorted(set(routed))}
        if server_cpu is not None:
            for srv in servers.values():
                assert srv.cap is not None
                srv.cap.set(server_cpu)
            for r in range(rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for kind in order:
                    out[kind]["capped"].append(servers[kind].measure(clients, calls))
            for srv in servers.values():
                assert srv.cap is not None
                srv.cap.set(None)
        # The reply -> next command gaps come from extra rounds with the timing hook on (it costs
        # a clock read and a call per command, which the throughput rounds do not carry).
        for kind, srv in servers.items():
            if kind.startswith("ours/"):
                srv.set_timing(True)
                for _ in range(rounds):
                    out[kind]["gaps"].extend(srv.measure(clients, calls)["gaps"])
                srv.set_timing(False)
    finally:
        for srv in servers.values():
            srv.stop()
        clients.stop()
    for res in out.values():
        for key in ("rate", "cpu", "busy", "client_cpu", "client_sys", "gc", "sys"):
            res[key] = statistics.median(m[key] for m in res["rounds"])
        if res["capped"]:
            res["capped_rate"] = statistics.median(m["rate"] for m in res["capped"])
            res["capped_cpu"] = statistics.median(m["cpu"] for m in res["capped"])
            res["capped_busy"] = statistics.median(m["busy"] for m in res["capped"])
    return out


NAMES = {
    "ours": "ours (AgiServer + hotline.yaml)",
    "panoramisk": "panoramisk 1.4 fast_agi, hand-coded flow",
    "panoramisk-flow": "panoramisk 1.4 fast_agi + hotline.yaml (our engine)",
    "agi-only": "AgiServer + hand-coded handler",
    "floor": "floor: raw sockets, canned commands",
}


def _ratios(
    results: dict[str, dict[str, Any]],
    ours: str,
    theirs: str,
    goal: bool = True,
    rounds: str = "rounds",
) -> str:
    """calls/s ours/theirs (median of the per-round ratios) and CPU per call theirs/ours."""
    a, b = results[ours][rounds], results[theirs][rounds]
    rate = statistics.median(x["rate"] / y["rate"] for x, y in zip(a, b, strict=True))
    cpu = statistics.median(y["cpu"] / x["cpu"] for x, y in zip(a, b, strict=True))
    return (
        f"calls/s {ours} / {theirs} {rate:.2f}x{' (goal >= 1.5x)' if goal else ''}; "
        f"server CPU per call {theirs} / {ours} {cpu:.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--client-procs", type=int, default=2, help="load-generator processes")
    ap.add_argument(
        "--agi-only",
        action="store_true",
        help="also run our AgiServer with the hand-coded handler (no flow engine)",
    )
    ap.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="the servers' event loop (both: every server on each)",
    )
    ap.add_argument(
        "--client-loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="the load generators' event loop (the same for every server)",
    )
    ap.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        metavar="BYTES",
        help="set glibc's MALLOC_MMAP_THRESHOLD_ (and MALLOC_TRIM_THRESHOLD_ to twice it, as "
        "glibc's own dynamic adjustment does) in every process started, servers and load "
        "generators; a fixed threshold turns the dynamic one off, which is what gives "
        "panoramisk two cost levels (4194304: its cheap level, 131072: its expensive one, "
        "glibc's initial values)",
    )
    ap.add_argument(
        "--server-cpu",
        type=float,
        metavar="CPUS",
        help="also run as many rounds again with every server process capped at this many CPUs "
        "(a cgroup CPU quota; needs root): with the load generator on the same machine, "
        "uncapped calls/s is shared-CPU-bound; capped, the server is what limits calls/s, as "
        "when Asterisk runs on its own host (0.5 on a 2-vCPU machine)",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run the floor: the least any FastAGI server must do for this flow",
    )
    args = ap.parse_args(argv)
    report: Callable[[str], None] = print
    kinds = (
        "ours",
        "panoramisk",
        "panoramisk-flow",
        *(("agi-only",) if args.agi_only else ()),
        *(("floor",) if args.floor else ()),
    )
    loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    if args.malloc_mmap_threshold is not None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)  # for the children
        os.environ["MALLOC_TRIM_THRESHOLD_"] = str(2 * args.malloc_mmap_threshold)
    results = bench(
        args.calls, args.rounds, args.client_procs, kinds, loops, args.client_loop, args.server_cpu
    )
    report(
        f"FastAGI sessions: {args.calls} concurrent calls from {args.client_procs} client "
        f"processes on {args.client_loop} x {args.rounds} alternating rounds (median [per round])"
        + (
            f"; MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold}"
            if args.malloc_mmap_threshold is not None
            else ""
        )
    )
    for key, r in results.items():
        kind, loop = key.split("/")
        rates = ", ".join(f"{m['rate']:.0f}" for m in r["rounds"])
        cpus = ", ".join(f"{m['cpu']:.3f}" for m in r["rounds"])
        report(f"  {NAMES[kind]} on {loop}: routed {r['queues']}")
        report(f"    calls/s             {r['rate']:7.0f}  [{rates}]")
        report(
            f"    server CPU ms/call  {r['cpu']:7.3f}  [{cpus}]  "
            f"(kernel {r['sys']:.3f}, GC {r['gc']:.3f})"
        )
        report(
            f"    server busy {r['busy'] * 100:.0f}% of wall clock; "
            f"client CPU {r['client_cpu']:.3f} ms/call (kernel {r['client_sys']:.3f})"
        )
        if r["capped"]:
            rates = ", ".join(f"{m['rate']:.0f}" for m in r["capped"])
            report(
                f"    capped at {args.server_cpu} CPU: calls/s {r['capped_rate']:.0f} [{rates}], "
                f"server CPU {r['capped_cpu']:.3f} ms/call, busy {r['capped_busy'] * 100:.0f}% "
                "of wall clock"
            )
        if kind == "ours":
            gaps_ms = [g * 1000 for g in r["gaps"]]
            report(
                f"    reply parsed -> next command written ({len(gaps_ms)} gaps, in "
                f"{len(r['rounds'])} rounds of their own): "
                f"p50 {percentile(gaps_ms, 50):.3f} ms, p99 {percentile(gaps_ms, 99):.3f} ms, "
                f"max {max(gaps_ms):.3f} ms (goal p99 < 2 ms)"
            )
    report("  ratios (median of per-round ratios):")
    for loop in loops:
        report(
            f"    same flow (hotline.yaml on both), {loop}: "
            + _ratios(results, f"ours/{loop}", f"panoramisk-flow/{loop}")
        )
        report(
            f"    against panoramisk's hand-coded flow, {loop}: "
            + _ratios(results, f"ours/{loop}", f"panoramisk/{loop}")
        )
        if args.server_cpu is not None:
            for theirs, what in (("panoramisk-flow", "same flow"), ("panoramisk", "hand-coded")):
                report(
                    f"    servers capped at {args.server_cpu} CPU, {what}, {loop}: "
                    + _ratios(results, f"ours/{loop}", f"{theirs}/{loop}", rounds="capped")
                )
        if "agi-only" in kinds:
            report(
                f"    AGI layer alone, {loop}: "
                + _ratios(results, f"agi-only/{loop}", f"panoramisk/{loop}")
            )
        if "floor" in kinds:
            # the most any server could show against each baseline in this run: uncapped, the
            # load generator sharing the machine bounds even a server that does nothing
            for theirs, what in (("panoramisk-flow", "same flow"), ("panoramisk", "hand-coded")):
                report(
                    f"    the floor, {what}, {loop}: "
                    + _ratios(results, f"floor/{loop}", f"{theirs}/{loop}", goal=False)
                )
                if args.server_cpu is not None:
                    report(
                        f"    the floor, capped at {args.server_cpu} CPU, {what}, {loop}: "
                        + _ratios(
                            results,
                            f"floor/{loop}",
                            f"{theirs}/{loop}",
                            goal=False,
                            rounds="capped",
                        )
                    )
    if len(loops) == 2:
        report(
            "    each on its best loop here (ours asyncio, panoramisk uvloop), same flow: "
            + _ratios(results, "ours/asyncio", "panoramisk-flow/uvloop")
        )
        report(
            "    ours, uvloop vs asyncio: " + _ratios(results, "ours/uvloop", "ours/asyncio", False)
        )
        report(
            "    panoramisk, uvloop vs asyncio: "
            + _ratios(results, "panoramisk/uvloop", "panoramisk/asyncio", False)
        )


if __name__ == "__main__":
    main()
