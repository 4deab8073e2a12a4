"""FastAGI benchmark: 1,000 concurrent IVR sessions against (a) our AgiServer running
ivr_flows/hotline.yaml and (b) panoramisk 1.4's fast_agi.Application running a hand-coded flow
that sends the same command sequence.

Each server runs in its own process; the load comes from the emulator's FastAGI client
(`callcenter.pbxsim.agi_client.run_agi_call`) in this process, with the simulated clock sped up so
prompts take no real time. Rounds alternate between the two servers so that background load on
the machine hits both alike; medians are reported. Per server:

* completed calls/s (wall clock, all sessions started at once),
* server CPU seconds per 1,000 calls (process_time of the server process),
* for our server, the p50/p99/max of the time between a reply having been parsed by our
  server and our next command being written (the `timing` hook of AgiServer).

Usage:  python bench/agi_sessions.py [--calls 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
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
from callcenter.pbxsim.pbx import RealClock  # noqa: E402

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
    async def record_step(self, step: Any) -> None:
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
    server = AgiServer(router=runner, operator_queue="operator", port=0, timing=hook)
    await server.start()
    await _control_loop(pipe, server.port, gaps)
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
        await asyncio.wait_for(customers.lookup(number), 0.5)
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


async def _control_loop(pipe: Connection, port: int, gaps: list[float] | None) -> None:
    loop = asyncio.get_running_loop()
    pipe.send(port)
    cpu0 = time.process_time()
    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        if msg == "mark":
            cpu0 = time.process_time()
            if gaps is not None:
                gaps.clear()
            pipe.send("ok")
        elif msg == "report":
            pipe.send({"cpu": time.process_time() - cpu0, "gaps": list(gaps or [])})
        elif msg == "stop":
            return


def _server_process(kind: str, pipe: Connection) -> None:
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(_serve_ours(pipe) if kind == "ours" else _serve_panoramisk(pipe))


# ---------------------------------------------------------------------------------------------
# load generator


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


async def run_round(port: int, population: list[CallerModel]) -> tuple[float, int, list[str]]:
    clock = RealClock(speed=1_000_000.0)

    async def one(c: CallerModel) -> str | None:
        res = await run_agi_call(
            host="127.0.0.1", port=port, script="hotline", caller=c, clock=clock, connect_timeout=60
        )
        if res.status == "SUCCESS" and "IVR_QUEUE" in res.variables:
            return res.variables["IVR_QUEUE"]
        return None

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(c) for c in population))
    wall = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    return wall, len(done), done


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


class _ServerProc:
    def __init__(self, kind: str) -> None:
        ctx = mp.get_context("spawn")
        self.kind = kind
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_server_process, args=(kind, child), daemon=True)
        self.proc.start()
        self.port: int = self.pipe.recv()

    def measure(self, population: list[CallerModel]) -> tuple[float, float, list[float], list[str]]:
        self.pipe.send("mark")
        self.pipe.recv()
        wall, completed, routed = asyncio.run(run_round(self.port, population))
        self.pipe.send("report")
        rep = self.pipe.recv()
        if completed != len(population):
            print(f"  {self.kind}: only {completed}/{len(population)} completed", file=sys.stderr)
        return completed / wall, rep["cpu"] / max(completed, 1) * 1000, rep["gaps"], routed

    def stop(self) -> None:
        self.pipe.send("stop")
        self.proc.join(5)


def bench(calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Both servers run side by side; rounds alternate between them so that background load
    on the machine affects both alike. Medians over the rounds are reported."""
    servers = {kind: _ServerProc(kind) for kind in ("ours", "panoramisk")}
    population = callers(calls, seed=7)
    out: dict[str, dict[str, Any]] = {
        k: {"rates": [], "cpus": [], "gaps": [], "queues": {}} for k in servers
    }
    try:
        for srv in servers.values():
            asyncio.run(run_round(srv.port, population[:50]))  # warm-up
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for kind in order:
                rate, cpu, gaps, routed = servers[kind].measure(population)
                res = out[kind]
                res["rates"].append(rate)
                res["cpus"].append(cpu)
                res["gaps"].extend(gaps)
                res["queues"] = {q: routed.count(q) for q in sorted(set(routed))}
    finally:
        for srv in servers.values():
            srv.stop()
    for res in out.values():
        res["rate"] = statistics.median(res["rates"])
        res["cpu_per_1000"] = statistics.median(res["cpus"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    report: Callable[[str], None] = print
    results = bench(args.calls, args.rounds)
    ours, theirs = results["ours"], results["panoramisk"]
    gaps_ms = [g * 1000 for g in ours["gaps"]]
    report(
        f"FastAGI sessions: {args.calls} concurrent calls x {args.rounds} alternating rounds "
        "(median [per round])"
    )
    for name, r in (("ours (AgiServer + hotline.yaml)", ours), ("panoramisk 1.4 fast_agi", theirs)):
        rates = ", ".join(f"{x:.0f}" for x in r["rates"])
        cpus = ", ".join(f"{x:.2f}" for x in r["cpus"])
        report(
            f"  {name:34s} {r['rate']:7.0f} calls/s  [{rates}]  "
            f"server CPU {r['cpu_per_1000']:.3f} s / 1000 calls [{cpus}]  routed {r['queues']}"
        )
    report(
        f"  throughput ratio ours/panoramisk: {ours['rate'] / theirs['rate']:.2f}x (goal >= 1.5x)"
    )
    report(
        f"  server CPU ratio panoramisk/ours:  {theirs['cpu_per_1000'] / ours['cpu_per_1000']:.2f}x"
    )
    report(
        f"  reply parsed -> next command written (ours, {len(gaps_ms)} gaps): "
        f"p50 {percentile(gaps_ms, 50):.3f} ms, p99 {percentile(gaps_ms, 99):.3f} ms, "
        f"max {max(gaps_ms):.3f} ms (goal p99 < 2 ms)"
    )


if __name__ == "__main__":
    main()
