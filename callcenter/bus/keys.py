"""Every bus channel name and Redis key the project uses, in one place.

Channel names are the logical names publishers and subscribers use (`bus.publish(CALLS, ...)`);
the Redis bus prefixes them (`callcenter:calls`) so several installations or test runs can share
one Redis server. Redis pub/sub channels are global to the server (not per database index), so
the prefix is what keeps them apart.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AGENTS",
    "ALL_CHANNELS",
    "CALLBACKS",
    "CALLS",
    "DEFAULT_PREFIX",
    "IVR_STEPS",
    "QUEUES",
    "SYSTEM",
    "key",
    "strip_prefix",
]

CALLS: Final = "calls"  # call lifecycle: new, ivr, queued, answered, transferred, ended
AGENTS: Final = "agents"  # agent/member state: paused, ringing, in call, logged off
QUEUES: Final = "queues"  # queue statistics: waiting callers, longest wait, service level
CALLBACKS: Final = "callbacks"  # callback requests created or handled
SYSTEM: Final = "system"  # AMI connection up/down, reconcile runs
# a call's IVR steps written to the call log (uniqueid, digits): for the screen-pops; not in
# ALL_CHANNELS (not for browsers)
IVR_STEPS: Final = "ivr_steps"

ALL_CHANNELS: Final = (CALLS, AGENTS, QUEUES, CALLBACKS, SYSTEM)

DEFAULT_PREFIX: Final = "callcenter:"


def key(*parts: str, prefix: str = DEFAULT_PREFIX) -> str:
    """A namespaced Redis key or channel: key("calls") -> "callcenter:calls",
    key("agent", "PJSIP/1001") -> "callcenter:agent:PJSIP/1001"."""
    if not parts or any(not p for p in parts):
        raise ValueError("key parts must be non-empty strings")
    return prefix + ":".join(parts)


def strip_prefix(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The logical channel name of a prefixed Redis channel."""
    return name[len(prefix) :] if name.startswith(prefix) else name
