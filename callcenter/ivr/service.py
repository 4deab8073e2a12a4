"""FlowRegistry: the loaded flows and calendar of a directory, reloaded when files change.

Reload strategy: a background task (``start()``/``stop()``, or ``run()`` in a task of your own)
polls the directory every ``poll_interval`` seconds and compares each file's (mtime, size).
``refresh()`` does one such pass and may also be called directly. A file that fails validation
never replaces the last good version of its flow (or of the calendar); its errors are kept in
``errors`` and logged. A deleted file removes its flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from callcenter.ivr.calendar import BusinessCalendar, always_open
from callcenter.ivr.loader import (
    CALENDAR_FILE,
    FlowError,
    FlowLoadError,
    duplicate_flow_name,
    flow_files,
    load_calendar,
    load_flow,
)
from callcenter.ivr.model import Flow

log = logging.getLogger(__name__)

_Stamp = tuple[int, int]


class FlowRegistry:
    def __init__(
        self, *, directory: Path, poll_interval: float = 2.0, fallback_timezone: str = "UTC"
    ) -> None:
        self._dir = directory
        self._poll_interval = poll_interval
        self._flows_by_file: dict[Path, Flow] = {}
        self._flows_by_name: dict[str, Flow] = {}  # the same flows, for get() on every call
        self._stamps: dict[Path, _Stamp] = {}
        self._errors: dict[Path, list[FlowError]] = {}
        self._calendar: BusinessCalendar = always_open(fallback_timezone)
        self._calendar_loaded = False
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def get(self, name: str) -> Flow | None:
        return self._flows_by_name.get(name)

    def names(self) -> list[str]:
        return sorted(f.name for f in self._flows_by_file.values())

    @property
    def calendar(self) -> BusinessCalendar:
        """The last good calendar (open around the clock when there has never been one)."""
        return self._calendar

    @property
    def errors(self) -> list[FlowError]:
        """Errors of the files whose latest version failed validation."""
        return [e for errs in self._errors.values() for e in errs]

    def refresh(self) -> list[FlowError]:
        """Reload changed files; returns the errors of the files (re)loaded in this pass."""
        new_errors: list[FlowError] = []
        present: set[Path] = set()
        files = flow_files(self._dir) if self._dir.is_dir() else []
        cal_path = self._dir / CALENDAR_FILE
        if cal_path.is_file():
            files = [*files, cal_path]
        for path in files:
            present.add(path)
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            if self._stamps.get(path) == stamp:
                continue
            self._stamps[path] = stamp
            errs = self._load_one(path, is_calendar=path == cal_path)
            new_errors.extend(errs)
        for path in list(self._stamps):
            if path not in present:
                self._stamps.pop(path)
                self._errors.pop(path, None)
                if self._forget(path):
                    log.warning("flow file %s was removed; its flow is no longer served", path)
        return new_errors

    def _load_one(self, path: Path, *, is_calendar: bool) -> list[FlowError]:
        try:
            if is_calendar:
                self._calendar = load_calendar(path)
                self._calendar_loaded = True
            else:
                flow = load_flow(path)
                for other_path, other in self._flows_by_file.items():
                    if other_path != path and other.name == flow.name:
                        raise FlowLoadError([duplicate_flow_name(path, flow.name, other_path)])
                self._forget(path)  # the file may now name its flow differently
                self._flows_by_file[path] = flow
                self._flows_by_name[flow.name] = flow
        except FlowLoadError as exc:
            self._errors[path] = exc.errors
            kept = "keeping the last good version" if self._has_good(path, is_calendar) else ""
            for err in exc.errors:
                log.error("invalid %s: %s %s", "calendar" if is_calendar else "flow", err, kept)
            return exc.errors
        self._errors.pop(path, None)
        self.reloads += 1
        log.info("loaded %s %s", "calendar" if is_calendar else "flow", path)
        return []

    def _forget(self, path: Path) -> bool:
        """Drop the flow loaded from ``path``; False if there was none."""
        flow = self._flows_by_file.pop(path, None)
        if flow is None:
            return False
        del self._flows_by_name[flow.name]
        return True

    def _has_good(self, path: Path, is_calendar: bool) -> bool:
        return self._calendar_loaded if is_calendar else path in self._flows_by_file

    async def run(self) -> None:
        """Poll for changes forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                self.refresh()
            except Exception:
                log.exception("flow reload failed")

    def start(self) -> None:
        """Load now and start the background poller."""
        self.refresh()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="flow-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
