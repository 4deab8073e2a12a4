"""AMI ingest benchmark: panoramisk 1.4's parser vs our framer + sequential consumer.

Usage: python bench/ami_ingest.py [--calls 1400] [--chunks 1001,4096] [--rounds 3]
           [--loop asyncio|uvloop|both] [--full-path [--database-url URL]]

Stream: the events of ami_transcripts/raw/04 (IVR -> queue -> agent call) and 05 (abandon),
repeated with fresh uniqueids/channel ids and alternating Chinese and Latin caller names
(about 76 events per repetition; the default gives ~106k events, ~48 MB).

Measured (same bytes, same chunk boundaries, one process, timings are wall-clock minima):

(a) panoramisk: `AMIProtocol.data_received` on a bare protocol whose factory's `dispatch` only
    counts (panoramisk parses, then calls `factory.dispatch(message)` per event; a real Manager
    would also match fnmatch patterns and start a task per coroutine handler, not counted here).
(b) ours: the AmiClient's own protocol object (`_AmiProtocol.data_received` -> AmiFramer ->
    inbox) and the client's sequential consumer task awaiting `on_message` per event. The
    protocol object is driven directly (no socket); the loop runs the consumer after every
    READ_BUFFER (32 KiB) fed, the most the client's BufferedProtocol reads per loop callback.
(c) TCP replay: a server in a child process sends the same stream over loopback to a started
    AmiClient (login + resync first); a 1 ms ticker task in the client's loop records the
    longest event-loop stall (wall clock, so it includes preemption by other processes) and
    the most CPU the loop used between two ticks (the part our code is responsible for).

(d) full path (`--full-path`): the same protocol object feeding the real EventPipeline
    (typed events -> CallTracker + AgentStateTracker -> notifiers on an in-process bus ->
    call-log writer upserting into a migrated SQLite file, or `--database-url`), timed until
    every event is applied AND every call record is persisted (`pipeline.drain()`), as a ratio
    to (a), panoramisk's bare parse rate, by CPU time of the whole process (goal >= 1.0x).

`--loop` (default both): (b), (c) and (d) run on asyncio's default event loop, on uvloop, or on
each in turn within every round. (a) and the framer alone involve no event loop at all: they
are plain calls of `data_received` / `feed`, so their figure is the same whichever loop is
chosen (panoramisk's own loop costs - a task per handler, StreamReader-free transport reads -
are not in (a)).

`full_path_handler`: an async callable taking an AmiMessage can also replace the no-op consumer
in (b) and (c) through `run()` / `replay_tcp()`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from panoramisk.ami_protocol import AMIProtocol

from callcenter.asterisk.ami import READ_BUFFER, AmiClient
from callcenter.asterisk.events import SUBSCRIBED_EVENTS, is_tracked_variable
from callcenter.asterisk.framing import AmiFramer
from callcenter.asterisk.message import AmiMessage

# the copy of shared/ beside this checkout (as CI lays it out), else the workstation's
RAW = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[2] / "shared/asterisk/ami_transcripts/raw",
            Path("/work/shared/asterisk/ami_transcripts/raw"),
        )
        if p.is_dir()
    ),
    Path("/work/shared/asterisk/ami_transcripts/raw"),
)
SOURCES = ("04_inbound_ivr_queue_agent_call.ast.raw", "05_queue_abandon.ast.raw")
NAMES = ["张三", "李四", "王小明", "John Smith", "欧阳娜娜", "Marie Curie", "陈", "Ma"]

FullPathHandler = Callable[[AmiMessage], Awaitable[None]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")
PIPELINE_OPTIONS: dict[str, Any] = {}


# values that differ between calls in real traffic (the transcripts repeat them verbatim)
_PER_CALL = re.compile(
    rb"\r\n(CommandId|BridgeUniqueid|StartTime|AnswerTime|EndTime|Duration|BillableSeconds|"
    rb"HoldTime|TalkTime|RingTime|DurationMs|Uptime|LastReload|Wait|CallsTaken|LastCall): "
    rb"([^\r]*)"
)
_EVENT_HEAD = re.compile(rb"(Event: [^\r]*\r\nPrivilege: [^\r]*\r\n)")


def build_stream(calls: int, *, timestamps: bool = True) -> tuple[bytes, int]:
    """The 04+05 events repeated `calls` times; (bytes, events).

    Per call: fresh uniqueids, channel ids, bridge ids, command ids, CDR times and durations,
    and a caller name (Chinese or Latin). With `timestamps` every event also carries a unique
    `Timestamp:` line (manager.conf timestampevents=yes), so about one line in eight is new.
    """
    template = b"".join((RAW / name).read_bytes() for name in SOURCES)
    per_call = template.count(b"\r\n\r\n")
    parts = []
    tick = 0

    def stamp(m: re.Match[bytes]) -> bytes:
        nonlocal tick
        tick += 1
        return m.group(1) + b"Timestamp: %d.%06d\r\n" % (1715681702 + tick // 1000, tick % 1000)

    for i in range(calls):
        name = NAMES[i % len(NAMES)].encode()
        part = (
            template.replace(b"17156817", b"18%06d" % (i % 1_000_000))
            .replace(b"17156820", b"19%06d" % (i % 1_000_000))
            .replace(b"CallerIDName: John Smith", b"CallerIDName: " + name)
            .replace(b"CallerIDName: Ma\r", b"CallerIDName: " + name + b"\r")
            .replace(b"-0000000", b"-%07x" % (i % 0xFFFFFFF))
        )
        suffix = b"%d" % i
        part = _PER_CALL.sub(rb"\r\n\g<1>: \g<2>" + suffix, part)
        if timestamps:
            part = _EVENT_HEAD.sub(stamp, part)
        parts.append(part)
    return b"".join(parts), per_call * calls


def loop_factory(loop: str) -> LoopFactory | None:
    """None = asyncio's default event loop."""
    if loop == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def on_loop(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion on a fresh event loop of the named kind."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class _CountingFactory:
    """The cheapest `factory` panoramisk's protocol can dispatch to."""

    def __init__(self) -> None:
        self.events = 0

    def dispatch(self, message: Any) -> None:
        self.events += 1


def bench_panoramisk(chunks: list[bytes]) -> tuple[float, int]:
    proto = AMIProtocol()
    proto.connection_made(_NullTransport())
    factory = _CountingFactory()
    proto.factory = factory
    proto.encoding = "utf8"
    t0 = time.process_time()
    for chunk in chunks:
        proto.data_received(chunk)
    return time.process_time() - t0, factory.events


class _NullTransport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None


async def bench_ours(
    chunks: list[bytes], expected: int, full_path_handler: FullPathHandler | None = None
) -> tuple[float, int]:
    count = 0
    done = asyncio.Event()

    async def on_message(msg: AmiMessage) -> None:
        nonlocal count
        if full_path_handler is not None:
            await full_path_handler(msg)
        count += 1
        if count == expected:
            done.set()

    client = AmiClient(
        host="127.0.0.1",
        port=1,
        username="bench",
        secret="bench",
        on_message=on_message,
        max_queued=10_000_000,
    )
    proto = client._new_protocol()  # the exact object a live connection uses
    proto.connection_made(_NullTransport())
    consumer = asyncio.create_task(client._consume())
    t0 = time.process_time()
    fed = 0
    for chunk in chunks:
        proto.data_received(chunk)
        fed += len(chunk)
        if fed >= READ_BUFFER:
            fed = 0
            await asyncio.sleep(0)
    await done.wait()
    elapsed = time.process_time() - t0
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    return elapsed, client.stats().events_delivered


def bench_framer_only(chunks: list[bytes]) -> tuple[float, int]:
    framer = AmiFramer()
    n = 0
    t0 = time.process_time()
    for chunk in chunks:
        n += len(framer.feed(chunk))
    return time.process_time() - t0, n


# -- TCP replay ------------------------------------------------------------------------------------


def _serve(data: bytes, write_size: int, conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(_serve_async(data, write_size, conn))


async def _serve_async(
    data: bytes, write_size: int, conn: multiprocessing.connection.Connection
) -> None:
    done = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = AmiFramer()
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        lists_done = 0
        while lists_done < 2:
            chunk = await reader.read(65536)
            if not chunk:
                return
            for msg in framer.feed(chunk):
                aid = msg.action_id
                action = msg.get("Action")
                if action == "Login":
                    writer.write(_reply(aid, "Authentication accepted"))
                elif action in ("CoreShowChannels", "QueueStatus"):
                    lists_done += 1
                    writer.write(_reply(aid, "will follow", ("EventList", "start")))
                    writer.write(
                        f"Event: {action}Complete\r\nActionID: {aid}\r\nEventList: Complete\r\n"
                        "ListItems: 0\r\n\r\n".encode()
                    )
                else:
                    writer.write(_reply(aid, ""))
        t0 = time.perf_counter()
        view = memoryview(data)
        for i in range(0, len(data), write_size):
            writer.write(view[i : i + write_size])
            await writer.drain()
        conn.send(("sent", time.perf_counter() - t0))
        while await reader.read(65536):  # answer nothing more; wait for the client to close
            pass
        done.set()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    conn.send(server.sockets[0].getsockname()[1])
    await done.wait()
    server.close()


def _reply(aid: str, message: str, *extra: tuple[str, str]) -> bytes:
    lines = ["Response: Success", f"ActionID: {aid}", *(f"{k}: {v}" for k, v in extra)]
    lines.append(f"Message: {message}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class ReplayResult:
    events: int
    seconds: float
    max_stall_ms: float
    p99_stall_ms: float
    max_busy_ms: float
    frame_errors: int


async def replay_tcp(
    data: bytes,
    expected_events: int,
    *,
    write_size: int = 4096,
    full_path_handler: FullPathHandler | None = None,
) -> ReplayResult:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(data, write_size, child), daemon=True)
    proc.start()
    port = parent.recv()
    count = 0
    finished = asyncio.Event()

    async def on_message(msg: AmiMessage) -> None:
        nonlocal count
        count += 1
        if count >= expected_events:
            finished.set()

    async def full(msg: AmiMessage) -> None:
        assert full_path_handler is not None
        await full_path_handler(msg)
        await on_message(msg)

    client = AmiClient(
        host="127.0.0.1",
        port=port,
        username="bench",
        secret="bench",
        on_message=on_message if full_path_handler is None else full,
        ping_interval=60,
    )
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    busy: list[float] = []
    stop = False

    async def ticker() -> None:
        while not stop:
            t, c = loop.time(), time.thread_time()
            await asyncio.sleep(0.001)
            stalls.append(loop.time() - t - 0.001)
            busy.append(time.thread_time() - c)  # CPU our loop used between two ticks

    await client.start()
    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    await asyncio.wait_for(finished.wait(), 600)
    elapsed = time.perf_counter() - t0
    stop = True
    await tick
    stats = client.stats()
    await client.close()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    stalls.sort()
    return ReplayResult(
        events=count,
        seconds=elapsed,
        max_stall_ms=stalls[-1] * 1000 if stalls else 0.0,
        p99_stall_ms=stalls[int(len(stalls) * 0.99)] * 1000 if stalls else 0.0,
        max_busy_ms=max(busy, default=0.0) * 1000,
        frame_errors=stats.frame_errors,
    )


def run(
    *,
    calls: int = 1400,
    chunk_sizes: tuple[int, ...] = (1001, 4096),
    rounds: int = 3,
    loops: tuple[str, ...] = ("asyncio",),
    full_path_handler: FullPathHandler | None = None,
) -> None:
    """(a), (b) on each of `loops` and the framer alone, alternating within every round; then
    the TCP replay (c) on each loop."""
    data, events = build_stream(calls)
    print(f"stream: {events} events, {len(data) / 1e6:.1f} MB, {calls} calls (04+05 repeated)")
    print(f"python {sys.version.split()[0]}, gc enabled, best of {rounds} rounds (CPU time)\n")
    for size in chunk_sizes:
        chunks = chunked(data, size)
        pano: list[float] = []
        frm: list[float] = []
        ours: dict[str, list[float]] = {lp: [] for lp in loops}
        for r in range(rounds):
            gc.collect()
            t, n = bench_panoramisk(chunks)
            assert n == events, (n, events)
            pano.append(t)
            for lp in loops if r % 2 == 0 else tuple(reversed(loops)):
                gc.collect()
                t, n = on_loop(lp, bench_ours(chunks, events, full_path_handler))
                assert n == events, (n, events)
                ours[lp].append(t)
            gc.collect()
            t, n = bench_framer_only(chunks)
            assert n == events, (n, events)
            frm.append(t)
        p, f = min(pano), min(frm)
        print(f"chunk {size:>5} B: (a) panoramisk 1.4 AMIProtocol  {events / p:>10,.0f} ev/s")
        label = "full_path_handler" if full_path_handler else "no-op on_message"
        for lp in loops:
            o = min(ours[lp])
            print(
                f"              (b) AmiClient path ({label}), {lp:<7} {events / o:>10,.0f} ev/s"
                f"  (b)/(a) = {p / o:.2f}x (median of rounds "
                f"{statistics.median(a / b for a, b in zip(pano, ours[lp], strict=True)):.2f}x)"
            )
        print(f"                  AmiFramer.feed alone        {events / f:>10,.0f} ev/s")
        print(f"              framer alone / (a) = {p / f:.2f}x\n")
    print("TCP replay (loopback, server in a child process, 4096 B writes, wall clock):")
    for _ in range(rounds):
        for lp in loops:
            res = on_loop(lp, replay_tcp(data, events, full_path_handler=full_path_handler))
            print(
                f"  {lp:<7} {res.events:,} events in {res.seconds:.2f}s = "
                f"{res.events / res.seconds:,.0f} ev/s; loop stall max {res.max_stall_ms:.1f} ms "
                f"(p99 {res.p99_stall_ms:.2f}); max loop CPU between ticks "
                f"{res.max_busy_ms:.1f} ms; frame errors {res.frame_errors}"
            )


# -- full path: events -> trackers -> bus -> persisted call log -----------------------------------


@dataclass(frozen=True)
class FullPathResult:
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (every thread: the database driver's too)
    events: int
    calls_saved: int
    save_failures: int
    rows: int


async def bench_full_path(chunks: list[bytes], expected: int, db_url: str) -> FullPathResult:
    from datetime import UTC, datetime

    from sqlalchemy import func, select, text

    from callcenter.agents.notifier import AgentNotifier
    from callcenter.agents.service import AgentStateTracker
    from callcenter.bus.memory import MemoryBus
    from callcenter.calls.notifier import CallNotifier
    from callcenter.calls.repository import CallRepository
    from callcenter.calls.service import CallTracker
    from callcenter.db.engine import create_engine, create_session_factory
    from callcenter.db.migrate import upgrade_database
    from callcenter.db.models import CallRow
    from callcenter.pipeline import EventPipeline, cancel_and_wait

    await upgrade_database(db_url)
    engine = create_engine(db_url)
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(text("DELETE FROM calls"))
    bus = MemoryBus()
    pipeline = EventPipeline(
        calls=CallTracker(),
        agents=AgentStateTracker(),
        call_publisher=CallNotifier(bus=bus),
        agent_publisher=AgentNotifier(bus=bus),
        call_log=CallRepository(session_factory=sessions),
        clock=lambda: datetime.now(UTC),
        max_pending=10_000_000,
        **PIPELINE_OPTIONS,
    )
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    client = AmiClient(  # wired as callcenter.app wires it
        host="127.0.0.1",
        port=1,
        username="bench",
        secret="bench",
        on_message=pipeline.feed,
        on_messages=pipeline.feed_many,
        only_events=SUBSCRIBED_EVENTS,
        only_variables=is_tracked_variable,
        max_queued=10_000_000,
    )
    proto = client._new_protocol()
    proto.connection_made(_NullTransport())
    consumer = asyncio.create_task(client._consume())
    async with bus.subscribe("calls", "agents", "queues"):  # a live subscriber, like the hub
        gc.collect()
        gc.freeze()  # as `callcenter serve` does once started
        t0, c0 = time.perf_counter(), time.process_time()
        fed = 0
        for chunk in chunks:
            proto.data_received(chunk)
            fed += len(chunk)
            if fed >= READ_BUFFER:
                fed = 0
                await asyncio.sleep(0)
        # polled, so that the measured path has no per-event bench wrapper
        while (s := client.stats()).events_delivered + s.events_skipped < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        await pipeline.drain()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        gc.unfreeze()
    await cancel_and_wait(consumer, *tasks)
    async with sessions() as session:
        rows = (await session.execute(select(func.count()).select_from(CallRow))).scalar_one()
    await engine.dispose()
    return FullPathResult(
        elapsed,
        cpu,
        pipeline.stats.events + pipeline.stats.ignored + client.stats().events_skipped,
        pipeline.stats.saved,
        pipeline.stats.save_failures,
        rows,
    )


def run_full_path(
    *,
    calls: int,
    chunk_size: int,
    rounds: int,
    db_url: str | None,
    loops: tuple[str, ...] = ("asyncio",),
) -> None:
    """Per round: (a) panoramisk's bare parse, then (d) on each of `loops` (order alternating
    between rounds); rates by CPU time."""
    import tempfile

    data, events = build_stream(calls)
    chunks = chunked(data, chunk_size)
    print(f"stream: {events} events, {len(data) / 1e6:.1f} MB, {calls} calls; chunk {chunk_size} B")
    print(f"database: {db_url or 'SQLite file (tmp)'}; rates are events / CPU seconds\n")
    ratios: dict[str, list[float]] = {lp: [] for lp in loops}
    cpu: dict[str, list[float]] = {lp: [] for lp in loops}
    pano_cpu: list[float] = []
    for r in range(rounds):
        gc.collect()
        pano, n = bench_panoramisk(chunks)
        assert n == events, (n, events)
        pano_cpu.append(pano)
        print(f"  (a) panoramisk parse {events / pano:>7,.0f} ev/s ({pano:.2f} s CPU)")
        for lp in loops if r % 2 == 0 else tuple(reversed(loops)):
            with tempfile.TemporaryDirectory() as tmp:
                url = db_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
                gc.collect()
                res = on_loop(lp, bench_full_path(chunks, events, url))
            assert res.events == events and res.save_failures == 0, res
            ratios[lp].append(pano / res.cpu_seconds)
            cpu[lp].append(res.cpu_seconds)
            print(
                f"      (d) full path on {lp:<7} {events / res.cpu_seconds:>7,.0f} ev/s "
                f"({res.cpu_seconds:.2f} s CPU, {res.cpu_seconds / events * 1e6:.1f} us/event) "
                f"= {pano / res.cpu_seconds:.2f}x | wall {events / res.seconds:,.0f} ev/s "
                f"({res.seconds:.2f} s) | {res.calls_saved} saves -> {res.rows} call rows"
            )
    print()
    for lp in loops:
        print(
            f"(d) on {lp} / (a) by CPU time: per round best {max(ratios[lp]):.2f}x, "
            f"median {statistics.median(ratios[lp]):.2f}x; best of rounds (as (b)) "
            f"{min(pano_cpu) / min(cpu[lp]):.2f}x (goal >= 1.0x)"
        )
    if len(loops) == 2:
        a, b = loops
        gain = statistics.median(x / y for x, y in zip(cpu[a], cpu[b], strict=True))
        print(f"(d) CPU {a} / {b}: median {gain:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1400)
    parser.add_argument("--chunks", default="1001,4096")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--full-path", action="store_true", help="measure (d) only")
    parser.add_argument("--database-url", default=None, help="(d) against this database")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="event loop of (b), (c), (d); both = each in turn, every round",
    )
    args = parser.parse_args()
    sizes = tuple(int(x) for x in args.chunks.split(","))
    loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    if args.full_path:
        run_full_path(
            calls=args.calls,
            chunk_size=sizes[-1],
            rounds=args.rounds,
            db_url=args.database_url,
            loops=loops,
        )
        return
    run(calls=args.calls, chunk_sizes=sizes, rounds=args.rounds, loops=loops)


if __name__ == "__main__":
    main()
