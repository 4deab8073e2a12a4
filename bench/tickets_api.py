"""Ticket API benchmark: create/list throughput as a ratio to a bare aiohttp JSON handler in the
same run, and list/search latency (p50/p99) over HTTP with 1,000,000 complaints on PostgreSQL.

Usage:
    python bench/tickets_api.py [--pg-url postgresql+asyncpg://callcenter:callcenter@127.0.0.1:5432/postgres]
        [--tickets 1000000] [--seconds 5] [--concurrency 16] [--requests 300] [--keep]

What it does:
1. Creates a fresh PostgreSQL database, migrates it (Alembic), creates 60 users and 20,000
   customers, and bulk-loads `--tickets` complaints (+ one linked call each) with COPY, spread
   over two years with realistic status/category/severity/owner mixes; VACUUM ANALYZE.
2. Starts two servers in child processes: the real app (`create_app`: auth middleware, session
   lookup, role check, validation, repository, audit where the API audits) and a bare aiohttp
   app whose one handler returns a fixed JSON object (`web.json_response`). Both on loopback.
3. Throughput (requests/s, `--concurrency` concurrent keep-alive clients for `--seconds` each,
   rounds alternating between the servers so machine noise hits both): bare GET, POST
   /api/v1/complaints (create), GET /api/v1/complaints (list, newest 50 of 1M+). Ratios to bare.
4. Latency: `--requests` sequential requests per query shape (list filters, pages, searches,
   an agent's restricted view, customer search), p50/p99/max, and the index each plan uses.
   The load average is printed at the start and the end (the figures depend on it).

Nothing asserts on timing: these are figures for bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # type: ignore[import-untyped]  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from callcenter.db.engine import async_url  # noqa: E402

DEFAULT_PG = "postgresql+asyncpg://callcenter:callcenter@127.0.0.1:5432/postgres"
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
CATEGORIES = ("delivery", "billing", "service_attitude", "technical", "product", "refund", "other")
SEVERITIES = ("low", "medium", "high", "critical")
GROUPS = ("bookings", "complaints", "general", "technical")
STATUS_MIX = (
    ("closed", 70),
    ("resolved", 10),
    ("investigating", 10),
    ("open", 7),
    ("escalated", 3),
)
N_USERS = 60
N_CUSTOMERS = 20_000


# ------------------------------------------------------------------------------ database


async def _admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _dsn(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _status_of(rnd: random.Random) -> str:
    pick = rnd.randrange(100)
    for status, weight in STATUS_MIX:
        if pick < weight:
            return status
        pick -= weight
    return "closed"


async def load(db_url: str, tickets: int, seed: int = 7) -> dict[str, Any]:
    """Migrate, then COPY users, customers, numbers, complaints and complaint_calls."""
    from callcenter.db.migrate import upgrade_database

    await upgrade_database(db_url)
    rnd = random.Random(seed)
    conn = await asyncpg.connect(_dsn(db_url))
    try:
        users = []
        for i in range(1, N_USERS + 1):
            role = "specialist" if i % 10 == 0 else "agent"
            users.append(
                (
                    i,
                    f"user{i:03d}",
                    f"User {i}",
                    "!bench-no-login",
                    role,
                    GROUPS[i % len(GROUPS)],
                    "[]",
                    f"PJSIP/{2000 + i}",
                    "zh-CN",
                    False,
                    NOW,
                    NOW,
                )
            )
        await conn.copy_records_to_table(
            "users",
            records=users,
            columns=[
                "id",
                "username",
                "display_name",
                "password_hash",
                "role",
                "group",
                "skills",
                "agent_interface",
                "language",
                "disabled",
                "created_at",
                "updated_at",
            ],
        )
        await conn.execute("SELECT setval('users_id_seq', $1)", N_USERS)
        customers = [
            (
                i,
                f"客户{i:05d}",
                # every 4th customer is a company's contact: 1,000 companies, 5 contacts each
                f"贸易公司{i // 4 % 1000:03d}" if i % 4 == 0 else None,
                "key" if i % 50 == 0 else "normal",
                "",
                False,
                False,
                NOW,
                NOW,
            )
            for i in range(1, N_CUSTOMERS + 1)
        ]
        await conn.copy_records_to_table(
            "customers",
            records=customers,
            columns=[
                "id",
                "name",
                "company",
                "tier",
                "notes",
                "do_not_call",
                "provisional",
                "created_at",
                "updated_at",
            ],
        )
        await conn.execute("SELECT setval('customers_id_seq', $1)", N_CUSTOMERS)
        numbers = [(i, f"13{i:09d}", f"8613{i:09d}", NOW) for i in range(1, N_CUSTOMERS + 1)]
        await conn.copy_records_to_table(
            "customer_numbers",
            records=numbers,
            columns=["customer_id", "raw", "normalised", "created_at"],
        )

        span = timedelta(days=730).total_seconds()
        batch = 100_000
        started = time.perf_counter()
        for first in range(1, tickets + 1, batch):
            rows = []
            calls = []
            for cid in range(first, min(first + batch, tickets + 1)):
                # ids grow with time, like real inserts
                created = NOW - timedelta(seconds=span * (1 - cid / tickets)) - timedelta(hours=1)
                status = _status_of(rnd)
                severity = SEVERITIES[rnd.randrange(4)]
                owner = (
                    None if (status == "open" and rnd.random() < 0.5) else rnd.randint(1, N_USERS)
                )
                first_due = created + timedelta(hours=(2, 4, 8, 8)[SEVERITIES.index(severity)])
                resolution_due = created + timedelta(days=(1, 2, 3, 3)[SEVERITIES.index(severity)])
                done = status in ("resolved", "closed")
                resolved = created + timedelta(hours=rnd.randint(1, 80)) if done else None
                responded = (
                    created + timedelta(minutes=rnd.randint(5, 600)) if status != "open" else None
                )
                # the history was checked all along: past breaches are already stamped
                active = not done
                first_breach = first_due if responded is None and first_due < NOW else None
                resolution_breach = resolution_due if active and resolution_due < NOW else None
                rows.append(
                    (
                        cid,
                        rnd.randint(1, N_CUSTOMERS),
                        CATEGORIES[rnd.randrange(len(CATEGORIES))],
                        severity,
                        "客户反映问题 customer reports a problem #" + str(cid),
                        status,
                        owner,
                        rnd.randint(1, N_USERS),
                        first_due,
                        resolution_due,
                        responded,
                        resolved,
                        resolved if status == "closed" else None,
                        resolved if status == "closed" else None,
                        ("compensated", "explained", "rejected")[cid % 3] if done else None,
                        0,
                        first_breach,
                        resolution_breach,
                        0,
                        created,
                        created,
                    )
                )
                calls.append((cid, f"{1700000000 + cid}.{cid % 97}", created))
            await conn.copy_records_to_table(
                "complaints",
                records=rows,
                columns=[
                    "id",
                    "customer_id",
                    "category",
                    "severity",
                    "description",
                    "status",
                    "owner_id",
                    "created_by",
                    "first_response_due",
                    "resolution_due",
                    "first_responded_at",
                    "resolved_at",
                    "closed_at",
                    "customer_informed_at",
                    "outcome",
                    "reopen_count",
                    "first_response_breached_at",
                    "resolution_breached_at",
                    "version",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.copy_records_to_table(
                "complaint_calls",
                records=calls,
                columns=["complaint_id", "call_uniqueid", "linked_at"],
            )
            print(f"  loaded {min(first + batch - 1, tickets):,} complaints", flush=True)
        await conn.execute("SELECT setval('complaints_id_seq', $1)", tickets)
        load_seconds = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return {"load_seconds": load_seconds}


# ------------------------------------------------------------------------------ servers


def _serve_real(db_url: str, pipe: Connection) -> None:
    asyncio.run(_real_server(db_url, pipe))


async def _real_server(db_url: str, pipe: Connection) -> None:
    import logging
    import tempfile

    from callcenter.app import create_app, start_site
    from callcenter.config import Settings

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tickets-"))
    settings = Settings(
        database_url=db_url,
        flows_dir=ROOT / "ivr_flows",
        recordings_dir=tmp / "recordings",
        agi_port=0,
        ami_port=1,  # nothing listens: the AMI client retries in the background
        ami_secret="unused",
        ami_reconnect_min=30.0,
        ami_reconnect_max=60.0,
    )
    app = create_app(settings, clock=lambda: NOW)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    port = await start_site(runner, "127.0.0.1", 0)
    pipe.send(port)
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await runner.cleanup()


def _serve_bare(pipe: Connection) -> None:
    asyncio.run(_bare_server(pipe))


async def _bare_server(pipe: Connection) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "status": "open", "category": "delivery"})

    app = web.Application()
    app.router.add_get("/bare", handler)
    app.router.add_post("/bare", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    pipe.send(int(runner.addresses[0][1]))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await runner.cleanup()


def _start(target: Callable[..., None], *args: Any) -> tuple[Any, Connection, int]:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    port = parent.recv()
    return proc, parent, int(port)


# ------------------------------------------------------------------------------ load


async def _sign_in(db_url: str) -> dict[str, dict[str, str]]:
    """Sessions for an agent (user001, group "complaints") and a supervisor, made in the store."""
    from argon2 import PasswordHasher

    from callcenter.db.engine import create_engine, create_session_factory
    from callcenter.users.repository import SessionRepository, UserRepository
    from callcenter.users.service import Passwords

    engine = create_engine(db_url)
    sessions = create_session_factory(engine)
    try:
        fast = Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        users = UserRepository(session_factory=sessions, passwords=fast)
        store = SessionRepository(session_factory=sessions, idle_timeout=timedelta(days=1))
        sup = await users.get_by_username("bench-sup") or await users.create(
            username="bench-sup", password="bench-pass-123", role="supervisor"
        )
        out = {}
        for name, user_id in (("agent", 1), ("supervisor", sup.id)):
            s = await store.create(user_id, ip="127.0.0.1", user_agent="bench")
            out[name] = {"Cookie": f"cc_session={s.cookie}", "X-CSRF-Token": s.csrf_token}
        return out
    finally:
        await engine.dispose()


async def throughput(
    url: str,
    *,
    method: str,
    seconds: float,
    concurrency: int,
    headers: dict[str, str] | None = None,
    body: Callable[[int], Any] | None = None,
) -> float:
    """Completed requests per second with `concurrency` keep-alive workers."""
    done = 0
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def worker(w: int) -> None:
            nonlocal done, errors
            i = w
            while time.perf_counter() < deadline:
                kwargs = {"json": body(i)} if body is not None else {}
                async with http.request(method, url, **kwargs) as resp:
                    await resp.read()
                    if resp.status >= 400:
                        errors += 1
                    else:
                        done += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    if errors:
        print(f"  !! {errors} error responses from {url}")
    return done / elapsed


async def latencies(
    url: str, *, requests: int, headers: dict[str, str]
) -> tuple[float, float, float, int]:
    """(p50, p99, max) in ms of `requests` sequential GETs, and the last `total`."""
    times: list[float] = []
    total = -1
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(5):  # warm-up: connection, plan cache
            async with http.get(url) as resp:
                await resp.read()
        for _ in range(requests):
            t0 = time.perf_counter()
            async with http.get(url) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: {resp.status} {data}")
            times.append((time.perf_counter() - t0) * 1000)
            total = int(data.get("total", -1))
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return statistics.median(times), p99, times[-1], total


async def explain(db_url: str, sql: str) -> str:
    conn = await asyncpg.connect(_dsn(db_url))
    try:
        rows = await conn.fetch("EXPLAIN " + sql)
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    name = args.database or f"bench_tickets_{uuid.uuid4().hex[:8]}"
    admin = args.pg_url
    db_url = async_url(admin).set(database=name).render_as_string(hide_password=False)
    procs: list[tuple[Any, Connection]] = []
    if not args.database:
        await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        if args.database:
            print(f"reusing database {name} (loaded by an earlier --keep run)")
        else:
            print(f"loading {args.tickets:,} complaints into {name} ...", flush=True)
            info = await load(db_url, args.tickets)
            print(f"  COPY took {info['load_seconds']:.1f} s (+ VACUUM ANALYZE)")
        print(f"load average at start: {_load()}")
        heads = await _sign_in(db_url)
        real_proc, real_pipe, real_port = _start(_serve_real, db_url)
        bare_proc, bare_pipe, bare_port = _start(_serve_bare)
        procs = [(real_proc, real_pipe), (bare_proc, bare_pipe)]
        real = f"http://127.0.0.1:{real_port}"
        bare = f"http://127.0.0.1:{bare_port}/bare"

        def new_complaint(i: int) -> dict[str, Any]:
            return {
                "customer_id": 1 + i % N_CUSTOMERS,
                "category": CATEGORIES[i % len(CATEGORIES)],
                "severity": SEVERITIES[i % 4],
                "description": f"bench complaint {i}",
                "call_uniqueid": f"bench-{i}",
            }

        sup = heads["supervisor"]
        agent = heads["agent"]
        shapes: dict[str, Callable[[], Awaitable[float]]] = {
            "bare GET": lambda: throughput(
                bare, method="GET", seconds=args.seconds, concurrency=args.concurrency
            ),
            "bare POST": lambda: throughput(
                bare,
                method="POST",
                seconds=args.seconds,
                concurrency=args.concurrency,
                body=new_complaint,
            ),
            "create (POST /api/v1/complaints)": lambda: throughput(
                f"{real}/api/v1/complaints",
                method="POST",
                seconds=args.seconds,
                concurrency=args.concurrency,
                headers=agent,
                body=new_complaint,
            ),
            "list (GET /api/v1/complaints?status=open)": lambda: throughput(
                f"{real}/api/v1/complaints?status=open",
                method="GET",
                seconds=args.seconds,
                concurrency=args.concurrency,
                headers=sup,
            ),
        }
        results: dict[str, list[float]] = {k: [] for k in shapes}
        for r in range(args.rounds):
            for label, run in shapes.items():
                results[label].append(await run())
            print(f"  throughput round {r + 1}/{args.rounds} done", flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        print("\nThroughput (median of rounds, req/s; ratio to the bare handler, same method)")
        for label, value in med.items():
            base = med["bare POST"] if "POST" in label else med["bare GET"]
            print(f"  {label:48s} {value:9,.0f} req/s   {value / base:6.3f}x")

        since = (NOW - timedelta(days=30)).isoformat()
        until = (NOW - timedelta(days=23)).isoformat()
        queries = {
            "newest 50 (no filter)": "",
            "status=open": "?status=open",
            "status=investigating&status=escalated": "?status=investigating&status=escalated",
            "owner_id=17": "?owner_id=17",
            "unowned=true": "?unowned=true",
            "category=refund&offset=1000": "?category=refund&offset=1000",
            "since/until (one week)": f"?since={since}&until={until}".replace("+", "%2B"),
            "overdue=true": "?overdue=true",
            "q=<customer number>": "?q=%2B86%20130%200001%202345",
            "q=<customer name>": "?q=%E5%AE%A2%E6%88%B712345",
            "q=<complaint id>": "?q=777777",
        }
        print(
            f"\nList/search latency over HTTP, {args.requests} sequential requests each "
            f"(supervisor: sees all {args.tickets:,}+)"
        )
        print(f"  {'query':44s} {'p50':>7s} {'p99':>7s} {'max':>7s}  total")
        for label, qs in queries.items():
            p50, p99, mx, total = await latencies(
                f"{real}/api/v1/complaints{qs}", requests=args.requests, headers=sup
            )
            print(f"  {label:44s} {p50:6.1f}ms {p99:6.1f}ms {mx:6.1f}ms  {total:,}")
        p50, p99, mx, total = await latencies(
            f"{real}/api/v1/complaints", requests=args.requests, headers=agent
        )
        label = "agent view (own + group + unowned)"
        print(f"  {label:44s} {p50:6.1f}ms {p99:6.1f}ms {mx:6.1f}ms  {total:,}")
        customer_queries = {
            "customers q=<name>": "?q=%E5%AE%A2%E6%88%B712345",
            "customers q=<company>": "?q=%E5%85%AC%E5%8F%B8777",
            "customers q=<number>": "?q=%2B86%20130%200001%202345",
        }
        for label, qs in customer_queries.items():
            p50, p99, mx, total = await latencies(
                f"{real}/api/v1/customers{qs}", requests=args.requests, headers=sup
            )
            print(f"  {label:44s} {p50:6.1f}ms {p99:6.1f}ms {mx:6.1f}ms  {total:,}")
        print(f"load average after the latency runs: {_load()}")

        # what the app sends for user001: its id and its group's (every 4th user from 1)
        ids = ", ".join(str(i) for i in range(1, N_USERS + 1, len(GROUPS)))
        agent_view = f"(created_by IN ({ids}) OR owner_id IN ({ids}) OR owner_id IS NULL)"
        plans = {
            "newest 50": "SELECT id FROM complaints ORDER BY created_at DESC, id DESC LIMIT 50",
            "status=open": "SELECT id FROM complaints WHERE status IN ('open') "
            "ORDER BY created_at DESC, id DESC LIMIT 50",
            "owner_id": "SELECT id FROM complaints WHERE owner_id = 17 "
            "ORDER BY created_at DESC, id DESC LIMIT 50",
            "customer search": "SELECT id FROM complaints WHERE customer_id IN (12345) "
            "ORDER BY created_at DESC, id DESC LIMIT 50",
            "name search": "SELECT id FROM customers WHERE name ILIKE '%客户12345%' LIMIT 200",
            "customers q=": "SELECT id FROM customers WHERE name ILIKE '%公司777%' "
            "OR company ILIKE '%公司777%' OR id IN (12345) ORDER BY name, id LIMIT 20",
            "agent view": f"SELECT id FROM complaints WHERE {agent_view} "
            "ORDER BY created_at DESC, id DESC LIMIT 50",
            "agent view count": "SELECT count(*) FROM (SELECT id FROM complaints "
            f"WHERE {agent_view} LIMIT 1001) AS capped",
        }
        print("\nPlans (first index line of EXPLAIN):")
        for label, sql in plans.items():
            plan = await explain(db_url, sql)
            used = [ln.strip() for ln in plan.splitlines() if "Index" in ln]
            print(f"  {label:18s} {used[0] if used else plan.splitlines()[0]}")
        print(f"load average at the end: {_load()}")
    finally:
        for proc, pipe in procs:
            pipe.send("stop")
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        if not args.keep and not args.database:
            await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the loaded database")
    parser.add_argument("--database", help="reuse a database kept by an earlier --keep run")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
