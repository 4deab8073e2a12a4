"""The one check that a datetime carries its time zone (a naive one would be a guess)."""

from __future__ import annotations

from datetime import datetime


def require_aware(name: str, value: datetime) -> datetime:
    """`value` unchanged if it is an aware datetime; TypeError / ValueError naming `name`."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be an aware datetime, got a naive one ({value.isoformat()}): "
            "give it a time zone"
        )
    return value
