"""FlowRegistry: load, reload on change, keep the last good flow on a broken edit."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from callcenter.ivr.model import QueueNode
from callcenter.ivr.service import FlowRegistry

FLOW = "start: q\nnodes:\n  q: {type: queue, queue: %s}\n"


def touch_later(p: Path, text: str) -> None:
    p.write_text(text)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def queue_of(reg: FlowRegistry, name: str) -> str:
    flow = reg.get(name)
    assert flow is not None
    node = flow.nodes["q"]
    assert isinstance(node, QueueNode)
    return node.queue


def test_load_reload_and_keep_last_good(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW % "one")
    reg = FlowRegistry(directory=tmp_path)
    assert reg.refresh() == []
    assert reg.names() == ["a"] and queue_of(reg, "a") == "one"

    touch_later(tmp_path / "a.yaml", FLOW % "two")
    assert reg.refresh() == []
    assert queue_of(reg, "a") == "two"

    touch_later(tmp_path / "a.yaml", "start: q\nnodes:\n  q: {type: nope}\n")
    errors = reg.refresh()
    assert [e.code for e in errors] == ["unknown_type"]
    assert queue_of(reg, "a") == "two"  # the broken edit did not replace it
    assert reg.errors == errors

    touch_later(tmp_path / "a.yaml", FLOW % "three")
    reg.refresh()
    assert queue_of(reg, "a") == "three" and reg.errors == []

    (tmp_path / "a.yaml").unlink()
    reg.refresh()
    assert reg.get("a") is None


def test_unchanged_files_are_not_reparsed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW % "one")
    reg = FlowRegistry(directory=tmp_path)
    reg.refresh()
    reg.refresh()
    assert reg.reloads == 1


def test_broken_new_file_is_not_served(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("start: x\n")
    reg = FlowRegistry(directory=tmp_path)
    assert reg.refresh()
    assert reg.get("b") is None


def test_duplicate_flow_name_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW % "one")
    (tmp_path / "b.yaml").write_text("name: a\n" + FLOW % "two")
    reg = FlowRegistry(directory=tmp_path)
    errors = reg.refresh()
    assert [e.code for e in errors] == ["duplicate_key"]
    assert queue_of(reg, "a") == "one"


def test_a_file_that_renames_its_flow_serves_only_the_new_name(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW % "one")
    reg = FlowRegistry(directory=tmp_path)
    reg.refresh()
    touch_later(tmp_path / "a.yaml", "name: renamed\n" + FLOW % "two")
    assert reg.refresh() == []
    assert reg.get("a") is None and queue_of(reg, "renamed") == "two"
    assert reg.names() == ["renamed"]
    # the old name is free again for another file
    (tmp_path / "b.yaml").write_text("name: a\n" + FLOW % "three")
    assert reg.refresh() == []
    assert queue_of(reg, "a") == "three" and queue_of(reg, "renamed") == "two"
    (tmp_path / "a.yaml").unlink()
    reg.refresh()
    assert reg.get("renamed") is None and reg.names() == ["a"]


def test_calendar_reload_keeps_last_good(tmp_path: Path) -> None:
    cal = tmp_path / "calendar.yaml"
    cal.write_text("timezone: UTC\nweekly:\n  mon-sun: ['09:00-17:00']\n")
    reg = FlowRegistry(directory=tmp_path)
    reg.refresh()
    noon = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert reg.calendar.is_open(noon)
    touch_later(cal, "timezone: Bad/Zone\n")
    assert [e.code for e in reg.refresh()] == ["bad_timezone"]
    assert reg.calendar.is_open(noon)
    assert reg.get("calendar") is None  # the calendar is not a flow


async def test_background_poll_picks_up_changes(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FLOW % "one")
    reg = FlowRegistry(directory=tmp_path, poll_interval=0.01)
    reg.start()
    try:
        touch_later(tmp_path / "a.yaml", FLOW % "two")
        for _ in range(500):
            if queue_of(reg, "a") == "two":
                break
            await asyncio.sleep(0.01)
        assert queue_of(reg, "a") == "two"
    finally:
        await reg.stop()
