"""Choose the bus: Redis when a URL is configured, otherwise in-process."""

from __future__ import annotations

from callcenter.bus.base import Bus
from callcenter.bus.keys import DEFAULT_PREFIX
from callcenter.bus.memory import MemoryBus
from callcenter.bus.redis import RedisBus

__all__ = ["make_bus"]


def make_bus(redis_url: str | None, *, prefix: str = DEFAULT_PREFIX) -> Bus:
    """A RedisBus for `redis_url` ("redis://host:port/db", "rediss://...", "unix://..."),
    or a MemoryBus when it is None or empty. Nothing connects until first use."""
    if not redis_url:
        return MemoryBus()
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("redis URL must start with redis://, rediss:// or unix://")
    return RedisBus(url=redis_url, prefix=prefix)
