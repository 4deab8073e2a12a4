"""Ticket events on the bus (channel `tickets`) and the periodic deadline-breach checker.

Payloads (JSON):
  {"type": "booking.created" | "booking.updated", "booking": {...}}
  {"type": "complaint.created" | "complaint.updated", "action": str, "complaint": {...}}
  {"type": "complaint.breached", "kind": "first_response" | "resolution", "complaint": {...}}
The live page's hub forwards the channel to supervisors; a breach is published once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final, Protocol

from callcenter.bus.base import Bus
from callcenter.db.availability import is_database_down
from callcenter.tickets.model import Booking, Complaint
from callcenter.tickets.repository import Breach

__all__ = [
    "TICKETS",
    "BreachChecker",
    "BreachSource",
    "TicketNotifier",
    "booking_payload",
    "complaint_payload",
]

log = logging.getLogger(__name__)

TICKETS: Final = "tickets"


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def booking_payload(booking: Booking) -> dict[str, Any]:
    return _plain(asdict(booking))


def complaint_payload(complaint: Complaint) -> dict[str, Any]:
    return _plain(asdict(complaint))


class TicketNotifier:
    """Publishes ticket changes; never raises (the bus drops when its backend is down)."""

    def __init__(self, *, bus: Bus, channel: str = TICKETS) -> None:
        self._bus = bus
        self._channel = channel

    async def booking(self, booking: Booking, *, created: bool = False) -> None:
        kind = "booking.created" if created else "booking.updated"
        await self._publish({"type": kind, "booking": booking_payload(booking)})

    async def complaint(self, complaint: Complaint, *, action: str) -> None:
        kind = "complaint.created" if action == "create" else "complaint.updated"
        await self._publish(
            {"type": kind, "action": action, "complaint": complaint_payload(complaint)}
        )

    async def breach(self, breach: Breach) -> None:
        await self._publish(
            {
                "type": "complaint.breached",
                "kind": breach.kind,
                "complaint": complaint_payload(breach.complaint),
            }
        )

    async def _publish(self, payload: dict[str, Any]) -> None:
        try:
            await self._bus.publish(self._channel, payload)
        except Exception:
            log.exception("tickets: publishing %s failed", payload.get("type"))


class BreachSource(Protocol):
    async def record_breaches(self, *, limit: int = 500) -> list[Breach]: ...


class BreachChecker:
    """Finds missed deadlines every `interval` seconds and tells the supervisors once each.
    The stamp in the database makes it idempotent across restarts and several app instances."""

    def __init__(
        self, *, source: BreachSource, notifier: TicketNotifier, interval: float = 60.0
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._source = source
        self._notifier = notifier
        self._interval = interval

    async def check_once(self) -> list[Breach]:
        """Stamp and publish the breaches found now (all of them, in batches)."""
        found: list[Breach] = []
        while True:
            batch = await self._source.record_breaches()
            for breach in batch:
                await self._notifier.breach(breach)
            found.extend(batch)
            if not batch:
                return found

    async def run(self) -> None:
        while True:
            try:
                breaches = await self.check_once()
                if breaches:
                    log.info("tickets: %d deadline breach(es) notified", len(breaches))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_down(exc):
                    log.warning("tickets: database unavailable; breach check retried next round")
                else:
                    log.exception("tickets: breach check failed; retrying next round")
            await asyncio.sleep(self._interval)
