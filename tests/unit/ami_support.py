"""Helpers shared by the unit tests of the AMI event decoders, trackers and notifiers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from shared_asterisk import AMI_RAW

from callcenter.asterisk.framing import AmiFramer
from callcenter.asterisk.message import AmiMessage
from callcenter.bus.base import Payload

RAW = AMI_RAW
requires_raw = pytest.mark.skipif(not RAW.is_dir(), reason="AMI transcripts not available")


def load_raw(name: str) -> list[AmiMessage]:
    """The messages of a byte-exact Asterisk->app stream, framed as the AMI client frames them."""
    return AmiFramer().feed((RAW / name).read_bytes())


class RecordingBus:
    """Collects what is published; the Bus protocol's subscribe is not needed here."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Payload]] = []

    async def publish(self, channel: str, payload: Payload) -> None:
        json.dumps(payload)  # what a real bus would do: it must be JSON-serialisable
        self.published.append((channel, payload))

    def subscribe(
        self, *channels: str
    ) -> AbstractAsyncContextManager[AsyncIterator[tuple[str, Payload]]]:
        raise NotImplementedError

    async def close(self) -> None:
        return None
