"""One AMI message (action, response or event), decoded from a whole frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from callcenter.fastinit import store_by_slots

Kind = Literal["event", "response", "action", "unknown"]


@store_by_slots  # one per AMI frame
@dataclass(frozen=True, slots=True)
class AmiMessage:
    """Headers in wire order. Names compare case-insensitively; repeated headers are kept."""

    headers: tuple[tuple[str, str], ...]

    @property
    def kind(self) -> Kind:
        if not self.headers:
            return "unknown"
        first = self.headers[0][0]
        if first == "Event":  # Asterisk's spelling: skip lower() on the hot path
            return "event"
        first = first.lower()
        if first == "event":
            return "event"
        if first == "response":
            return "response"
        if first == "action":
            return "action"
        return "unknown"

    @property
    def name(self) -> str:
        """The value of the first header (the event name, the response status or the action)."""
        return self.headers[0][1] if self.headers else ""

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def get(self, key: str, default: str = "") -> str:
        # Hot path: compare lengths first so most headers are rejected without lower().
        n = len(key)
        k = key.lower()
        for name, value in self.headers:
            if len(name) == n and (name == key or name.lower() == k):
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        n = len(key)
        k = key.lower()
        return [value for name, value in self.headers if len(name) == n and name.lower() == k]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        k = key.lower()
        return any(name.lower() == k for name, _ in self.headers)

    def to_bytes(self) -> bytes:
        """Serialise as Asterisk does: `Name: value` lines ending CRLF, then an empty line."""
        out = "".join(f"{name}: {value}\r\n" for name, value in self.headers) + "\r\n"
        return out.encode("utf-8")
